"""Invert image-pair velocities into regular time series, for every pixel, lazily.

For each pixel and variable, with ``A_p`` the date-span rows of the pixel's valid pairs::

    min_x ||A_p x - y_p||² + ||lam · Δ^d x / step^d||²

The normal matrix is banded and differs between pixels only through which pairs are valid;
:mod:`xr_itslive.kernels` assembles and factors it for a whole chunk of pixels at once.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

import numpy as np
import xarray as xr

from ..crs import cube_crs
from ..errors import (
    ChunkingError,
    EmptySelectionError,
    InvalidParameterError,
    NotAnITSLiveCubeError,
    UnsolvedPixelsWarning,
)
from ..geo import design
from ..geo.masks import glacier_mask
from ..io.cf import read_list_attribute, to_cf
from ..io.format import PAIR_DIM, TIME_DIM, check_dataset, check_pairs, check_variables
from ..kernels import design as kdesign
from ..kernels.banded import predict_pairs
from ..kernels.batching import solve_pixels_batched
from ..kernels.namespace import (
    empty_like_chunk,
    get_namespace,
    is_host_numpy,
    put_rows,
)
from ..kernels.pipeline import Options
from .common import ENGINES as ENGINES  # the CLI's choices, defined once in common
from .common import (
    FLOAT_FILL,
    Engine,
    apply_per_pixel,
    check_aligned,
    choose_engine,
    count_float_fill,
    drop_duplicated_pairs,
    fill_as_nan,
    finite_or_nan,
    resolve_weights,
    robust_kind,
    shared_key,
    unwrap_shared,
    warn_untrusted,
)

#: The inversion's defaults, defined once: invert, design_matrix, the accessor, the CLI and
#: invert_to_zarr read them from here.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {"variables": ("vx", "vy"), "step": 12.0, "lam": 10.0, "derivative": 2, "min_obs": 5}
)


@dataclass(frozen=True)
class Problem:
    """Everything about the inversion that all pixels share."""

    geometry: design.PairGeometry
    regularization: np.ndarray  # upper band for lam = 1, flattened (n_cells * (bandwidth + 1),)
    step: float
    derivative: int

    @property
    def n_cells(self) -> int:
        return self.geometry.grid.n_cells

    @cached_property
    def terms(self) -> kdesign.NormalTerms:
        """Scatter tables of the normal equations (the array engine's assembly)."""
        return kdesign.normal_terms(self.geometry.arrays, self.n_cells, self.bandwidth)

    @property
    def bandwidth(self) -> int:
        return self.geometry.bandwidth

    def term_arrays(self, xp=np) -> tuple:
        t = self.terms
        arrays = (
            t.gram_pair, t.gram_cell, t.gram_coef, t.gram_kind_starts,
            t.rhs_pair, t.rhs_cell, t.rhs_coef, t.rhs_kind_starts,
        )  # fmt: skip
        if xp is np:
            return arrays
        converted = [xp.asarray(a) for a in arrays]
        # kind offsets are used as Python slice bounds
        converted[3] = [int(v) for v in arrays[3]]
        converted[7] = [int(v) for v in arrays[7]]
        return tuple(converted)

    def geometry_arrays(self, xp=np) -> tuple:
        arrays = self.geometry.arrays
        return arrays if xp is np else tuple(xp.asarray(a) for a in arrays)


def check_cube(ds: Any, variables: Sequence[Hashable]) -> None:
    """Raise a clear error when ``ds`` cannot be inverted for ``variables``: the shared
    checks of :mod:`xr_itslive.io.format`, then what the inversion needs in addition.

    Values equal to ITS_LIVE's fill (-32767: int16 data cast to float without decoding) are
    refused here when the variable is in memory (a numpy array: one allocation-free pass);
    a dask-backed variable is not read here (building the graph computes nothing): there
    :func:`solve_block` (and the composite's block function) takes them as missing, with a
    warning that counts them (:func:`~xr_itslive.workflows.common.fill_as_nan`).

    Parameters
    ----------
    ds : xarray.Dataset
        The cube.
    variables : sequence of hashable
        The variables to invert (or composite).

    Raises
    ------
    NotAnITSLiveCubeError
        Not a cube, a variable without ``mid_date``, undecoded integers, or float values
        equal to -32767 in memory.
    InvalidParameterError, MissingVariableError, ChunkingError
        No variables, an unknown one, or ``mid_date`` in several chunks.
    """
    check_dataset(ds)
    check_pairs(ds)
    if len(variables) == 0:
        raise InvalidParameterError("variables is empty; pass e.g. variables=('vx', 'vy')")
    check_variables(
        ds,
        variables,
        "Pass variables=(...) naming variables of the cube, or open an ITS_LIVE cube.",
    )
    for name in variables:
        var = ds[name]
        if PAIR_DIM not in var.dims:
            raise NotAnITSLiveCubeError(
                f"variable {name!r} has dims {var.dims} without 'mid_date'; only per-pair "
                "variables (mid_date, y, x) can be inverted"
            )
        dtype_name = str(getattr(var.dtype, "name", var.dtype)).rsplit(".", 1)[-1]
        if dtype_name.startswith(("int", "uint")):
            # ITS_LIVE stores int16 with missing_value -32767: undecoded, the fill would be
            # inverted as a velocity of -32767 m/yr.
            raise NotAnITSLiveCubeError(
                f"variable {name!r} holds undecoded integers ({var.dtype}): its fill value "
                "(ITS_LIVE's -32767) would be taken as a velocity. Open the cube with "
                "xr_itslive.open_cube (which decodes it), or decode it yourself, e.g. "
                f"ds[{name!r}] = ds[{name!r}].where(ds[{name!r}] != -32767).astype('float32')"
            )
        _refuse_float_fill(name, var)
        chunks = var.chunksizes.get(PAIR_DIM) if var.chunks is not None else None
        if chunks is not None and len(chunks) > 1:
            raise ChunkingError(
                f"variable {name!r} is split into {len(chunks)} chunks along 'mid_date' "
                f"({chunks[:3]}...); the inversion needs every pair of a pixel in one chunk. "
                "Rechunk with ds.chunk({'mid_date': -1}) "
                "(and chunk y/x smaller if memory is tight)."
            )


def _refuse_float_fill(name: Hashable, var: xr.DataArray) -> None:
    """Refuse a variable in memory whose floats hold ITS_LIVE's fill (see :func:`check_cube`)."""
    data = var.data
    if not isinstance(data, np.ndarray) or data.dtype.kind != "f":
        return  # lazy (counted per block when solved) or not floats
    found = count_float_fill(data)
    if found:
        raise NotAnITSLiveCubeError(
            f"variable {name!r} holds {found:,} values equal to {FLOAT_FILL:g}, ITS_LIVE's fill "
            "value (int16 data cast to float without decoding), which would be taken as "
            "velocities of -32767 m/yr. Open the cube with xr_itslive.open_cube (which decodes "
            f"it), or mask them: ds[{name!r}] = ds[{name!r}].where(ds[{name!r}] != -32767)"
        )


#: The largest banded system of one pixel (``cells × (bandwidth + 1)`` doubles) that an
#: inversion may build; the kernels hold a few of them per thread.
MAX_BAND_BYTES = 2**30


def _check_band_size(geometry: design.PairGeometry, step: float) -> None:
    """Refuse, before allocating, a grid whose per-pixel system cannot fit in memory."""
    n_cells, bandwidth = geometry.n_cells, geometry.bandwidth
    size = n_cells * (bandwidth + 1) * 8
    if size <= MAX_BAND_BYTES:
        return
    # cells and bandwidth both scale as 1 / step: the band as 1 / step²
    fits = float(step) * np.sqrt(size / MAX_BAND_BYTES)
    raise InvalidParameterError(
        f"step={step:g} days makes {n_cells:,} cells with a bandwidth of {bandwidth:,} cells "
        f"(the longest pair): each pixel's banded system alone would take "
        f"{size / 2**30:,.1f} GiB (the limit is {MAX_BAND_BYTES / 2**30:g} GiB). Use "
        f"step >= {np.ceil(fits * 10) / 10:g} days (e.g. step=12), or a shorter start..end, or "
        "drop the longest pairs (filter(max_days=...))"
    )


def _check_lam_fits(problem: Problem, lam: float) -> None:
    """Refuse, before any work, a ``lam`` at which even a pixel seeing every pair is singular.

    Such a pixel is the best determined one a cube can have (unit weights, every pair valid);
    when the smoothness term swamps its data beyond float64 precision, every pixel would come
    out NaN. One pixel through the array engine costs about what one pixel of the run does.
    """
    probe = np.zeros((1, problem.geometry.kept.sum()))
    solved = solve_pixels_batched(np, probe, None, problem, Options(lams=(float(lam),)))
    if np.isfinite(solved["solution"]).all():
        return
    found = (
        f"even a pixel with all {probe.shape[1]:,} pairs has a system singular to float64 "
        f"precision at lam={lam:g}, so every pixel would come out NaN: "
    )
    if lam < DEFAULTS["lam"]:
        raise InvalidParameterError(
            found + "so little smoothness cannot carry the series across the cells that no pair "
            "spans. Use a larger lam (the default is 10), a longer step, a start..end inside "
            "the data, or lam='auto'"
        )
    raise InvalidParameterError(
        found + "the smoothness term swamps the data. Use a smaller lam (the default is 10; "
        "values up to about 1e6 keep the data) or lam='auto'"
    )


def build_problem(
    ds: xr.Dataset,
    step: float = DEFAULTS["step"],
    derivative: int = DEFAULTS["derivative"],
    start: Any = None,
    end: Any = None,
) -> Problem:
    """The shared part of the inversion: grid, pair geometry, scatter tables, regularizer."""
    img1 = np.asarray(ds["acquisition_date_img1"].values)
    img2 = np.asarray(ds["acquisition_date_img2"].values)
    geometry = design.pair_geometry(img1, img2, step, start, end, derivative)
    _check_band_size(geometry, step)
    reg = kdesign.regularization_matrix(geometry.grid.n_cells, derivative, 1.0, step)
    band = kdesign.to_upper_band(reg, geometry.bandwidth).ravel()
    return Problem(geometry, band, float(step), int(derivative))


DEFAULT_LAM_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


def _lam_grid(lam: Any) -> tuple[float, ...]:
    """``lam`` as a tuple of candidates: one value, or several for a GCV choice per pixel."""
    if isinstance(lam, str):
        if lam != "auto":
            raise InvalidParameterError(
                f"lam must be a number >= 0, 'auto' or a sequence of candidates, got lam={lam!r}"
            )
        return DEFAULT_LAM_GRID
    values = np.atleast_1d(np.asarray(lam, dtype=float)).ravel()
    if values.size == 0:
        raise InvalidParameterError("lam is an empty sequence; pass a number, 'auto' or candidates")
    for value in values:
        design.check_parameters(1.0, float(value), 2)
    return tuple(float(v) for v in values)


def output_names(options: Options) -> list[str]:
    """The per-pixel outputs :func:`solve_block` returns for ``options``, in order."""
    names = ["solution", "n_obs"]
    if options.uncertainty:
        names.append("std")
    if options.auto_lam:
        names.append("lam")
    if options.robust and options.outliers:
        names.append("outlier")
    return names


#: Inversions of at least this many pixels (counted once per variable) run the numba engine's
#: steps compiled as one kernel per task (``solve_pixels_compiled(steps="compiled")``): no
#: Python, and no GIL, between the steps of a block of pixels, which a whole cube's tasks of
#: hundreds of pixels feel (``benchmarks/bench_whole_cube.py``, ``docs/scaling.md``). Smaller
#: inversions call the same kernels from Python: on a cold numba cache that one kernel takes
#: seconds more to compile, which a first small inversion (the demo, a glacier) would wait
#: for. The numbers are the same to the bit either way.
COMPILED_STEPS_MIN_PIXELS = 50_000


def solve_block(
    values: Any,
    mask: Any,
    problem: Problem,
    options: Options,
    engine: str | None = None,
    threads: int = 1,
    weights: Any = None,
    steps: str = "pipeline",
    variable: Hashable = "values",
    report_weights: bool = True,
    lazy: bool = False,
) -> tuple[Any, ...]:
    """Invert one block: ``values`` (..., n_pairs) → the outputs of :func:`output_names`.

    ``solution`` and ``std`` are (..., n_cells), ``n_obs`` and ``lam`` (...), ``outlier``
    (..., n_pairs). ``weights`` is None, per pair ``(n_pairs,)``, or like ``values``.
    Pixels where ``mask`` is False are not solved (NaN, n_obs 0). ``steps``: how the numba
    engine runs the pipeline's steps (:func:`xr_itslive.kernels.compiled.solve_pixels_compiled`;
    the same numbers either way).

    Values that cannot be trusted are taken as missing, with one ``UserWarning`` per block
    that counts them (:func:`~xr_itslive.workflows.common.warn_untrusted`): ITS_LIVE's fill
    -32767 (undecoded data cast to float; for a cube in memory :func:`check_cube` refuses it
    first), infinite values, and,
    with ``report_weights``, the observations whose weight is NaN or inf (``invert`` counts
    the weights of a cube in memory once, up front, and passes False). This is where a lazy
    cube's values are first read, so the graph stays lazy: each block reports its own.

    Parameters
    ----------
    values, mask, problem, options, engine, threads, weights, steps
        As above.
    variable : hashable, optional
        The variable, for the warnings.
    report_weights : bool, optional
        Count NaN or inf weights in the warning.
    lazy : bool, optional
        The block is one of a dask cube (the warnings say the count is this block's).
    """
    xp = get_namespace(values)
    engine = choose_engine(engine, values)
    lead_shape = values.shape[:-1]
    n_pairs = values.shape[-1]
    flat = xp.reshape(values, (-1, n_pairs))
    n_pix = flat.shape[0]
    n_cells = problem.n_cells
    names = output_names(options)

    def empty(name: str) -> Any:  # the output of pixels that are not solved
        if name == "outlier":
            return xp.zeros((n_pix, n_pairs), dtype=xp.bool)
        shape = (n_pix,) if name == "lam" else (n_pix, n_cells)
        return xp.full(shape, xp.nan, dtype=xp.float32)

    if weights is not None:
        weights = xp.reshape(xp.astype(xp.asarray(weights), xp.float64), (-1, n_pairs))
        if bool(xp.any(weights < 0)):
            raise InvalidParameterError(
                f"weights must be >= 0, found {int(xp.sum(xp.astype(weights < 0, xp.int64)))} "
                "negative value(s); pass 1 / error² (or weights='error') or clip them at 0"
            )
    compiled = engine == "numba" and is_host_numpy(flat)
    finite_weights = weights is None or bool(xp.all(xp.abs(weights) < float("inf")))
    n_obs = None
    n_fill = n_inf = n_weighted = 0
    if compiled and finite_weights:
        from ..kernels.compiled import count_valid

        # one pass in the chunk's memory order counts the valid values and tells whether any
        # is ±inf or ITS_LIVE's fill (rare: both are then turned into NaN below), so clean
        # chunks are read once here, not once more for each check
        n_obs, untrusted = count_valid(flat, FLOAT_FILL)
        if untrusted:
            n_obs = None
    if n_obs is None:
        flat, n_fill = fill_as_nan(xp, flat)
        flat, n_inf, n_weighted = finite_or_nan(xp, flat, weights)
        if is_host_numpy(flat):
            n_obs = np.count_nonzero(~np.isnan(flat), axis=1)
        else:
            n_obs = xp.sum(xp.astype(~xp.isnan(flat), xp.int64), axis=1)
    out = {}
    # Solve only the pixels that can be solved: masked-in, with at least min_obs pairs.
    if mask is not None:
        inside = xp.reshape(xp.asarray(mask, dtype=xp.bool), (-1,))
        n_obs = xp.where(inside, n_obs, 0)
    out["n_obs"] = n_obs
    keep = n_obs >= options.min_obs
    index = None
    if not bool(xp.all(keep)):
        index = xp.nonzero(keep)[0]
        if not compiled:  # the compiled engine reads the kept pixels in place
            flat = xp.take(flat, index, axis=0)
    if weights is not None:
        weights = xp.where(xp.isnan(weights) | (weights == float("inf")), 0.0, weights)
        if weights.shape[0] > 1 and index is not None and not compiled:
            weights = xp.take(weights, index, axis=0)
    if n_pix and (index is None or index.shape[0]):
        if compiled:
            from ..kernels.compiled import solve_pixels_compiled

            solved = solve_pixels_compiled(
                flat, weights, problem.geometry_arrays(), problem.regularization, n_cells,
                problem.bandwidth, options, threads=threads, pixels=index, steps=steps,
            )  # fmt: skip
        else:
            # pixel batches sized to the device's free memory (one batch on the host)
            solved = solve_pixels_batched(xp, flat, weights, problem, options)
        for name in names:
            value = xp.asarray(solved[name])
            if name in ("solution", "std", "lam"):
                value = xp.astype(value, xp.float32)
            if index is None:
                out[name] = value
            else:  # in place where the namespace can (numpy, cupy); see put_rows
                base = out[name] if name == "n_obs" else empty(name)
                out[name] = put_rows(xp, base, index, value)
    for name in names:
        if name not in out:  # no pixel solved
            out[name] = empty(name)
    warn_untrusted(variable, n_pix, n_fill, n_inf, n_weighted if report_weights else 0, lazy)
    _warn_unsolved(xp, out["solution"], out["n_obs"], keep, options, weights is not None)
    shapes = {
        "solution": (*lead_shape, n_cells),
        "std": (*lead_shape, n_cells),
        "n_obs": lead_shape,
        "lam": lead_shape,
        "outlier": (*lead_shape, n_pairs),
    }
    return tuple(xp.reshape(out[name], shapes[name]) for name in names)


def _warn_unsolved(
    xp: Any, solution: Any, n_obs: Any, keep: Any, options: Options, weighted: bool
) -> None:
    """Say so when pixels with at least ``min_obs`` pairs could not be solved.

    Their factorization met a pivot below round-off (a cell no pair and too little smoothness
    reaches, or data swamped by the smoothness term): NaN is right, silence is not. ``n_obs``
    is the count the solver used (pairs of positive weight): a pixel whose pairs all weigh 0
    is NaN for want of data, which a warning about ``lam`` would misname.

    Parameters
    ----------
    xp : namespace
        The array namespace.
    solution : array
        ``(n_pixels, n_cells)``.
    n_obs : array
        ``(n_pixels,)``, as returned (weighted pairs for the pixels solved).
    keep : array
        ``(n_pixels,)``: the pixels sent to the solver (enough valid pairs).
    options : Options
        The inversion's options.
    weighted : bool
        Weights were given.
    """
    unsolved = keep & (n_obs >= options.min_obs) & xp.all(xp.isnan(solution), axis=1)
    count = int(xp.sum(xp.astype(unsolved, xp.int64)))
    if count:
        lams = ", ".join(f"{value:g}" for value in options.lams)
        # The message is the same for every block so that Python shows it once, not per chunk.
        warnings.warn(
            f"pixels with >= min_obs={options.min_obs} pairs came out NaN at lam={lams}: their "
            "system is singular to float64 precision. A small lam cannot bridge the gaps "
            "between a pixel's pairs (raise it, e.g. lam=1 or more); a huge lam swamps the data "
            "(lower it, e.g. lam <= 1e6); lam='auto' chooses per pixel",
            UnsolvedPixelsWarning,
            stacklevel=2,
        )
    if not weighted:
        return
    unweighted = keep & (n_obs < options.min_obs)
    if bool(xp.any(unweighted)):
        warnings.warn(
            f"pixels with >= min_obs={options.min_obs} valid pairs came out NaN because fewer "
            "than min_obs of their pairs have a positive weight (n_obs counts those): a weight "
            "of 0 drops its pair. Check the weights (weights='error' gives 0 where the "
            "<variable>_error is missing or not positive), or pass weights=None",
            UserWarning,
            stacklevel=2,
        )


def _check_min_obs_fits(problem: Problem, min_obs: int, start: Any, end: Any) -> None:
    """Refuse, before any work, a ``min_obs`` above the number of pairs: no pixel could have
    that many, so every pixel would come out NaN."""
    n_pairs = int(problem.geometry.kept.sum())
    if min_obs <= n_pairs:
        return
    window = " in start..end" if start is not None or end is not None else ""
    raise EmptySelectionError(
        f"min_obs={min_obs} but the cube has {n_pairs:,} pairs{window}: no pixel can have "
        f"min_obs valid pairs, so every pixel would come out NaN. Pass a smaller min_obs "
        f"(at most {n_pairs:,}; the default is {DEFAULTS['min_obs']}), or widen start..end"
    )


def _check_weights_in_memory(name: Hashable, pair_weights: Any, weights: Any) -> bool:
    """Check the weights of ``name`` when they are in memory: refuse them when every weight is
    0 (every pixel would be NaN with ``n_obs`` 0) and warn once counting NaN or inf weights.

    Parameters
    ----------
    name : hashable
        The variable weighted.
    pair_weights : xarray.DataArray or None
        Its resolved weights (:func:`~xr_itslive.workflows.common.resolve_weights`).
    weights : Any
        ``weights=`` as given, for the message.

    Returns
    -------
    bool
        Whether the blocks still have to count NaN or inf weights: True for lazy weights.

    Raises
    ------
    InvalidParameterError
        Every weight is 0 (or NaN).
    """
    if pair_weights is None:
        return False
    if pair_weights.chunks is not None:
        return True  # not read until computed: the blocks count them
    values = np.asarray(pair_weights.values)
    finite = np.isfinite(values)
    if bool((values[finite] < 0).any()):
        return False  # solve_block refuses negative weights, naming the fix
    if values.size and not bool((values[finite] > 0).any()):
        given = "weights='error'" if isinstance(weights, str) else "weights"
        raise InvalidParameterError(
            f"{given} gives {name!r} no positive weight (all {values.size:,} are 0, NaN or "
            "inf): every pixel would come out NaN with n_obs 0. Pass positive weights, "
            "e.g. 1 / error² (weights='error' needs the cube's <variable>_error > 0), or "
            "weights=None for equal weights"
        )
    bad = int(values.size - np.count_nonzero(finite))
    if bad:
        warnings.warn(
            f"{bad:,} of the {values.size:,} weights of {name!r} are NaN or inf: the "
            "observations they weigh are taken as missing (not counted in n_obs). Give every "
            "observation a finite weight >= 0 (0 drops it), e.g. weights.fillna(0)",
            UserWarning,
            stacklevel=3,
        )
    return False


def _resolve_mask(ds: xr.Dataset, mask: Any) -> xr.DataArray | None:
    if mask is None:
        return None
    if isinstance(mask, xr.DataArray):
        if mask.dtype != bool:
            raise InvalidParameterError(
                "mask must be a boolean (y, x) DataArray or a glacier outline, "
                f"got dtype {mask.dtype}; "
                "use mask > 0 or xr_itslive.glacier_mask(ds, outline)"
            )
        extra = set(mask.dims) - set(ds.dims)
        if extra:
            raise InvalidParameterError(
                f"mask has dims {mask.dims} not in the cube ({list(ds.dims)}); pass a (y, x) mask"
            )
        check_aligned(
            "mask",
            mask,
            ds,
            "build the mask on the cube's grid, e.g. xr_itslive.glacier_mask(ds, outline), or "
            "mask.reindex_like(ds, method='nearest', fill_value=False)",
        )
        return mask
    return glacier_mask(ds, mask)


def invert(
    ds: xr.Dataset,
    variables: Sequence[Hashable] | str = DEFAULTS["variables"],
    step: float = DEFAULTS["step"],
    lam: float = DEFAULTS["lam"],
    derivative: int = DEFAULTS["derivative"],
    start: Any = None,
    end: Any = None,
    min_obs: int = DEFAULTS["min_obs"],
    mask: Any = None,
    engine: Engine | None = None,
    weights: Any = None,
    robust: bool | str = False,
    robust_iterations: int | None = None,
    uncertainty: bool = False,
    return_outliers: bool = False,
) -> xr.Dataset:
    """Invert every pixel's image-pair velocities into a regular time series.

    Solves, per pixel and variable, ``min_x ||A_p x - y_p||² + ||lam Δ^d x / step^d||²``
    where row ``i`` of ``A_p`` holds the fraction of pair ``i``'s interval in each cell.

    Parameters
    ----------
    ds
        An ITS_LIVE cube (:func:`xr_itslive.open_cube`): dims ``mid_date`` (× y × x), with the
        ``acquisition_date_img1/2`` of each pair. Dask-backed cubes stay lazy; ``mid_date``
        must be one chunk.
    variables
        Per-pair variables to invert.
    step
        Cell length in days.
    lam
        Smoothness weight (≥ 0), in days^derivative: the penalty, a velocity like the residuals, is
        ``lam · Δ^d x / step^d`` so changing ``step`` keeps its meaning. ``"auto"`` (or a
        sequence of candidates) chooses λ for each pixel by generalized cross-validation;
        the choice is returned as ``lam_<variable>`` and the candidates in the attributes.
    derivative
        1 penalizes changes, 2 curvature.
    start, end
        Time window; pairs reaching outside it are dropped. Default: all pairs.
    min_obs
        Pixels with fewer valid pairs come out NaN.
    mask
        Boolean ``(y, x)`` DataArray or a glacier outline: only these pixels are solved.
    engine
        ``"numba"`` (CPU, compiled) or ``"array"`` (namespace-generic: numpy or cupy);
        by default from the chunk type.
    weights
        None (all pairs equal), ``"error"`` (``1 / error²`` from each variable's per-pair
        error, ``vx_error`` for ``vx`` ...), or a DataArray of weights along ``mid_date``
        (optionally also y, x). With weights the objective is ``Σ w_i (a_i·x - y_i)² + ...``.
    robust
        Iteratively reweighted least squares against gross outliers: ``True`` or ``"tukey"``
        (biweight, rejects), ``"huber"`` (downweights); residuals standardized by the prior
        weights and scaled by 1.4826 × their median absolute value, per pixel.
    robust_iterations
        Reweighting iterations (each one more assembly and factorization). By default 2
        with ``weights`` and 4 without. Measured on the real glacier cube
        (``benchmarks/bench_heldout.py``, held-out pairs): with the cube's error weights, 2,
        3 and 4 iterations predict within 0.02 m/yr of each other (median ``|error|``, 90th
        percentile equal), 2 taking 0.72x the time of 4; without weights the fit keeps
        improving up to about 4 (median ``|error|`` 2.76, 2.69, 2.65 m/yr for 2, 3, 4).
    uncertainty
        Add ``<variable>_std``: the posterior standard deviation of every value,
        ``sqrt(diag(G⁻¹) σ̂²)`` with ``σ̂² = Σ w r² / (n - edf)``, from the banded selected
        inverse (no dense inverse).
    return_outliers
        With ``robust``, add ``<variable>_outlier`` (mid_date, y, x): the pairs rejected
        (Tukey) or downweighted (Huber) in the last iteration.

    Returns
    -------
    xarray.Dataset
        Dims ``(time, y, x)``: each variable, ``v`` (speed, when vx and vy are inverted),
        ``n_obs``; ``time`` at cell centres with ``time_bounds``; CRS carried over.

    Examples
    --------
    >>> from xr_itslive.synthetic import synthetic_cube
    >>> cube = synthetic_cube(n_pairs=300, ny=2, nx=2, seed=0)
    >>> result = invert(cube, step=30, lam=10)
    >>> sorted(result.data_vars)
    ['n_obs', 'time_bounds', 'v', 'vx', 'vy']
    """
    variables = [variables] if isinstance(variables, str) else list(variables)
    check_cube(ds, variables)
    if not isinstance(min_obs, int | np.integer) or min_obs < 1:
        raise InvalidParameterError(f"min_obs must be a positive integer, got min_obs={min_obs!r}")
    design.check_parameters(step, 0.0, derivative)
    lams = _lam_grid(lam)
    if robust_iterations is None:
        robust_iterations = 2 if weights is not None else 4
    if not isinstance(robust_iterations, int | np.integer) or robust_iterations < 1:
        raise InvalidParameterError(
            f"robust_iterations must be a positive integer, got {robust_iterations!r}; pass "
            "1 or more, or None for the default (2 with weights, 4 without)"
        )
    options = Options(
        min_obs=int(min_obs),
        lams=lams,
        robust=robust_kind(robust),
        iterations=int(robust_iterations),
        uncertainty=bool(uncertainty),
        outliers=bool(return_outliers),
    )
    if return_outliers and not options.robust:
        raise InvalidParameterError("return_outliers=True needs robust=True (or 'huber'/'tukey')")
    ds, _ = drop_duplicated_pairs(ds)
    problem = build_problem(ds, step, derivative, start, end)
    _check_min_obs_fits(problem, options.min_obs, start, end)
    if weights is None and not options.auto_lam:
        _check_lam_fits(problem, options.lams[0])
    geometry = problem.geometry
    cube = ds.isel({PAIR_DIM: np.flatnonzero(geometry.kept)}) if not geometry.kept.all() else ds
    mask_da = _resolve_mask(ds, mask)
    sample = ds[variables[0]].data
    chunk_type = getattr(sample, "_meta", sample)
    engine = choose_engine(engine, chunk_type)
    is_dask = ds[variables[0]].chunks is not None
    threads = 1 if is_dask else (os.cpu_count() or 1)
    names = output_names(options)
    shared_problem = shared_key(problem, is_dask)
    n_pixels = math.prod(size for dim, size in cube[variables[0]].sizes.items() if dim != PAIR_DIM)
    steps = "compiled" if n_pixels * len(variables) >= COMPILED_STEPS_MIN_PIXELS else "pipeline"
    core_out = {
        "solution": [TIME_DIM],
        "std": [TIME_DIM],
        "n_obs": [],
        "lam": [],
        "outlier": [PAIR_DIM],
    }
    dtypes = {
        "solution": np.float32,
        "std": np.float32,
        "n_obs": np.int64,
        "lam": np.float32,
        "outlier": bool,
    }

    # weights of a cube in memory are checked once here (all zero: refused; NaN or inf:
    # counted in one warning); a lazy one's are counted per block, where they are read
    resolved, report_weights = {}, {}
    for name in variables:
        resolved[name] = resolve_weights(cube, name, weights)
        report_weights[name] = _check_weights_in_memory(name, resolved[name], weights)

    def solve_variable(name: Hashable, threads: int) -> tuple:
        var = cube[name]
        args = [var]
        core = [[PAIR_DIM]]
        pair_weights = resolved[name]
        if pair_weights is not None:
            args.append(pair_weights)
            core.append([PAIR_DIM])
        if mask_da is not None:
            args.append(mask_da)
            core.append([])
        args.append(shared_problem)
        core.append([])
        kernel = _KERNELS[(pair_weights is not None, mask_da is not None)]
        meta = None
        if is_dask and not is_host_numpy(chunk_type):
            # dask learns the chunk type from meta: CuPy chunks in, CuPy chunks (and _meta) out
            meta = tuple(
                empty_like_chunk(chunk_type, var.ndim - 1 + len(core_out[n]), dtypes[n])
                for n in names
            )
        results = apply_per_pixel(
            kernel,
            *args,
            input_core_dims=core,
            output_core_dims=[core_out[n] for n in names],
            output_dtypes=[dtypes[n] for n in names],
            output_sizes={TIME_DIM: problem.n_cells},
            meta=meta,
            kwargs={
                "options": options,
                "engine": engine,
                "threads": threads,
                "steps": steps,
                "variable": name,
                "report_weights": report_weights[name],
                "lazy": is_dask,
            },
        )
        return results

    if is_dask or engine != "numba" or len(variables) == 1 or threads < 2:
        solved = [solve_variable(name, threads) for name in variables]
    else:  # in memory on the CPU: the variables side by side, sharing the cores
        from concurrent.futures import ThreadPoolExecutor

        each = max(1, threads // len(variables))
        with ThreadPoolExecutor(min(len(variables), threads)) as pool:
            solved = list(pool.map(lambda name: solve_variable(name, each), variables))

    outputs = {}
    n_obs = None
    for name, results in zip(variables, solved, strict=True):
        results = dict(zip(names, results, strict=True))
        units = {
            k: v
            for k, v in ds[name].attrs.items()
            if k in ("units", "description", "standard_name")
        }
        solution = results["solution"].transpose(TIME_DIM, ...)
        solution.attrs = dict(units, long_name=f"{name} inverted to {step:g}-day cells")
        outputs[name] = solution
        if "std" in results:
            outputs[f"{name}_std"] = (
                results["std"]
                .transpose(TIME_DIM, ...)
                .assign_attrs(
                    units=units.get("units", ""),
                    long_name=f"posterior standard deviation of {name}",
                )
            )
        if "lam" in results:
            outputs[f"lam_{name}"] = results["lam"].assign_attrs(
                long_name=f"smoothness weight chosen for {name} by generalized cross-validation"
            )
        if return_outliers:
            outputs[f"{name}_outlier"] = (
                results["outlier"]
                .transpose(PAIR_DIM, ...)
                .assign_attrs(long_name=f"pairs of {name} flagged as outliers by the robust fit")
            )
        if n_obs is None:
            n_obs = results["n_obs"]
    return _assemble_result(
        ds, outputs, n_obs, problem, variables, options, engine, start, end, weights
    )


# The shared problem travels as the last argument, a 0-d object array (common.shared_key):
# with dask it is one key of the graph that every task reads, not a copy pickled into each
# task (~1 MB per 4,000 pairs), which would make the graph and worker memory grow with the
# number of chunks.
def _kernel_plain(values, problem, **kw):
    return solve_block(values, None, unwrap_shared(problem), **kw)


def _kernel_mask(values, mask, problem, **kw):
    return solve_block(values, mask, unwrap_shared(problem), **kw)


def _kernel_weights(values, weights, problem, **kw):
    return solve_block(values, None, unwrap_shared(problem), weights=weights, **kw)


def _kernel_weights_mask(values, weights, mask, problem, **kw):
    return solve_block(values, mask, unwrap_shared(problem), weights=weights, **kw)


_KERNELS = {
    (False, False): _kernel_plain,
    (False, True): _kernel_mask,
    (True, False): _kernel_weights,
    (True, True): _kernel_weights_mask,
}


def _assemble_result(ds, outputs, n_obs, problem, variables, options, engine, start, end, weights):
    grid = problem.geometry.grid
    edges = grid.edges
    result = xr.Dataset(outputs)
    if "vx" in outputs and "vy" in outputs:
        from .speed import speed_variables  # v, and with the stds v_std, v_debiased, ...

        speeds = speed_variables(outputs["vx"], outputs["vy"], outputs.get("vx_std"),
                                 outputs.get("vy_std"))  # fmt: skip
        for name, value in speeds.items():
            result[name] = value
    n_obs.attrs = {"long_name": f"valid pairs of {variables[0]} used per pixel"}
    result["n_obs"] = n_obs
    result = result.assign_coords(
        {TIME_DIM: (TIME_DIM, grid.centers, {"bounds": "time_bounds", "long_name": "cell centre"})}
    )
    result["time_bounds"] = ((TIME_DIM, "bnds"), np.stack([edges[:-1], edges[1:]], axis=1))
    keep_coords = [
        c
        for c in ds.coords
        if PAIR_DIM not in ds[c].dims and c in ("x", "y", "spatial_ref", "mapping")
    ]
    result = result.assign_coords({c: ds[c] for c in keep_coords})
    result.attrs = {
        "title": "ITS_LIVE velocities inverted to a regular time series (xr_itslive)",
        "formulation": (
            "min_x ||A_p x - y_p||^2 + ||lam * D^d x / step^d||^2, exact date-span overlaps"
        ),
        "inverted_variables": list(map(str, variables)),  # not "variables": see io/cf.py
        "step_days": problem.step,
        "lam": "auto" if options.auto_lam else options.lams[0],
        "lam_candidates": list(options.lams) if options.auto_lam else [],
        "robust": options.robust or "none",
        "robust_iterations": options.iterations if options.robust else 0,
        "uncertainty": int(options.uncertainty),
        "derivative": problem.derivative,
        "start": str(np.datetime_as_string(grid.start, "s")),
        "end": str(np.datetime_as_string(grid.end, "s")),
        "requested_start": "" if start is None else str(start),
        "requested_end": "" if end is None else str(end),
        "n_cells": problem.n_cells,
        "n_pairs_used": problem.geometry.n_pairs,
        "n_pairs_dropped": int((~problem.geometry.kept).sum()),
        "bandwidth": problem.bandwidth,
        "min_obs": options.min_obs,
        "engine": engine,
        "weights": "none" if weights is None else (weights if isinstance(weights, str) else "user"),
    }
    for key in ("url", "s3", "projection"):
        if key in ds.attrs:
            result.attrs[f"source_{key}"] = ds.attrs[key]
    try:
        crs = cube_crs(ds)
    except Exception:  # an unreadable CRS record: a result without grid mapping, not no result
        crs = None
    # CF-1.8, and writable by every netCDF writer and zarr, with one grid mapping (io/cf.py)
    return to_cf(result, crs=crs, history="xr_itslive.invert")


def _grid_of(result: xr.Dataset) -> design.TimeGrid:
    try:
        return design.TimeGrid(
            start=np.datetime64(result.attrs["start"], "ns"),
            step=float(result.attrs["step_days"]),
            n_cells=int(result.attrs["n_cells"]),
        )
    except KeyError as err:
        raise InvalidParameterError(
            f"result lacks the attribute {err.args[0]!r}; pass the Dataset returned by invert()"
        ) from err


def _predict_block(solution, shared, threads=1):
    """``A @ x`` for every series of a block: (..., n_cells) → (..., n_pairs), NaN outside."""
    rows, geometry, n_out = unwrap_shared(shared)
    lead = solution.shape[:-1]
    if is_host_numpy(solution):
        from ..kernels.compiled import predict_series_compiled

        flat = np.reshape(solution, (-1, solution.shape[-1]))
        return np.reshape(
            predict_series_compiled(flat, rows, geometry, n_out, threads), (*lead, n_out)
        )
    # CuPy or another array-API namespace: prefix sums, pixel batches of bounded size
    xp = get_namespace(solution)
    flat = xp.reshape(solution, (-1, solution.shape[-1]))
    arrays = [xp.asarray(a) for a in geometry]
    index = np.full(n_out, len(rows), dtype=np.int64)  # column -> kept pair, or the NaN row
    index[np.asarray(rows)] = np.arange(len(rows))
    index = xp.asarray(index)
    batch = max(1, 2**24 // max(n_out, 1))
    pieces = []
    for p0 in range(0, flat.shape[0], batch):
        x = xp.astype(flat[p0 : min(p0 + batch, flat.shape[0]), :], xp.float64).T
        kept = predict_pairs(x, *arrays)
        nan_row = xp.full((1, kept.shape[1]), xp.nan, dtype=kept.dtype)
        full = xp.take(xp.concat([kept, nan_row], axis=0), index, axis=0)
        pieces.append(xp.astype(full, xp.float32).T)
    if not pieces:
        return xp.zeros((*lead, n_out), dtype=xp.float32)
    return xp.reshape(xp.concat(pieces, axis=0), (*lead, n_out))


def predict(
    ds: xr.Dataset, result: xr.Dataset, variables: Sequence[Hashable] | None = None
) -> xr.Dataset:
    """The model's mean velocity over each observation's interval.

    Parameters
    ----------
    ds
        The cube whose pairs to predict (dims ``mid_date`` × ...).
    result
        The output of :func:`invert`.
    variables
        Variables to predict; by default those inverted.

    Returns
    -------
    xarray.Dataset
        Dims ``(mid_date, y, x)``, NaN for pairs outside the result's time grid. Residuals are
        ``ds[v] - predict(ds, result)[v]``.
    """
    if PAIR_DIM not in ds.dims and PAIR_DIM in result.dims:
        raise InvalidParameterError(
            "predict(ds, result) takes the cube first and the inversion result second; the "
            "arguments look swapped (ds has no 'mid_date', result has)"
        )
    check_dataset(ds)
    check_pairs(ds)
    if variables is None:  # results written before the rename hold "variables"
        variables = read_list_attribute(result.attrs, "inverted_variables", "variables")
    variables = list(variables)
    check_variables(
        result,
        variables,
        "Pass variables=(...) among those the result holds (the inverted ones), or invert "
        "them first.",
    )
    grid = _grid_of(result)
    img1 = np.asarray(ds["acquisition_date_img1"].values)
    img2 = np.asarray(ds["acquisition_date_img2"].values)
    geometry = design.pair_geometry(
        img1, img2, grid.step, grid.start, grid.end, int(result.attrs.get("derivative", 2))
    )
    n_all = img1.shape[0]
    rows = np.flatnonzero(geometry.kept)
    out = {}
    for name in variables:
        lazy = result[name].chunks is not None
        shared = shared_key((rows, geometry.arrays, n_all), lazy)
        predicted = xr.apply_ufunc(
            _predict_block,
            result[name],
            shared,
            kwargs={"threads": 1 if lazy else (os.cpu_count() or 1)},
            input_core_dims=[[TIME_DIM], []],
            output_core_dims=[[PAIR_DIM]],
            dask="parallelized",
            output_dtypes=[np.float32],
            dask_gufunc_kwargs={"output_sizes": {PAIR_DIM: n_all}},
        )
        out[name] = predicted.transpose(PAIR_DIM, ...)
    pair_coords = {c: ds[c] for c in ds.coords if ds[c].dims == (PAIR_DIM,)}
    return xr.Dataset(out).assign_coords(pair_coords)


@dataclass(frozen=True)
class DesignMatrix:
    """The date-span design matrix of a cube on a regular grid, with its regularizer.

    Built by :func:`design_matrix`.

    Parameters
    ----------
    matrix
        ``scipy.sparse.csr_array`` (kept pairs × cells): entry (i, j) is the fraction of pair
        ``i``'s interval inside cell ``j``; rows sum to one.
    kept
        Boolean mask over the cube's ``mid_date``: the pairs that are rows of ``matrix``.
    edges, centers
        Cell edges and centres (datetime64).
    step
        Cell length, days.
    derivative
        Order of the penalized difference (1 or 2).
    regularization
        ``(lam / step^d) Δ^d`` as a sparse ``(cells - d) × cells`` matrix, for ``lam = 1``;
        multiply by ``lam``.
    bandwidth
        Bandwidth (in cells) of the normal matrix: the longest pair's span, at least ``d``.
    """

    matrix: Any
    kept: np.ndarray
    edges: np.ndarray
    centers: np.ndarray
    step: float
    derivative: int
    regularization: Any
    bandwidth: int

    def normal_matrix(self, lam: float, weights: np.ndarray | None = None) -> Any:
        """``AᵀWA + lam² RᵀR`` (sparse) for pair weights ``weights`` (default ones).

        Parameters
        ----------
        lam : float
            The smoothness weight.
        weights : array-like, optional
            ``(n_pairs,)``: each pair's weight (default: ones).

        Returns
        -------
        scipy.sparse.csr_array
            ``(n_cells, n_cells)``.
        """
        a = self.matrix
        w = np.ones(a.shape[0]) if weights is None else np.asarray(weights, dtype=float)
        import scipy.sparse as sp

        return (
            a.T @ sp.diags_array(w) @ a + lam**2 * (self.regularization.T @ self.regularization)
        ).tocsr()


def design_matrix(
    ds: xr.Dataset,
    step: float = DEFAULTS["step"],
    start: Any = None,
    end: Any = None,
    derivative: int = DEFAULTS["derivative"],
) -> DesignMatrix:
    """The date-span design matrix of ``ds``'s pairs on ``step``-day cells.

    Parameters
    ----------
    ds
        An ITS_LIVE cube (only the pair dates are read).
    step
        Cell length in days.
    start, end
        Time window, as in :func:`invert`: the grid spans it, pairs reaching outside are
        dropped (``kept``). Default: all pairs.
    derivative
        1 penalizes changes, 2 curvature.

    Returns
    -------
    DesignMatrix

    Examples
    --------
    >>> from xr_itslive.synthetic import synthetic_cube
    >>> dm = design_matrix(synthetic_cube(n_pairs=50, ny=1, nx=1), step=30)
    >>> bool(abs(dm.matrix.sum(axis=1) - 1).max() < 1e-12)
    True
    """
    design.check_parameters(step, 0.0, derivative)
    check_dataset(ds)
    check_pairs(ds, need_dimension=False)
    geometry = design.pair_geometry(
        ds["acquisition_date_img1"].values, ds["acquisition_date_img2"].values,
        step, start, end, derivative,
    )  # fmt: skip
    grid = geometry.grid
    diff = kdesign.difference_operator(grid.n_cells, derivative) * (1.0 / step**derivative)
    return DesignMatrix(
        matrix=kdesign.date_span_matrix(geometry.arrays, grid.n_cells),
        kept=geometry.kept,
        edges=grid.edges,
        centers=grid.centers,
        step=float(step),
        derivative=int(derivative),
        regularization=diff.tocsr(),
        bandwidth=geometry.bandwidth,
    )
