"""Pixel batches of the array engine, sized to the device's free memory (one batch on the host).

The namespace-generic engine (:mod:`xr_itslive.kernels.banded`) solves all pixels of a batch
at once, pixels on the last axis, and keeps several ``(n_cells * (bandwidth + 1), n_pixels)``
float64 bands plus ``(n_terms, n_pixels)`` scatter temporaries alive. A dask chunk that fits
the host may not fit a GPU, so :func:`solve_pixels_batched` splits the chunk's pixels into
batches that fit the free device memory (CuPy), and solves a host (numpy or other) chunk in
one batch: the chunk size chosen by the user bounds host memory already.

The peak memory per pixel was measured with :mod:`tracemalloc` on the numpy array engine
(5,000 pairs over 8 years, 12-day cells: 244 cells, bandwidth 46, at most 14,336 terms per
kind): 0.86 MB plain, 1.14 MB robust; 0.53 MB with 1,000 pairs. :func:`bytes_per_pixel`
bounds these from above (1.4 MB and 1.5 MB for those two cases) so that a batch leaves
room for CuPy's memory pool to fragment.
"""

from __future__ import annotations

import math
import os
from types import ModuleType
from typing import Any

from ..errors import InvalidParameterError
from .banded import solve_pixels
from .namespace import is_cupy_array
from .pipeline import Options

# ``problem`` below is the inversion's shared problem (xr_itslive.workflows.invert.Problem):
# anything with n_cells, bandwidth, geometry, terms, regularization, term_arrays(xp) and
# geometry_arrays(xp). It is duck-typed so that the kernels never import the workflows.

#: Fraction of the free device memory a batch may use.
DEVICE_MEMORY_FRACTION = 0.5
#: Environment variable that fixes the pixel batch size of the array engine (for benchmarks
#: and for cards shared with other work).
BATCH_ENV = "XR_ITSLIVE_ARRAY_BATCH"


def bytes_per_pixel(problem: Any, options: Options) -> int:
    """An upper bound of the array engine's peak memory per pixel, in bytes.

    ``8 × (6 · band + 4 · terms + 10 · pairs)`` with ``band = n_cells × (bandwidth + 1)``
    entries and ``terms`` the largest scatter-table kind; 3 more bands for the selected
    inverse (uncertainty, automatic λ) and 8 more pair arrays for robust reweighting.
    """
    band = problem.n_cells * (problem.bandwidth + 1)
    starts = [int(v) for v in problem.terms.gram_kind_starts] + [
        int(v) for v in problem.terms.rhs_kind_starts
    ]
    terms = max((b - a for a, b in zip(starts[:-1], starts[1:], strict=True)), default=0)
    n_pairs = problem.geometry.n_pairs
    words = 6 * band + 4 * terms + 10 * n_pairs
    if options.uncertainty or options.auto_lam:
        words += 3 * band
    if options.robust:
        words += 8 * n_pairs
    return 8 * words


def free_device_bytes(sample: Any) -> int | None:
    """Free memory of the device holding ``sample`` (CuPy), counting CuPy's pooled blocks;
    None for host arrays."""
    if not is_cupy_array(sample):
        return None
    import cupy

    with sample.device:
        free, _total = cupy.cuda.runtime.memGetInfo()
        pooled = cupy.get_default_memory_pool().free_bytes()
    return int(free + pooled)


def fixed_batch_size() -> int | None:
    """The pixel batch size fixed by ``$XR_ITSLIVE_ARRAY_BATCH``; None when it is not set.

    Every array engine (the inversion's, the composites') reads it before sizing batches
    from the free device memory.

    Returns
    -------
    int or None

    Raises
    ------
    InvalidParameterError
        The variable is set to anything but a positive integer.
    """
    fixed = os.environ.get(BATCH_ENV)
    if not fixed:
        return None
    try:
        value = int(fixed)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidParameterError(
            f"{BATCH_ENV} must be a positive integer (pixels per batch), got {fixed!r}; "
            f"unset it to size batches from the free device memory"
        )
    return value


def pixel_batch_size(
    problem: Any,
    options: Options,
    free_bytes: int | None,
    fraction: float = DEVICE_MEMORY_FRACTION,
) -> int | None:
    """Pixels per batch that fit ``fraction`` of ``free_bytes``; None for no limit.

    ``$XR_ITSLIVE_ARRAY_BATCH`` (a positive integer), when set, wins.

    Examples
    --------
    >>> from xr_itslive.workflows.invert import build_problem
    >>> from xr_itslive.kernels.pipeline import Options
    >>> from xr_itslive.synthetic import synthetic_cube
    >>> problem = build_problem(synthetic_cube(n_pairs=5000, ny=1, nx=1, years=8), 12.0)
    >>> pixel_batch_size(problem, Options(), free_bytes=80 * 2**30)  # an 80 GiB card
    30477
    """
    fixed = fixed_batch_size()
    if fixed is not None:
        return fixed
    if free_bytes is None:
        return None
    return max(1, math.floor(fraction * free_bytes / bytes_per_pixel(problem, options)))


def solve_pixels_batched(
    xp: ModuleType,
    flat: Any,
    weights: Any,
    problem: Any,
    options: Options,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Solve ``flat`` (n_pixels, n_pairs) with the array engine, in batches of pixels.

    Parameters
    ----------
    xp
        The namespace of ``flat`` (:func:`xr_itslive.kernels.namespace.get_namespace`).
    flat
        Observations, one row per pixel, NaN where missing.
    weights
        None, ``(1, n_pairs)`` (per pair) or ``(n_pixels, n_pairs)``.
    problem, options
        As for :func:`xr_itslive.workflows.invert.solve_block`.
    batch_size
        Pixels per batch; by default :func:`pixel_batch_size` of the free device memory
        (the whole chunk on the host).

    Returns
    -------
    dict
        The outputs of :func:`xr_itslive.kernels.banded.solve_pixels`, pixels first:
        ``solution`` and ``std`` (n_pixels, n_cells), ``n_obs`` and ``lam`` (n_pixels,),
        ``outlier`` (n_pixels, n_pairs).
    """
    n_pix = flat.shape[0]
    if batch_size is None:
        batch_size = pixel_batch_size(problem, options, free_device_bytes(flat))
    batch_size = n_pix if batch_size is None else max(1, min(int(batch_size), n_pix))
    # The design follows the data onto the device once per chunk, not once per batch.
    terms = problem.term_arrays(xp)
    geometry = problem.geometry_arrays(xp)
    regularization = xp.asarray(problem.regularization)
    per_pixel_weights = weights is not None and weights.shape[0] > 1
    parts: dict[str, list[Any]] = {}
    for lo in range(0, n_pix, batch_size):
        hi = min(lo + batch_size, n_pix)
        batch_weights = weights
        if per_pixel_weights:
            batch_weights = weights[lo:hi, ...]
        solved = solve_pixels(
            xp.permute_dims(flat[lo:hi, ...], (1, 0)),
            None if batch_weights is None else xp.permute_dims(batch_weights, (1, 0)),
            terms, geometry, regularization, problem.n_cells, problem.bandwidth, options,
        )  # fmt: skip
        for key, value in solved.items():
            parts.setdefault(key, []).append(
                value if value.ndim == 1 else xp.permute_dims(value, (1, 0))
            )
    return {
        key: values[0] if len(values) == 1 else xp.concat(values, axis=0)
        for key, values in parts.items()
    }
