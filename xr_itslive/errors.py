"""Exceptions raised by xr_itslive, and the deprecation of renamed parameters.

Every message says what was found, what was expected and how to fix it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


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


class UnsolvedPixelsWarning(RuntimeWarning):
    """Pixels with enough pairs came out NaN: their system is singular at this ``lam``."""


def renamed_parameters(**renames: str | tuple[str, Any]) -> Callable[[F], F]:
    """Keep old keyword spellings working for one release, with a ``DeprecationWarning``.

    Parameters
    ----------
    **renames
        ``old="new"``, or ``old=("new", convert)`` where ``convert(old_value)`` gives the new
        parameter's value (e.g. ``robust=True`` → ``likelihood="student-t"``).

    Returns
    -------
    callable
        A decorator for the function whose parameters were renamed.
    """

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, target in renames.items():
                if old not in kwargs:
                    continue
                new, convert = (target, None) if isinstance(target, str) else target
                value = kwargs.pop(old)
                if new in kwargs:
                    raise InvalidParameterError(
                        f"{func.__name__}() got both {new}= and its old spelling {old}=; "
                        f"pass {new}= only"
                    )
                shown = f"{new}={convert(value)!r}" if convert else f"{new}="
                warnings.warn(
                    f"{func.__name__}({old}=...) is deprecated and will be removed in the next "
                    f"release; pass {shown} instead",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = convert(value) if convert else value
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
