"""Array kernels: batched assembly and banded solves of the per-pixel normal equations.

Arrays only (numpy, cupy or any array-API namespace); no xarray here. Every kernel is
batched over pixels: no Python loop per pixel.
"""

from .banded import (
    assemble_normal_equations,
    banded_cholesky,
    banded_solve,
    solve_pixels,
)

__all__ = ["assemble_normal_equations", "banded_cholesky", "banded_solve", "solve_pixels"]
