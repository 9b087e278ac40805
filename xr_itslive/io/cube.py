"""Open one ITS_LIVE datacube from a path or URL, and decode the real format.

Anonymous S3 reads with bounded timeouts and retries (storage errors name the URL and the chunk
key, :mod:`xr_itslive.io.faults`), consolidated zarr v2 metadata, stores missing chunks that
zarr would read as made-up values refused, pair dates as coordinates, ``mid_date`` sorted with a
``pair_id`` for duplicates, the CRS recorded.
Finding a cube by a point is :mod:`xr_itslive.io.open`'s job (it needs the catalog).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from ..crs import crs_from_attributes
from ..errors import DataAccessError, NotAnITSLiveCubeError
from .faults import (
    PASS_THROUGH,
    block_reader,
    check_chunks_present,
    is_unreachable,
    open_error,
)
from .format import PAIR_DATE_VARIABLES, check_pairs, check_variables
from .graph import one_key, unwrap_shared
from .urls import S3_TIMEOUT_ENV, candidate_urls


def _describe_store(store: Any) -> str:
    """A store's URL for messages: an fsspec mapper's root with its protocol, a zarr store's own
    text (``file:///...``), or its type."""
    fs, root = getattr(store, "fs", None), getattr(store, "root", None)
    if fs is not None and isinstance(root, str):
        try:
            return fs.unstrip_protocol(root)
        except Exception:  # an fs without protocol rules: the root alone still helps
            return root
    text = str(store)
    return text if len(text) <= 200 and " object at 0x" not in text else type(store).__name__


def _chunked(ds: xr.Dataset, chunks: Any, reader: dict) -> xr.Dataset:
    """``ds`` (opened without dask) chunked by ``chunks(ds)``, when ``chunks`` is a function of
    the opened dataset: the chunking is chosen from the store's own layout without opening the
    store a second time."""
    return ds.chunk(chunks(ds), from_array_kwargs=reader)


def _open_zarr(
    store: Any,
    chunks: Any,
    source: str,
    undecoded: Iterable[str] = (),
    complete: Iterable[str] | bool | None = None,
) -> xr.Dataset:
    # Every lazy block read goes through block_reader: a failure names the URL and chunk key.
    reader = {"getitem": block_reader(source)}
    given = None if callable(chunks) else chunks
    decode = _mask_and_scale(undecoded)
    try:
        # Real cubes are zarr v2 with consolidated metadata: 6 requests to open instead of ~70.
        zarr_format = 2
        try:
            ds = xr.open_zarr(
                store, consolidated=True, zarr_format=2, chunks=given, from_array_kwargs=reader,
                mask_and_scale=decode,
            )  # fmt: skip
        except (KeyError, FileNotFoundError, ValueError):
            zarr_format = None
            ds = xr.open_zarr(store, chunks=given, from_array_kwargs=reader, mask_and_scale=decode)
        if complete is not None and complete is not False:
            check_chunks_present(source, store, _chunk_check_arrays(ds, complete), zarr_format)
        return _chunked(ds, chunks, reader) if callable(chunks) else ds
    except PASS_THROUGH:
        raise
    except Exception as err:
        error = open_error(source, store, err)
        if error is None:
            raise
        raise error from err


def _chunk_check_arrays(ds: xr.Dataset, complete: Iterable[str] | bool) -> dict[str, str]:
    """The arrays of ``ds`` whose chunks :func:`check_chunks_present` checks, with their kind:
    the variables asked for (``True``: every data variable), the pair dates and the
    one-dimensional coordinates (each read whole when the cube is opened or decoded)."""
    names = list(ds.data_vars) if complete is True else [str(n) for n in complete]
    arrays = {
        name: "velocity" if name in VELOCITY_VARIABLES else "data"
        for name in names
        if name in ds.variables
    }
    for name, var in ds.variables.items():
        if var.ndim == 1 and (name in ds.dims or name in PAIR_DATE_VARIABLES):
            arrays[str(name)] = "coordinate"
    return arrays


def _mask_and_scale(undecoded: Iterable[str]) -> bool | dict[str, bool]:
    """xarray's ``mask_and_scale``: every variable decoded but ``undecoded``."""
    names = list(undecoded)
    return {name: False for name in names} if names else True


def open_store(
    source: Any,
    storage_options: Mapping[str, Any] | None,
    chunks: Any,
    undecoded: Iterable[str] = (),
    complete: Iterable[str] | bool | None = None,
) -> xr.Dataset:
    """The zarr (or netCDF) store at ``source`` as it is stored, lazily, or a clear error.

    Reads are bounded in time: on S3 a request fails after at most 3 attempts, each waiting at
    most ``XR_ITSLIVE_S3_TIMEOUT`` seconds (default 15) for the endpoint; see
    :func:`~xr_itslive.io.urls.s3_storage_options`. Any error while a chunk is read later, in
    a dask task, reaches the user as :class:`~xr_itslive.errors.DataAccessError` naming the
    URL and the chunk key (see :mod:`xr_itslive.io.faults`).

    Parameters
    ----------
    source : str, path-like or mapping
        A local path, an ``s3://`` or ITS_LIVE ``http(s)://`` URL (tried under the bucket's
        current prefix too), or a zarr store mapping.
    storage_options : mapping, optional
        s3fs options (anonymous reads with bounded timeouts and retries by default; a
        ``config_kwargs`` given here is merged into the default one).
    chunks : mapping or callable
        Dask chunks, as :func:`xarray.open_zarr` takes them, or a function of the dataset
        opened without dask that returns them (e.g. :func:`inversion_chunks`): the store is
        then opened once and chunked by its own layout.
    undecoded : iterable of str, optional
        Variables left as stored (no CF masking or scaling), for :func:`decode_cube` to
        decode faster (ITS_LIVE's int16 velocities).
    complete : iterable of str or bool, optional
        Check that these arrays of a zarr store (True: every data variable), and its
        one-dimensional coordinates and pair dates, hold every chunk where a missing one would
        be read as made-up values (:func:`~xr_itslive.io.faults.check_chunks_present`: one
        listing per array). None or False: no check.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    DataAccessError
        Nothing at ``source``; the storage did not answer in time or refused; the zarr
        metadata or a coordinate chunk is damaged; with ``complete``, chunks are missing.
    NotAnITSLiveCubeError
        ``source`` exists but holds no zarr metadata (an empty folder, say).
    """
    if not isinstance(source, str | os.PathLike):
        # a zarr store
        return _open_zarr(source, chunks, _describe_store(source), undecoded, complete)
    source = str(source)
    if not source.startswith(("s3://", "http://", "https://")):
        if not os.path.exists(source):
            raise DataAccessError(
                f"no cube at {source!r}: the path does not exist. Pass an existing local zarr "
                "path, an s3:// URL, or a catalog URL (see xr_itslive.find_cubes)."
            )
        if source.endswith((".nc", ".nc4", ".h5")):
            reader = {"getitem": block_reader(source)}
            decode = _mask_and_scale(undecoded)
            if callable(chunks):
                opened = xr.open_dataset(source, chunks=None, mask_and_scale=decode)
                return _chunked(opened, chunks, reader)
            return xr.open_dataset(
                source, chunks=chunks, from_array_kwargs=reader, mask_and_scale=decode
            )
        return _open_zarr(source, chunks, source, undecoded, complete)

    from .s3 import s3_filesystem

    errors = []
    not_a_cube = None
    for url in candidate_urls(source):
        if not url.startswith("s3://"):
            break
        fs = s3_filesystem(storage_options)
        try:
            found = fs.exists(url.rstrip("/") + "/.zmetadata") or fs.exists(url)
        except Exception as err:  # botocore EndpointConnectionError & co. are no OSErrors
            errors.append(f"{url}: {type(err).__name__}: {err}")
            if is_unreachable(err):
                break  # the same endpoint will not answer for the other prefix either
            continue
        if not found:
            errors.append(f"{url}: not found")
            continue
        try:
            return _open_zarr(fs.get_mapper(url), chunks, url, undecoded, complete)
        except NotAnITSLiveCubeError as err:  # something else under this prefix: try the next
            errors.append(f"{url}: {err}")
            not_a_cube = not_a_cube or err
    if not_a_cube is not None:
        raise not_a_cube
    raise DataAccessError(
        f"could not open the cube {source!r} after bounded retries: "
        + "; ".join(errors)
        + ". Check the URL (xr_itslive.find_cubes gives valid ones), your network, and "
        "storage_options (anonymous reads are the default; set AWS_ENDPOINT_URL for another "
        f"endpoint, {S3_TIMEOUT_ENV}=<seconds> for a longer per-attempt timeout)."
    )


def _as_datetime(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[ns]")
    # Undecoded float days since 1970, as some writers leave them.
    return np.datetime64("1970-01-01", "ns") + (values * 86400e9).astype("timedelta64[ns]")


#: ITS_LIVE's velocity variables, stored as int16 with ``missing_value`` -32767.
VELOCITY_VARIABLES = ("v", "vx", "vy", "v_error", "va", "vr")
#: The fill value of those int16 variables.
ITSLIVE_FILL = -32767


#: The attributes that carry an integer variable's fill values (ITS_LIVE's: ``missing_value``).
FILL_ATTRIBUTES = ("missing_value", "_FillValue")


def _decode_integers(var: xr.Variable, name: str, order: np.ndarray | None) -> tuple:
    """An integer velocity ``var`` as float32 with NaN for its fill values, lazily: the
    variable and whether its pairs are already taken in ``order``.

    One pass per chunk (:func:`xr_itslive.kernels.decode.mask_fill`), sorting on the way
    when ``mid_date`` is the first axis and one chunk (the default chunks). Values equal to
    ``missing_value`` or ``_FillValue`` are missing, as in xarray's CF decoding; without
    either attribute (a store written without it, or opened with ``mask_and_scale=False``),
    ITS_LIVE's -32767 is, with a warning. Scaled integers (``scale_factor``, ``add_offset``,
    ITS_LIVE's M11/M12) are left to xarray's decoding.
    """
    import dask.array as da

    from ..kernels.decode import EXACT_IN_FLOAT32, mask_fill

    fills = [
        value for key in FILL_ATTRIBUTES if key in var.attrs for value in np.ravel(var.attrs[key])
    ]
    scaled = "scale_factor" in var.attrs or "add_offset" in var.attrs
    if scaled or var.dtype.type not in EXACT_IN_FLOAT32 or len(set(fills)) > 2:
        decoded = xr.decode_cf(
            xr.Dataset({name: var}), decode_times=False, decode_coords=False,
            decode_timedelta=False,
        )[name].variable  # fmt: skip
        return decoded, False
    if not fills:
        warnings.warn(
            f"{name!r} is stored as undecoded integers (no missing_value attribute): its "
            f"{ITSLIVE_FILL} fill values are taken as missing (ITS_LIVE's convention)",
            UserWarning,
            stacklevel=5,
        )
        fills = [ITSLIVE_FILL]
    fills = sorted(set(fills))
    attrs = {k: v for k, v in var.attrs.items() if k not in FILL_ATTRIBUTES}
    # as after xarray's decoding: the fill values move to the encoding, for a write back
    encoding = dict(var.encoding, **{k: var.attrs[k] for k in FILL_ATTRIBUTES if k in var.attrs})
    axis = var.dims.index("mid_date") if "mid_date" in var.dims else None
    data = var.data
    if not isinstance(data, da.Array):
        data = np.asarray(data)
        if axis:
            data = np.moveaxis(data, axis, 0)
        taken = axis is not None and order is not None
        out = mask_fill(data, fills, order if taken else None)
        out = np.moveaxis(out, 0, axis) if axis else out
        return xr.Variable(var.dims, out, attrs, encoding), taken
    taken = axis == 0 and order is not None and len(data.chunks[0]) == 1
    if taken:
        # the order is one key of the graph that every task reads, not a copy in each task
        # (8 bytes a pair: 200 kB per task of a 25,000-pair cube, for ~7,000 tasks)
        index = "".join(chr(ord("a") + i) for i in range(data.ndim))
        out = da.blockwise(
            _mask_fill_block, index, data, index, one_key(order, lazy=True), "", fills=fills,
            dtype=np.float32, meta=np.empty((0,) * data.ndim, np.float32),
        )  # fmt: skip
    else:
        out = data.map_blocks(
            mask_fill, fills, dtype=np.float32, meta=np.empty((0,) * data.ndim, np.float32)
        )
    return xr.Variable(var.dims, out, attrs, encoding), taken


def _mask_fill_block(values: np.ndarray, order: Any, fills: list) -> np.ndarray:
    from ..kernels.decode import mask_fill

    return mask_fill(values, fills, unwrap_shared(order))


def decode_cube(ds: xr.Dataset, variables: Iterable[str] | None = None) -> xr.Dataset:
    """Bring an ITS_LIVE cube into the form the rest of the library expects.

    Keeps ``variables`` (and the per-pair dates), loads the pair dates as ``mid_date``
    coordinates, sorts by ``mid_date`` (duplicates kept: they are distinct pairs), adds a
    unique ``pair_id`` coordinate (the position in the original cube), and records the CRS.
    ITS_LIVE's integer velocities (int16 with ``missing_value``, as ``open_store``
    leaves them for ``undecoded`` names) become float32 with NaN here, in one pass that also
    sorts them; variables xarray has already decoded are only sorted.

    Parameters
    ----------
    ds : xarray.Dataset
        A cube as opened from the store: a ``mid_date`` dimension and the
        ``acquisition_date_img1``/``acquisition_date_img2`` variables.
    variables : str or iterable of str, optional
        Data variables to keep (default: all); the pair dates and ``mapping`` are always kept.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    NotAnITSLiveCubeError
        ``ds`` has no ``mid_date`` dimension or lacks a pair date.
    MissingVariableError
        A name of ``variables`` is not in ``ds``.
    """
    check_pairs(ds)
    if variables is not None:
        variables = [variables] if isinstance(variables, str) else list(variables)
        check_variables(ds, variables, coordinates=True)
        keep = set(variables) | set(PAIR_DATE_VARIABLES) | {"mapping"}
        ds = ds.drop_vars([v for v in ds.data_vars if v not in keep])

    # One small read of both date arrays (a few hundred kB even for full cubes).
    dates = xr.Dataset({name: ds[name].variable for name in PAIR_DATE_VARIABLES}).compute()
    img1 = _as_datetime(dates["acquisition_date_img1"].values)
    img2 = _as_datetime(dates["acquisition_date_img2"].values)
    mid = _as_datetime(ds["mid_date"].values)
    order = np.argsort(mid, kind="stable")
    if not np.any(order != np.arange(order.size)):
        order = None
    names = list(ds.data_vars)
    integers = [n for n in VELOCITY_VARIABLES if n in ds.data_vars and ds[n].dtype.kind in "iu"]
    decoded = {}
    for name in integers:  # decoded (and sorted where a chunk holds every pair) per chunk
        var, taken = _decode_integers(ds[name].variable, name, order)
        decoded[name] = var if taken or order is None else var.isel(mid_date=order)
    ds = ds.drop_vars(integers).assign_coords(
        acquisition_date_img1=("mid_date", img1),
        acquisition_date_img2=("mid_date", img2),
        mid_date=("mid_date", mid),
        pair_id=("mid_date", np.arange(ds.sizes["mid_date"], dtype=np.int64)),
    )
    if order is not None:
        ds = ds.isel(mid_date=order)
    variables = {  # in the store's order
        n: decoded[n] if n in decoded else ds[n].variable
        for n in names
        if n in decoded or n in ds.data_vars
    }
    encoding = ds.encoding
    ds = xr.Dataset(variables, coords=ds.coords, attrs=ds.attrs)
    ds.encoding = encoding
    crs = crs_from_attributes(ds)
    if crs is not None:
        import rioxarray  # noqa: F401  (registers .rio)

        ds = ds.rio.write_crs(crs)
    return ds


def demo_cube_path() -> str:
    """The bundled real cube subset: 3×3 pixels, 7,397 pairs (1986-2024) of ITS_LIVE tile
    N30E090 in its original int16 encoding (vx, vy, v, their errors, satellite_img1)."""
    from importlib.resources import files

    return str(files("xr_itslive") / "data" / "N30E090_3x3_subset.nc")


def open_source(
    source: Any,
    variables: Iterable[str] | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Open and decode the cube at ``source`` (path, URL or store); see
    :func:`xr_itslive.open_cube`, which also finds cubes by a point.

    Parameters
    ----------
    source : str, path-like or mapping
        A local zarr or netCDF path, an ``s3://`` or catalog ``http(s)://`` URL, or a zarr
        store mapping.
    variables : iterable of str, optional
        Data variables to keep (default: all); see :func:`decode_cube`.
    storage_options : mapping, optional
        s3fs options for URLs (anonymous reads with bounded retries by default).
    chunks : mapping, optional
        Dask chunks; default: :func:`inversion_chunks` of the store (``mid_date`` in one
        chunk, whole stored spatial chunks, up to 2 × 2 of them, unless a task would exceed
        ``TASK_BYTES``).
    """
    # By default the chunks come from the store's layout (inversion_chunks): every task reads
    # its pixel columns straight from the stored chunks (one mid_date chunk, so that sorting
    # permutes within chunks only); a dask rechunk of the stored chunks would add a layer of
    # tasks holding them until merged.
    # ITS_LIVE's int16 velocities come undecoded: decode_cube decodes and sorts them in one
    # pass per chunk, instead of xarray's cast, mask and where, then dask's sorting copy.
    # A lost chunk reads as zeros (0.0 m/yr counted valid) or NaN coordinates: the variables
    # kept and the pair dates are checked against their chunk grids (one listing each).
    if variables is not None:
        variables = [variables] if isinstance(variables, str) else list(variables)
    ds = open_store(
        source,
        storage_options,
        chunks=inversion_chunks if chunks is None else chunks,
        undecoded=VELOCITY_VARIABLES,
        complete=True if variables is None else [*variables, *PAIR_DATE_VARIABLES],
    )
    return decode_cube(ds, variables)


#: The most decoded float32 input one task of the inversion holds per variable, whatever the
#: number of pairs: a task reads whole pixel columns, ``mid_date`` × its pixels.
TASK_BYTES = 64 * 2**20


def inversion_chunks(ds: xr.Dataset, task_bytes: int = TASK_BYTES) -> dict[str, int]:
    """Dask chunks for inverting ``ds``: ``mid_date`` whole, space sized to ``task_bytes``.

    The spatial chunk is 2 × 2 stored chunks where they fit the budget (today's 10 × 10 at up
    to 41,000 pairs: 20 × 20, 40 MB at 25,000 pairs), else the stored one, or, when every
    pair of one stored chunk is over the budget (older cubes' 100 × 100: 1 GB), an even split
    of it; so a task's memory stays under ``task_bytes`` whether the cube has 10,000 or 50,000
    pairs, and a stored chunk is read by several tasks only when it must be.

    Parameters
    ----------
    ds : xarray.Dataset
        A cube as opened from its store (the 3-D variables' ``encoding["chunks"]`` or dask
        chunks give the stored chunking).
    task_bytes : int
        The budget of one task's float32 input, per variable.

    Returns
    -------
    dict
        ``{"mid_date": -1, "y": ..., "x": ...}`` (only ``mid_date`` when the cube is not
        chunked in space).
    """
    cubes = [v for v in ds.data_vars.values() if v.dims == ("mid_date", "y", "x")]
    if not cubes:
        return {"mid_date": -1}
    stored = cubes[0].encoding.get("chunks") or (
        tuple(c[0] for c in cubes[0].chunks) if cubes[0].chunks else None
    )
    if not stored:
        return {"mid_date": -1}
    n_pairs, ny, nx = (ds.sizes[d] for d in ("mid_date", "y", "x"))
    cy, cx = int(stored[1]), int(stored[2])
    pixels = max(1, task_bytes // (4 * max(n_pairs, 1)))
    if cy * cx <= pixels:
        # whole stored chunks, each read by one task; four to a task where they fit: a task's
        # reads, dask's scheduling and the output chunk's write cost time in Python whatever
        # the task's size (benchmarks/bench_task_size.py)
        merge = 2 if 4 * cy * cx <= pixels else 1
        sy, sx = merge * cy, merge * cx
    else:
        d = 2
        while -(-cy // d) * -(-cx // d) > pixels and d < max(cy, cx):
            d += 1
        sy, sx = -(-cy // d), -(-cx // d)
    return {"mid_date": -1, "y": min(sy, ny), "x": min(sx, nx)}
