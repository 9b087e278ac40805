"""xr_itslive: ITS_LIVE image-pair velocity datacubes to regular velocity time series."""

from __future__ import annotations

from . import accessor as _accessor  # noqa: F401  (registers ds.itslive)
from .access import decode_cube, open_cube, to_s3_url
from .errors import (
    ChunkingError,
    DataAccessError,
    EmptySelectionError,
    InvalidParameterError,
    ITSLiveError,
    MissingVariableError,
    NotAnITSLiveCubeError,
    OptionalDependencyError,
)

__version__ = "0.1.0"

__all__ = [
    "ChunkingError",
    "DataAccessError",
    "EmptySelectionError",
    "ITSLiveError",
    "InvalidParameterError",
    "MissingVariableError",
    "NotAnITSLiveCubeError",
    "OptionalDependencyError",
    "decode_cube",
    "open_cube",
    "to_s3_url",
]

# --- inversion core (issue 2) ---
from .invert import DesignMatrix, design_matrix, invert, predict  # noqa: E402
from .synthetic import synthetic_cube  # noqa: E402

__all__ += ["DesignMatrix", "design_matrix", "invert", "predict", "synthetic_cube"]
# --- finding data and glaciers (issue 3) ---
from .catalog import CubeEntry, find_cubes, load_catalog, open_cube_at  # noqa: E402
from .glaciers import Glacier, GlacierCenterline, GlacierPoint, glacier_mask  # noqa: E402
from .subset import filter_pairs, point_series  # noqa: E402

__all__ += [
    "CubeEntry", "Glacier", "GlacierCenterline", "GlacierPoint", "filter_pairs", "find_cubes",
    "glacier_mask", "load_catalog", "open_cube_at", "point_series",
]  # fmt: skip
# --- scaling out (issue 4) ---
from .cluster import get_client, scheduler_context  # noqa: E402
from .store import invert_to_zarr, store_status, write_resumable  # noqa: E402

__all__ += ["get_client", "invert_to_zarr", "scheduler_context", "store_status", "write_resumable"]
# --- robust / GP (issue 5) ---
from .gp import GaussianProcessFit, gp_fit, gp_fit_series, gp_regress  # noqa: E402

from .plot import plot_series  # noqa: E402

__all__ += ["GaussianProcessFit", "gp_fit", "gp_fit_series", "gp_regress", "plot_series"]
