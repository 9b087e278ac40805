"""What the workflows share: one implementation each, used by the inversion, the composites,
the mosaics and the resumable jobs.

- :func:`shared_key` / ``unwrap_shared`` (from :mod:`xr_itslive.io.graph`): a value every dask
  task reads as one key;
- :func:`apply_per_pixel`: a kernel over the pixels of a cube, lazily, without copying its input;
- :func:`choose_engine` and :func:`robust_kind`: the kernel engine and the reweighting;
- :func:`fill_as_nan`, :func:`finite_or_nan` and :func:`warn_untrusted`: values that cannot
  be trusted (ITS_LIVE's fill cast to float, ±inf, NaN or inf weights) taken as missing in a
  block, with one warning that counts them;
- :func:`drop_duplicated_pairs`: each ``pair_id`` once;
- :func:`resolve_weights` (with :func:`check_aligned`): ``weights=`` as per-pair weights;
- :func:`needed_variables`, :func:`open_with_name`, :func:`check_cube_sequence`: the inputs
  of a job or a mosaic;
- :func:`input_identity`: what tells one input cube from another when a store is resumed.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Hashable, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from ..errors import ChunkingError, InvalidParameterError, MissingVariableError
from ..io.cube import ITSLIVE_FILL
from ..io.format import PAIR_DIM
from ..io.graph import one_key, unwrap_shared
from ..io.open import open_cube
from ..kernels.namespace import is_cupy_array, is_host_numpy
from ..kernels.pipeline import ROBUST_KINDS

Engine = Literal["numba", "array"]
#: The kernel engines of the inversion and of the composites.
ENGINES: tuple[str, ...] = ("numba", "array")

__all__ = [
    "ENGINES",
    "FLOAT_FILL",
    "Engine",
    "apply_per_pixel",
    "check_aligned",
    "check_cube_sequence",
    "choose_engine",
    "count_float_fill",
    "drop_duplicated_pairs",
    "fill_as_nan",
    "finite_or_nan",
    "input_identity",
    "needed_variables",
    "open_with_name",
    "resolve_weights",
    "robust_kind",
    "shared_key",
    "unwrap_shared",
    "warn_untrusted",
]


# --------------------------------------------------------------------------- shared key


def shared_key(value: Any, lazy: bool) -> xr.DataArray:
    """``value`` as a 0-d object DataArray; with dask, one key of the graph
    (:func:`xr_itslive.io.graph.one_key`).

    Every task reads the one key instead of a copy of ``value`` pickled into it (the
    inversion's problem is ~1 MB per 4,000 pairs, the composites' rows ~80 bytes a pair),
    which would make the graph and worker memory grow with the number of chunks.

    Parameters
    ----------
    value
        Anything: the kernel gets it back with ``unwrap_shared``.
    lazy
        Make it a dask array (one key) for a dask-backed cube; else a numpy 0-d array.

    Returns
    -------
    xarray.DataArray
        0-d, dtype object; pass it with no core dimensions to :func:`xarray.apply_ufunc`.

    Examples
    --------
    >>> unwrap_shared(shared_key({"a": 1}, lazy=False).values)
    {'a': 1}
    """
    return xr.DataArray(one_key(value, lazy))


# --------------------------------------------------------------------------- per pixel


def apply_per_pixel(
    func: Any,
    *args: Any,
    input_core_dims: Sequence[Sequence[Hashable]],
    output_core_dims: Sequence[Sequence[Hashable]],
    output_dtypes: Sequence[Any],
    output_sizes: dict[Hashable, int] | None = None,
    meta: Sequence[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
) -> tuple:
    """``xarray.apply_ufunc(func, *args, dask="parallelized")`` for kernels whose core
    dimensions are each in one chunk, handing the kernel every block as it is.

    ``apply_ufunc`` builds its dask graph with ``blockwise(concatenate=True)``, which passes
    the chunks of the core dimensions through ``concatenate3``; that copies a block even when
    it is the only one (10 MB per variable and task of a 25,000-pair cube). Here the graph is
    the same without the copy.

    Parameters
    ----------
    func
        Called on numpy (or CuPy) blocks, core dimensions last, as with ``apply_ufunc``;
        returns one array per output.
    *args
        DataArrays (or Variables) as for ``apply_ufunc``.
    input_core_dims, output_core_dims
        As for ``apply_ufunc``; a core dimension of a lazy input must be in one chunk.
    output_dtypes
        The dtype of each output.
    output_sizes
        Sizes of the output core dimensions that no input has.
    meta
        One empty array per output, for dask to know the chunk type (default numpy).
    kwargs
        Keyword arguments for ``func``.

    Returns
    -------
    tuple of xarray.DataArray
        One per output, as ``apply_ufunc`` returns them.
    """
    import dask.array as da

    kwargs = dict(kwargs or {})
    single = len(output_core_dims) == 1  # apply_ufunc then wants one array, not a tuple
    if not any(isinstance(getattr(a, "data", None), da.Array) for a in args):

        def eager(*arrays: Any, **kw: Any) -> Any:
            outputs = tuple(func(*arrays, **kw))
            return outputs[0] if single else outputs

        results = xr.apply_ufunc(
            eager, *args, input_core_dims=input_core_dims, output_core_dims=output_core_dims,
            kwargs=kwargs, keep_attrs=False,
        )  # fmt: skip
        return (results,) if single else results

    def lazy(*arrays: Any) -> Any:
        outputs = _blockwise_outputs(
            func, arrays, input_core_dims, output_core_dims, output_dtypes,
            dict(output_sizes or {}), meta, kwargs,
        )  # fmt: skip
        return outputs[0] if single else outputs

    results = xr.apply_ufunc(
        lazy, *args, input_core_dims=input_core_dims, output_core_dims=output_core_dims,
        dask="allowed", keep_attrs=False,
    )  # fmt: skip
    return (results,) if single else results


def _single_blocks(value: Any) -> Any:
    """A block as blockwise(concatenate=False) hands it: in a list per core dimension."""
    while isinstance(value, list):
        (value,) = value  # one chunk per core dimension (checked when the graph is built)
    return value


def _call_on_blocks(*blocks: Any, kernel: Any, kernel_kwargs: dict) -> tuple:
    """One task: ``kernel`` on the task's blocks, its outputs as a tuple."""
    return tuple(kernel(*(_single_blocks(b) for b in blocks), **kernel_kwargs))


def _blockwise_outputs(func, arrays, core_in, core_out, dtypes, sizes, meta, kwargs) -> tuple:
    """The dask side of :func:`apply_per_pixel`: one task per block of the loop dimensions,
    then one array per output (its part of each task's tuple), as dask's apply_gufunc."""
    from operator import getitem

    import dask.array as da
    from dask.base import tokenize
    from dask.core import flatten
    from dask.highlevelgraph import HighLevelGraph

    n_loop = max(np.ndim(a) - len(c) for a, c in zip(arrays, core_in, strict=True))
    loop = tuple(f"loop{i}" for i in range(n_loop))
    arginds: list[Any] = []
    for array, core in zip(arrays, core_in, strict=True):
        array = da.asarray(array)
        for dim, chunks in zip(core, array.chunks[array.ndim - len(core) :], strict=True):
            if len(chunks) > 1:
                raise ChunkingError(
                    f"core dimension {dim!r} has {len(chunks)} chunks; rechunk it into one "
                    f"(e.g. cube.chunk({{{str(dim)!r}: -1}})) first"
                )
            sizes.setdefault(dim, chunks[0])
        own_loop = loop[n_loop - (array.ndim - len(core)) :]
        arginds += [array, own_loop + tuple(f"core-{d}" for d in core)]
    if meta is None:
        meta = tuple(
            np.empty((0,) * (n_loop + len(c)), dtype=dtype)
            for c, dtype in zip(core_out, dtypes, strict=True)
        )
    name = f"{getattr(func, '__name__', 'kernel').strip('_')}-{tokenize(func, arrays, kwargs)}"
    tmp = da.blockwise(
        _call_on_blocks, loop, *arginds, name=name, concatenate=False, meta=tuple(meta),
        kernel=func, kernel_kwargs=kwargs,
    )  # fmt: skip
    keys = list(flatten(tmp.__dask_keys__()))
    outputs = []
    for i, (core, out_meta) in enumerate(zip(core_out, meta, strict=True)):
        core_shape = tuple(sizes[d] for d in core)
        leaf = f"{name}-{i}"
        graph = {(leaf, *key[1:], *(0,) * len(core)): (getitem, key, i) for key in keys}
        outputs.append(
            da.Array(
                HighLevelGraph.from_collections(leaf, graph, dependencies=[tmp]),
                leaf,
                chunks=tmp.chunks + tuple((n,) for n in core_shape),
                meta=out_meta,
            )
        )
    return tuple(outputs)


# --------------------------------------------------------------------------- engine, robust


def choose_engine(engine: str | None, sample: Any) -> str:
    """The kernel engine for chunks like ``sample``.

    Parameters
    ----------
    engine
        ``"numba"``, ``"array"``, or None: "numba" for numpy chunks and "array" for any
        other chunk type (CuPy on a GPU, or another array-API library).
    sample
        A chunk, or dask's ``_meta``.

    Returns
    -------
    str

    Raises
    ------
    InvalidParameterError
        An unknown engine, or "numba" for chunks that are not numpy arrays on the host.
    """
    on_host_numpy = is_host_numpy(sample)
    if engine is None:
        return "numba" if on_host_numpy else "array"
    if engine not in ENGINES:
        raise InvalidParameterError(
            f"engine must be one of {list(ENGINES)} or None, got {engine!r}"
        )
    if engine == "numba" and not on_host_numpy:
        kind = "CuPy (GPU)" if is_cupy_array(sample) else type(sample).__module__.split(".")[0]
        raise InvalidParameterError(
            f"engine='numba' runs on the CPU with numpy arrays but the data are {kind} arrays; "
            "use engine='array' (or None) for GPU chunks, or move the cube to the host "
            "(e.g. ds.map_blocks(lambda b: b.as_numpy()) or cupy.asnumpy)"
        )
    return engine


def robust_kind(robust: Any) -> str | None:
    """``robust=`` as the kernels' reweighting: None, ``"tukey"`` or ``"huber"``.

    Parameters
    ----------
    robust
        False or None (none), True (Tukey's biweight), ``"tukey"`` or ``"huber"``.

    Returns
    -------
    str or None
    """
    if robust is None or robust is False:
        return None
    if robust is True:
        return "tukey"
    if robust in ROBUST_KINDS:
        return robust
    raise InvalidParameterError(
        f"robust must be False, True, 'huber' or 'tukey', got robust={robust!r}"
    )


# --------------------------------------------------------------------------- untrusted values

#: ITS_LIVE's fill value as a float: int16 data cast to float without decoding keep it as a
#: "velocity" of -32767 m/yr, beyond any glacier's (the fastest flow about 20 km/yr).
FLOAT_FILL = float(ITSLIVE_FILL)


def count_float_fill(values: np.ndarray) -> int:
    """How many of ``values`` equal :data:`FLOAT_FILL`.

    One NaN-ignoring minimum first (no temporary array), so clean data cost one read.

    Parameters
    ----------
    values : numpy.ndarray
        Floating-point values on the host.

    Returns
    -------
    int
    """
    if values.size == 0 or not np.fmin.reduce(values, axis=None) <= FLOAT_FILL:
        return 0
    return int(np.count_nonzero(values == FLOAT_FILL))


def fill_as_nan(xp: Any, flat: Any) -> tuple[Any, int]:
    """``flat`` with values equal to ITS_LIVE's fill as NaN, and how many there were.

    On the host one NaN-ignoring minimum decides (no temporary array): clean data are not
    copied. -32767.0 is never a measured velocity (ITS_LIVE's int16 m/yr reach 32767 only as
    the fill), and, exactly equal, no noise reaches it.

    Parameters
    ----------
    xp : namespace
        The array namespace of ``flat``.
    flat : array
        A block's values, ``(n_pixels, n_pairs)``.

    Returns
    -------
    flat : array
        ``flat`` itself when it holds no fill, else a copy with NaN in its place.
    count : int
        The values equal to the fill.
    """
    if is_host_numpy(flat):
        if flat.dtype.kind != "f" or not count_float_fill(flat):
            return flat, 0
    hit = flat == FLOAT_FILL
    count = int(xp.sum(xp.astype(hit, xp.int64)))
    if not count:
        return flat, 0
    return xp.where(hit, xp.asarray(float("nan"), dtype=flat.dtype), flat), count


def finite_or_nan(xp: Any, flat: Any, weights: Any) -> tuple[Any, int, int]:
    """Observations that cannot be trusted as missing: infinite values, and those whose weight
    is not finite (NaN, inf).

    Parameters
    ----------
    xp : namespace
        The array namespace of ``flat``.
    flat : array
        A block's values, ``(n_pixels, n_pairs)``.
    weights : array or None
        Their weights, ``(n_pixels, n_pairs)`` or ``(1, n_pairs)``; None for equal weights.

    Returns
    -------
    flat : array
        ``flat`` itself when nothing is untrusted (no copy), else a copy with NaN there.
    n_inf : int
        The infinite values.
    n_weighted : int
        The observations (values present, finite) whose weight is NaN or inf.
    """
    inf = float("inf")
    # one cheap pass in the common case (nothing to fix): any ±inf among the values? On the
    # host, two NaN-ignoring reductions that allocate nothing (a chunk can be large).
    if is_host_numpy(flat):
        values_bad = flat.size > 0 and bool(
            np.fmax.reduce(flat, axis=None) == inf or np.fmin.reduce(flat, axis=None) == -inf
        )
    else:
        values_bad = bool(xp.any(xp.abs(flat) == inf))
    weights_bad = weights is not None and not bool(xp.all(xp.abs(weights) < inf))
    if not (values_bad or weights_bad):
        return flat, 0, 0
    bad = xp.abs(flat) == inf
    n_inf = int(xp.sum(xp.astype(bad, xp.int64))) if values_bad else 0
    n_weighted = 0
    if weights_bad:
        untrusted = ~(xp.abs(weights) < inf)
        # the observations this takes out: values present, not already infinite
        dropped = untrusted & ~bad & ~xp.isnan(flat)
        n_weighted = int(xp.sum(xp.astype(dropped, xp.int64)))
        bad = bad | untrusted
    return xp.where(bad, xp.asarray(float("nan"), dtype=flat.dtype), flat), n_inf, n_weighted


def warn_untrusted(
    name: Hashable,
    n_pixels: int,
    n_fill: int,
    n_inf: int,
    n_weighted: int,
    lazy: bool,
    counts: str = "n_obs",
) -> None:
    """One warning counting the observations of a block taken as missing because they cannot
    be trusted (:func:`fill_as_nan`, :func:`finite_or_nan`); nothing when there are none.

    Parameters
    ----------
    name : hashable
        The variable.
    n_pixels : int
        The block's pixels.
    n_fill, n_inf, n_weighted : int
        Values equal to ITS_LIVE's fill, infinite values, observations of NaN or inf weight.
    lazy : bool
        The block is one of a dask cube (each block warns for its own).
    counts : str, optional
        The outputs that count the observations used (the inversion's ``n_obs``), which the
        message says leave these out.
    """
    found, fixes = [], []
    if n_fill:
        found.append(
            f"{n_fill:,} values equal to {FLOAT_FILL:g} (ITS_LIVE's fill value: int16 data cast "
            "to float without decoding)"
        )
        fixes.append(
            "open the cube with xr_itslive.open_cube (which decodes it) or mask the fill: "
            f"ds[{name!r}].where(ds[{name!r}] != -32767)"
        )
    if n_inf:
        found.append(f"{n_inf:,} infinite values")
        fixes.append(f"set them to NaN yourself: ds[{name!r}].where(np.isfinite(ds[{name!r}]))")
    if n_weighted:
        found.append(f"{n_weighted:,} observations whose weight is NaN or inf")
        fixes.append("give every observation a finite weight >= 0 (0 drops it): weights.fillna(0)")
    if not found:
        return
    where = f"a block of {n_pixels:,} pixels of a lazy cube" if lazy else f"{n_pixels:,} pixels"
    warnings.warn(
        f"{name!r}: {', '.join(found)} in {where} are taken as missing (not counted in "
        f"{counts}). To silence this, {'; '.join(fixes)}",
        UserWarning,
        stacklevel=2,
    )


# --------------------------------------------------------------------------- pairs, weights


def drop_duplicated_pairs(ds: xr.Dataset) -> tuple[xr.Dataset, np.ndarray | None]:
    """``ds`` without repeated pairs (the same ``pair_id`` twice), with a warning that counts
    them: a pair seen twice would weigh twice.

    Without ``pair_id`` (:func:`xr_itslive.open_cube` adds one), repeats are looked for among
    the pairs that share both acquisition dates. Dates alone do not tell: 33,321 of the real
    glacier cube's 47,892 pairs share them with another (21,177 more pairs than date pairs),
    with other values. So, in memory, a pair is a repeat only when it also has every per-pair
    value of an earlier one, at every pixel (no pair of the real cubes does, even at one
    pixel); those are used once, with a warning. A lazy cube's values are not read here
    (building the graph computes nothing): a warning says that repeats cannot be checked
    and what to do.

    Parameters
    ----------
    ds
        A cube.

    Returns
    -------
    ds : xarray.Dataset
        Each pair once, the first of each, in the cube's order.
    kept : numpy.ndarray or None
        The positions along ``mid_date`` kept; None when nothing was dropped.
    """
    if "pair_id" not in ds.coords:
        return _drop_repeats_without_pair_id(ds)
    ids = np.asarray(ds["pair_id"].values)
    _, first = np.unique(ids, return_index=True)
    if first.size == ids.size:
        return ds, None
    warnings.warn(
        f"{ids.size - first.size} pairs appear more than once (the same pair_id); each is "
        "used once. Check how the cube was assembled (a concat or rechunk that repeated pairs)",
        UserWarning,
        stacklevel=3,  # the caller of invert or composite
    )
    first = np.sort(first)
    return ds.isel({PAIR_DIM: first}), first


def _same_dates(ds: xr.Dataset) -> np.ndarray | None:
    """Per pair, the index of its group of pairs with the same two acquisition dates, or None
    when no two pairs share them (or the cube has no pair dates)."""
    names = ("acquisition_date_img1", "acquisition_date_img2")
    if not all(name in ds.variables and ds[name].dims == (PAIR_DIM,) for name in names):
        return None
    dates = [np.asarray(ds[name].values) for name in names]
    if any(d.dtype.kind not in "Mfiu" for d in dates) or dates[0].size < 2:
        return None
    # exact bit patterns: equal dates (NaN or NaT included) fall in one group
    as_bits = [d.astype("datetime64[ns]" if d.dtype.kind == "M" else np.float64) for d in dates]
    keys = np.stack([d.view(np.int64) for d in as_bits], axis=1)
    _, group, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    return group.ravel() if counts.max() > 1 else None


def _drop_repeats_without_pair_id(ds: xr.Dataset) -> tuple[xr.Dataset, np.ndarray | None]:
    """:func:`drop_duplicated_pairs` for a cube without ``pair_id``."""
    group = _same_dates(ds)
    if group is None:
        return ds, None
    skip = {PAIR_DIM, "acquisition_date_img1", "acquisition_date_img2"}  # equal in a group
    per_pair = [
        v.transpose(PAIR_DIM, ...)
        for name, v in ds.variables.items()
        if PAIR_DIM in v.dims and name not in skip
    ]
    if not all(is_host_numpy(v.data) for v in per_pair):
        n_sharing = int(np.count_nonzero(np.bincount(group)[group] > 1))
        warnings.warn(
            f"{n_sharing:,} pairs share both acquisition dates with another pair and the cube "
            "has no 'pair_id' coordinate, so a pair repeated by a concat or a rechunk cannot "
            "be told from a distinct pair without reading the data (it would weigh twice). "
            "Open the cube with xr_itslive.open_cube (which adds pair_id), or give the pairs "
            "ids before assembling: ds.assign_coords(pair_id=('mid_date', ids))",
            UserWarning,
            stacklevel=4,  # the caller of invert or composite
        )
        return ds, None
    repeats = _repeated_rows(group, [np.asarray(v.values) for v in per_pair])
    if not repeats.any():
        return ds, None
    warnings.warn(
        f"{int(repeats.sum()):,} pairs repeat another pair's acquisition dates and every value "
        "at every pixel, and the cube has no 'pair_id' to tell them apart: each is taken as a "
        "repeat (from a concat or rechunk) and used once. If they are distinct pairs, give the "
        "pairs ids: ds.assign_coords(pair_id=('mid_date', ids)), as xr_itslive.open_cube does",
        UserWarning,
        stacklevel=4,  # the caller of invert or composite
    )
    kept = np.flatnonzero(~repeats)
    return ds.isel({PAIR_DIM: kept}), kept


def _repeated_rows(group: np.ndarray, arrays: list[np.ndarray]) -> np.ndarray:
    """Which pairs repeat an earlier pair of their date ``group`` in every one of ``arrays``
    (``mid_date`` first), NaN equal to NaN. Pairs with no finite value are not counted: a
    repeat of nothing changes nothing.

    Only pairs that share their dates are looked at, and of those only pairs whose fingerprint
    (per float array: the count and the sum of the finite values) is that of an earlier pair
    are compared value by value, against that pair.
    """
    n = group.size
    repeats = np.zeros(n, bool)
    candidates = np.flatnonzero(np.bincount(group)[group] > 1)
    rows = [a[candidates].reshape(candidates.size, -1) for a in arrays]
    floats = [a for a in rows if a.dtype.kind in "fc"]
    if not floats:
        return repeats
    data = [a for a in floats if a.shape[1] > 1] or floats  # per pixel, when there are some
    has_data = np.zeros(candidates.size, bool)
    for a in data:
        has_data |= np.isfinite(a).any(axis=1)
    columns = [group[candidates].astype(np.float64)]
    for a in floats:
        finite = np.isfinite(a)
        columns += [finite.sum(axis=1).astype(np.float64), np.where(finite, a, 0).sum(axis=1)]
    _, first, inverse = np.unique(
        np.stack(columns, axis=1), axis=0, return_index=True, return_inverse=True
    )
    inverse = inverse.ravel()
    for j in np.flatnonzero((first[inverse] != np.arange(candidates.size)) & has_data):
        earlier = first[inverse[j]]
        repeats[candidates[j]] = all(
            np.array_equal(a[j], a[earlier], equal_nan=a.dtype.kind in "fcmM") for a in rows
        )
    return repeats


def check_aligned(what: str, array: xr.DataArray, ds: xr.Dataset, fix: str) -> None:
    """Refuse ``array`` when its coordinates along the cube's dims are not the cube's own.

    xarray would raise a bare ``AlignmentError`` at apply time (or, with another join,
    silently drop or NaN-fill pixels): say which dimension differs and how to build it.
    ``mid_date`` is not compared (pairs are matched by ``pair_id`` or position elsewhere).

    Parameters
    ----------
    what
        The argument's name in the message (``"mask"``, ``"weights"``).
    array
        The argument.
    ds
        The cube.
    fix
        How to build a matching argument, the end of the message.

    Raises
    ------
    InvalidParameterError
    """
    for dim in array.dims:
        if dim not in ds.dims or dim == PAIR_DIM:
            continue
        if array.sizes[dim] != ds.sizes[dim]:
            raise InvalidParameterError(
                f"{what} has {array.sizes[dim]} values along {dim!r} but the cube has "
                f"{ds.sizes[dim]}; {fix}"
            )
        if dim in array.coords and dim in ds.coords:
            theirs, ours = np.asarray(array[dim].values), np.asarray(ds[dim].values)
            first = (theirs[:1].tolist() + [None])[0], (ours[:1].tolist() + [None])[0]
            if not np.array_equal(theirs, ours):
                differ = int(np.count_nonzero(theirs != ours))
                raise InvalidParameterError(
                    f"{what}'s {dim!r} coordinate differs from the cube's at {differ} of "
                    f"{ours.size} positions (first: {first[0]} vs {first[1]}); {fix}"
                )


def resolve_weights(
    cube: xr.Dataset, name: Hashable, weights: Any, *, match_pair_id: bool = True
) -> xr.DataArray | None:
    """``weights=`` as per-pair (or per-observation) weights ``1 / σ²`` for variable ``name``.

    Parameters
    ----------
    cube
        The cube whose pairs are fitted.
    name
        The variable weighted (``weights="error"`` reads ``<name>_error``).
    weights
        None, ``"error"`` (``1 / <name>_error²``, 0 where the error is missing or not
        positive) or a DataArray along ``mid_date`` (optionally also y, x, on the cube's
        grid).
    match_pair_id
        A DataArray for more pairs than ``cube`` (given for the cube before some pairs were
        dropped) is matched to the cube's pairs by ``pair_id``, as the inversion does; False:
        it must hold the cube's pairs (the composites pick them by position first).

    Returns
    -------
    xarray.DataArray or None
        float64, ``mid_date`` in one chunk; None without weights.

    Raises
    ------
    InvalidParameterError
        Weights of another kind, without ``mid_date``, on another grid or for other pairs.
    MissingVariableError
        ``weights="error"`` without ``<name>_error`` in the cube.
    """
    if weights is None:
        return None
    if isinstance(weights, str):
        if weights != "error":
            raise InvalidParameterError(
                f"weights must be None, 'error' or a DataArray, got weights={weights!r}"
            )
        error_name = f"{name}_error"
        if error_name not in cube.variables:
            raise MissingVariableError(
                f"weights='error' needs {error_name!r} for {name!r}, but the cube has "
                f"{sorted(map(str, cube.data_vars))}. Open the cube with {error_name!r} among "
                "variables=(...), or pass weights=None or a DataArray."
            )
        error = cube[error_name].astype("float64")
        # A missing or non-positive error gets no weight rather than an infinite one.
        weight = 1.0 / error**2
        return weight.where(np.isfinite(weight) & (error > 0), 0.0)
    if isinstance(weights, xr.DataArray):
        if PAIR_DIM not in weights.dims:
            raise InvalidParameterError(
                f"weights must vary along 'mid_date', got dims {weights.dims}; "
                "pass a DataArray with dims ('mid_date',) or ('mid_date', 'y', 'x')"
            )
        check_aligned(
            "weights",
            weights,
            cube,
            "pass weights on the cube's grid (the same y and x), e.g. computed from the "
            "cube itself or weights.reindex_like(cube, method='nearest')",
        )
        aligned = weights
        if weights.sizes[PAIR_DIM] != cube.sizes[PAIR_DIM]:
            if not match_pair_id:
                raise InvalidParameterError(
                    f"weights has {weights.sizes[PAIR_DIM]} pairs but the cube has "
                    f"{cube.sizes[PAIR_DIM]}; pass weights for the cube's pairs (its mid_date)"
                )
            aligned = weights.isel({PAIR_DIM: _pair_id_positions(cube, weights)})
        if aligned.chunks is not None:
            aligned = aligned.chunk({PAIR_DIM: -1})
        return aligned.astype("float64")
    raise InvalidParameterError(
        f"weights must be None, 'error' or a DataArray, got {type(weights).__name__}"
    )


def _pair_id_positions(cube: xr.Dataset, weights: xr.DataArray) -> np.ndarray:
    if "pair_id" in weights.coords and "pair_id" in cube.coords:
        lookup = {int(p): i for i, p in enumerate(weights["pair_id"].values)}
        return np.asarray([lookup[int(p)] for p in cube["pair_id"].values])
    raise InvalidParameterError(
        f"weights has {weights.sizes[PAIR_DIM]} pairs but the inverted cube has "
        f"{cube.sizes[PAIR_DIM]}; pass weights for the cube's pairs (same mid_date length)"
    )


# --------------------------------------------------------------------------- inputs


def needed_variables(variables: Sequence[Hashable], weights: Any) -> list[str]:
    """The variables to open: ``variables``, and their ``*_error`` with ``weights="error"``.

    Parameters
    ----------
    variables
        The variables fitted.
    weights
        As for :func:`resolve_weights`.

    Returns
    -------
    list of str

    Examples
    --------
    >>> needed_variables(("vx", "vy"), "error")
    ['vx', 'vy', 'vx_error', 'vy_error']
    """
    names = [str(v) for v in variables]
    if isinstance(weights, str) and weights == "error":
        names += [f"{v}_error" for v in variables]
    return names


def open_with_name(
    cube: Any, variables: Sequence[Hashable], weights: Any
) -> tuple[xr.Dataset, str]:
    """A cube of a mosaic (Dataset, path, URL or catalog entry), opened, and a name for it.

    Parameters
    ----------
    cube
        A Dataset (kept as it is), a path or URL (:func:`xr_itslive.open_cube`), or a catalog
        entry (its ``open``).
    variables, weights
        What to open (:func:`needed_variables`).

    Returns
    -------
    ds : xarray.Dataset
    name : str
        The last part of its path or URL (a Dataset's ``url`` attribute), the entry's name;
        ``""`` when unknown.
    """
    if isinstance(cube, xr.Dataset):
        name = cube.attrs.get("url") or cube.attrs.get("catalog_url") or ""
        return cube, str(name).rstrip("/").rsplit("/", 1)[-1]
    if hasattr(cube, "zarr_url") and hasattr(cube, "open"):  # a catalog entry (CubeEntry)
        return cube.open(needed_variables(variables, weights)), cube.name
    if isinstance(cube, str | os.PathLike):
        ds = open_cube(cube, needed_variables(variables, weights))
        return ds, str(cube).rstrip("/").rsplit("/", 1)[-1]
    raise InvalidParameterError(
        f"cubes must hold Datasets, paths, URLs or catalog entries, got {type(cube).__name__}"
    )


def check_cube_sequence(cubes: Any, function: str, single: str) -> None:
    """Refuse ``cubes`` unless it is a non-empty sequence of cubes.

    Parameters
    ----------
    cubes
        The argument of a mosaic.
    function
        The mosaic's name in the message (``"invert_mosaic"``).
    single
        What to call for one cube instead (``"xr_itslive.invert"``).

    Raises
    ------
    InvalidParameterError
    """
    if isinstance(cubes, xr.Dataset | str | os.PathLike) or not isinstance(cubes, Sequence):
        raise InvalidParameterError(
            f"{function} takes a sequence of cubes (a list of Datasets, paths or URLs); for "
            f"one cube use {single}"
        )
    if len(cubes) == 0:
        raise InvalidParameterError("cubes is empty; pass the cubes a glacier spans")


def input_identity(cube: xr.Dataset, variables: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """What identifies an input cube and its values, cheaply, for a resumed store to refuse
    another input.

    Nothing is computed or read but a store's metadata document (and, on a local disk, one
    stat per chunk file): 17 ms for the 47,892-pair glacier cube
    (``benchmarks/bench_store_checks.py``).

    Parameters
    ----------
    cube
        The cube a job reads.
    variables
        The data variables the job reads (default: all); those not in ``cube`` are ignored.

    Returns
    -------
    dict
        ``source``: the store actually read (found in the variables' graphs; else the path
        xarray opened, else the cube's ``url`` attribute); ``sizes``; ``pairs``: a digest of
        every pair's dates; ``values``: per variable, dask's token of its data (its graph:
        store, chunks and every operation applied, such as ``cube.where(...)`` or
        ``vx + 100``; or a hash of its content in memory, see
        :func:`~xr_itslive.workflows.store.values_token`); ``stores``: the stores read, each
        with a digest of its consolidated metadata and, on a local disk, of its chunk files'
        sizes and modification times (:func:`~xr_itslive.workflows.store.sources_identity`),
        so that values rewritten in place differ too.

    Raises
    ------
    DataAccessError
        A store's metadata could not be read.
    """
    from .store import sources_identity, values_token

    digest = hashlib.sha256()
    for name in ("acquisition_date_img1", "acquisition_date_img2"):
        if name in cube.variables:
            digest.update(np.ascontiguousarray(np.asarray(cube[name].values)).tobytes())
    wanted = list(cube.data_vars) if variables is None else list(variables)
    names = [str(n) for n in wanted if n in cube.data_vars]
    stores = sources_identity([cube[n].variable for n in names])
    source = cube.encoding.get("source") or cube.attrs.get("url") or ""
    if not stores and isinstance(source, str) and os.path.isfile(source):
        # a netCDF file: its size and modification time stand for its chunks
        stat = os.stat(source)
        stores = {source: {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}}
    found = list(stores)
    return {
        "source": (found[0] if len(found) == 1 else found) if found else str(source),
        "sizes": {str(k): int(v) for k, v in cube.sizes.items()},
        "pairs": digest.hexdigest()[:16],
        "values": {n: values_token(cube[n].variable) for n in names},
        "stores": stores,
    }
