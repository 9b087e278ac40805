"""Array kernels: batched assembly and banded solves of the per-pixel normal equations.

Arrays only (numpy, cupy or any array-API namespace); no xarray here. Every kernel is
batched over pixels: no Python loop per pixel.
"""

from .banded import (
    ArrayOps,
    assemble_normal_equations,
    banded_cholesky,
    banded_solve,
    predict_pairs,
    selected_inverse,
    solve_pixels,
)
from .pipeline import Options, run_pipeline

__all__ = [
    "ArrayOps",
    "Options",
    "assemble_normal_equations",
    "banded_cholesky",
    "banded_solve",
    "predict_pairs",
    "run_pipeline",
    "selected_inverse",
    "solve_pixels",
]
