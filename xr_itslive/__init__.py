"""xr_itslive: ITS_LIVE image-pair velocity datacubes to regular velocity time series."""

from __future__ import annotations

from . import accessor as _accessor  # noqa: F401  (registers ds.itslive)
from .access import decode_cube, demo_cube_path, open_cube, to_s3_url
from .catalog import CubeEntry, find_cubes, load_catalog, open_cube_at
from .cluster import get_client, scheduler_context
from .errors import (
    ChunkingError,
    ClusterConnectionError,
    DataAccessError,
    EmptySelectionError,
    InvalidParameterError,
    ITSLiveError,
    MissingVariableError,
    NotAnITSLiveCubeError,
    OptionalDependencyError,
    StoreConflictError,
)
from .glaciers import Glacier, GlacierCenterline, GlacierPoint, glacier_mask
from .gp import GaussianProcessFit, gp_fit, gp_fit_series, gp_regress
from .invert import DesignMatrix, design_matrix, invert, predict
from .plot import plot_series
from .store import invert_to_zarr, store_status, write_resumable
from .subset import filter_pairs, point_series
from .synthetic import synthetic_cube

__version__ = "0.1.0"

__all__ = [
    "ChunkingError",
    "ClusterConnectionError",
    "CubeEntry",
    "DataAccessError",
    "DesignMatrix",
    "EmptySelectionError",
    "GaussianProcessFit",
    "Glacier",
    "GlacierCenterline",
    "GlacierPoint",
    "ITSLiveError",
    "InvalidParameterError",
    "MissingVariableError",
    "NotAnITSLiveCubeError",
    "OptionalDependencyError",
    "StoreConflictError",
    "decode_cube",
    "demo_cube_path",
    "design_matrix",
    "filter_pairs",
    "find_cubes",
    "get_client",
    "glacier_mask",
    "gp_fit",
    "gp_fit_series",
    "gp_regress",
    "invert",
    "invert_to_zarr",
    "load_catalog",
    "open_cube",
    "open_cube_at",
    "plot_series",
    "point_series",
    "predict",
    "scheduler_context",
    "store_status",
    "synthetic_cube",
    "to_s3_url",
    "write_resumable",
]
