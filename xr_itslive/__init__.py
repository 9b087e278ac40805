"""xr_itslive: ITS_LIVE image-pair velocity datacubes to regular velocity time series.

The public names, re-exported from the layers (see ``docs/architecture.md``): ``io`` opens
and finds cubes, ``geo`` knows grids, glaciers and pairs, ``workflows`` inverts and writes,
``kernels`` does the arithmetic. Importing the package registers the ``ds.itslive`` accessor.
"""

from __future__ import annotations

from . import accessor as _accessor  # noqa: F401  (registers ds.itslive)
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
    UnsolvedPixelsWarning,
)
from .geo.masks import glacier_mask
from .geo.pairs import filter_pairs
from .geo.subset import point_series
from .io.catalog import CubeEntry, find_cubes, load_catalog
from .io.cube import decode_cube, demo_cube_path
from .io.open import open_composite, open_cube, open_cube_at
from .io.urls import composite_url, to_s3_url
from .plot import plot_composite_map, plot_point_composite, plot_series
from .synthetic import synthetic_cube
from .workflows.cluster import get_client, scheduler_context
from .workflows.composite import composite, composite_mosaic, composite_to_zarr, seasonal
from .workflows.glacier import Glacier, GlacierCenterline, GlacierPoint
from .workflows.gp import GaussianProcessFit, gp_fit, gp_fit_series, gp_regress
from .workflows.invert import DesignMatrix, design_matrix, invert, predict
from .workflows.invert_to_zarr import invert_to_zarr
from .workflows.mosaic import invert_mosaic
from .workflows.speed import speed
from .workflows.store import store_status, write_resumable

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
    "UnsolvedPixelsWarning",
    "composite",
    "composite_mosaic",
    "composite_to_zarr",
    "composite_url",
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
    "invert_mosaic",
    "invert_to_zarr",
    "load_catalog",
    "open_composite",
    "open_cube",
    "open_cube_at",
    "plot_composite_map",
    "plot_point_composite",
    "plot_series",
    "point_series",
    "predict",
    "scheduler_context",
    "seasonal",
    "speed",
    "store_status",
    "synthetic_cube",
    "to_s3_url",
    "write_resumable",
]
