"""Exceptions raised by xr_itslive.

Every message says what was found, what was expected and how to fix it.
"""

from __future__ import annotations


class ITSLiveError(Exception):
    """Base class of every error raised by xr_itslive."""


class NotAnITSLiveCubeError(ITSLiveError, ValueError):
    """The dataset lacks variables or dimensions that an ITS_LIVE cube has."""


class MissingVariableError(NotAnITSLiveCubeError, KeyError):
    """A requested variable is not in the dataset."""

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else ""


class ChunkingError(ITSLiveError, ValueError):
    """The dask chunking does not allow the requested operation."""


class InvalidParameterError(ITSLiveError, ValueError):
    """A parameter is outside its valid range."""


class EmptySelectionError(ITSLiveError, ValueError):
    """A selection (time window, bbox, outline...) leaves no data."""


class DataAccessError(ITSLiveError, OSError):
    """A cube, catalog or outline could not be read."""


class OptionalDependencyError(ITSLiveError, ImportError):
    """An optional dependency is needed but not installed."""


class StoreConflictError(ITSLiveError, ValueError):
    """An output store holds another run (other parameters, other data) than the one asked for."""


class ClusterConnectionError(ITSLiveError, OSError):
    """A Dask scheduler could not be reached or started."""
