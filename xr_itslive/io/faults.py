"""Failures while reading a cube, turned into errors that name the store, the key and the fix.

Chunks are read lazily, inside dask tasks, long after :func:`xr_itslive.open_cube` returned. A
bare ``ReadTimeoutError`` or ``RuntimeError: error during blosc decompression`` from deep in
zarr says neither which store nor which chunk failed, nor what to do. :func:`block_reader` is
the dask ``getitem`` of every variable opened by :func:`xr_itslive.io.cube.open_store`: it
reads a block as dask's own getter does and, only when that fails, converts the error into a
:class:`~xr_itslive.errors.DataAccessError` naming the URL and the zarr chunk key, chained to
the original error. The success path is one extra function call per block, on local files and
URLs alike; the reader is a ``functools.partial`` of a module function and a string, so graphs
still pickle for distributed workers.

Why a dask getter and not a wrapper of the zarr store: with zarr 3, xarray turns a mapper into
zarr's own ``FsspecStore`` (the mapper's ``__getitem__`` is never called), and decoding a
damaged chunk fails after the store returned its bytes, where no store wrapper can see it.

A chunk that is not there at all is no error to zarr: it reads the fill value. Where that
invents numbers (``fill_value`` null: 0.0 m/yr; a coordinate's NaN), :func:`check_chunks_present`
refuses the store when it is opened, from one listing per array opened.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import warnings
from collections.abc import Callable, Mapping
from numbers import Integral
from typing import Any

from ..errors import DataAccessError, ITSLiveError, NotAnITSLiveCubeError
from .urls import S3_TIMEOUT_ENV

#: Errors that pass through unchanged: zarr signals missing keys with KeyError (it fills them),
#: and ours already say what happened.
PASS_THROUGH: tuple[type[BaseException], ...] = (
    KeyError,
    MemoryError,
    NotImplementedError,
    ITSLiveError,
)

#: Modules whose exceptions come from talking to the storage, not from the data read.
_NETWORK_MODULES = ("botocore", "aiobotocore", "aiohttp", "s3fs", "fsspec", "urllib3", "requests")

#: At most this many chunk keys are listed in one message.
_MAX_KEYS = 4


def is_network_error(err: BaseException) -> bool:
    """Whether ``err`` came from reaching the storage (timeout, connection, HTTP) rather than
    from the bytes read.

    Parameters
    ----------
    err : BaseException

    Returns
    -------
    bool
        True for ``OSError`` (``TimeoutError``, ``ConnectionError``, permission...), asyncio
        timeouts, and errors of botocore, aiohttp, s3fs, fsspec, urllib3 or requests.
    """
    if isinstance(err, OSError | TimeoutError):
        return True
    return any(cls.__module__.split(".")[0] in _NETWORK_MODULES for cls in type(err).__mro__)


#: Exception class names (anywhere in the MRO) that mean the endpoint could not be reached or
#: did not answer in time: asking it for another key will not do better.
_UNREACHABLE_NAMES = frozenset(
    {
        "ConnectionError",  # builtin and botocore's (EndpointConnectionError, ConnectTimeoutError)
        "TimeoutError",  # builtin, asyncio's and fsspec's FSTimeoutError
        "HTTPClientError",  # botocore: ReadTimeoutError, dropped connections
        "ClientConnectionError",  # aiohttp
        "ServerTimeoutError",  # aiohttp
    }
)


def is_unreachable(err: BaseException) -> bool:
    """Whether ``err`` says the endpoint could not be reached or did not answer in time.

    Parameters
    ----------
    err : BaseException

    Returns
    -------
    bool
        True for timeouts and connection errors (builtin, asyncio, botocore, aiohttp); False for
        answers such as "not found" or "access denied".
    """
    return any(cls.__name__ in _UNREACHABLE_NAMES for cls in type(err).__mro__)


def storage_fix(source: str) -> str:
    """What to check when the storage of ``source`` failed: network and timeout, or the disk.

    Parameters
    ----------
    source : str
        A URL or a local path.

    Returns
    -------
    str
        Sentences for the end of an error message.
    """
    if is_remote(source):
        return (
            "The storage did not answer, or refused the read, after bounded retries. Check the "
            "network and the endpoint (AWS_ENDPOINT_URL); on a slow link raise the per-attempt "
            f"timeout: {S3_TIMEOUT_ENV}=<seconds> (default 15) or "
            "storage_options={'config_kwargs': {'read_timeout': <seconds>}}."
        )
    return (
        "Check that the disk is mounted and the store readable; if it is, the file may be "
        "damaged: re-download the store."
    )


def is_remote(source: str) -> bool:
    """Whether ``source`` names a store reached over the network (not ``file://`` or a path).

    Parameters
    ----------
    source : str

    Returns
    -------
    bool
    """
    source = str(source)
    return "://" in source and not source.startswith(("file://", "local://"))


def zarr_array_of(array: Any) -> Any:
    """The zarr array under xarray's lazy wrappers (each keeps the next in ``.array``), or None.

    Parameters
    ----------
    array
        What a lazily opened variable holds (``variable._data``), or the value of a dask
        graph's layer of one key.

    Returns
    -------
    zarr.Array or None
    """
    for _ in range(32):
        if array is None:
            return None
        if type(array).__name__ == "ZarrArrayWrapper" and hasattr(array, "get_array"):
            return array.get_array()
        array = getattr(array, "array", None)
    return None


def _variable_name(array: Any) -> str | None:
    """The variable a non-zarr backend reads (netCDF wrappers keep ``variable_name``)."""
    for _ in range(32):
        if array is None:
            return None
        name = getattr(array, "variable_name", None)
        if isinstance(name, str):
            return name
        array = getattr(array, "array", None)
    return None


def _index_text(index: Any) -> str:
    if not isinstance(index, tuple):
        index = (index,)
    parts = []
    for item in index:
        if isinstance(item, slice):
            parts.append(f"{'' if item.start is None else item.start}:"
                         f"{'' if item.stop is None else item.stop}")  # fmt: skip
        else:
            parts.append(str(item))
    return "[" + ", ".join(parts) + "]"


def chunk_keys(array: Any, index: Any) -> list[str]:
    """The store keys of the chunks that block ``index`` of ``array`` reads.

    Parameters
    ----------
    array : array-like
        What dask reads a block from: xarray's lazy wrapper of a backend array.
    index : tuple of slice or int
        The block, in the coordinates of ``array``.

    Returns
    -------
    list of str
        Zarr chunk keys such as ``"vx/0.0.0"`` (relative to the store); when they cannot be
        worked out (another backend), one text naming the variable and the index instead.
    """
    try:
        zarray = zarr_array_of(array)
        if zarray is None or tuple(zarray.shape) != tuple(array.shape):
            # Only the freshly opened, unindexed wrapper maps blocks one to one onto the store.
            raise LookupError("no zarr array behind this block")
        selection = index if isinstance(index, tuple) else (index,)
        ranges = []
        for sel, size, length in zip(selection, zarray.chunks, zarray.shape, strict=True):
            if isinstance(sel, slice):
                start, stop, _ = sel.indices(length)
            elif isinstance(sel, Integral):
                start, stop = int(sel), int(sel) + 1
            else:
                raise LookupError("not a slice")
            ranges.append(range(start // size, max(stop - 1, start) // size + 1))
        prefix = zarray.path.strip("/")
        prefix = f"{prefix}/" if prefix else ""
        return [
            prefix + zarray.metadata.encode_chunk_key(coords)
            for coords in itertools.product(*ranges)
        ]
    except Exception:  # the message must still come out when the layout is not zarr's
        name = _variable_name(array)
        return [f"{name or 'variable'}{_index_text(index)}"]


def _keys_text(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_KEYS])
    if len(keys) > _MAX_KEYS:
        shown += f", … ({len(keys)} chunks)"
    return shown


def read_error(source: str, keys: list[str], err: BaseException) -> DataAccessError:
    """The error to raise when reading ``keys`` of the store at ``source`` failed with ``err``.

    Parameters
    ----------
    source : str
        The store's URL or path, as the user gave it.
    keys : list of str
        The chunk keys being read (see :func:`chunk_keys`).
    err : BaseException
        The original error; the caller chains it (``raise read_error(...) from err``).

    Returns
    -------
    DataAccessError
        For storage errors (timeouts, connections, HTTP, disk: :func:`is_network_error`), a
        message naming ``source/key`` and pointing at the network and ``XR_ITSLIVE_S3_TIMEOUT``
        (or the disk); otherwise the chunk could not be decoded, and the message says it is
        damaged and to re-download or delete the store.
    """
    source = str(source).rstrip("/")
    # A task reading several chunks (several along mid_date, say): name the one that failed
    # when the storage's own message says which.
    named = [key for key in keys if key in str(err)]
    keys = named[:1] or keys
    where = f"{source}/{keys[0]}" if len(keys) == 1 else f"{source} (chunks {_keys_text(keys)})"
    what = f"{type(err).__name__}: {err}"
    if not is_network_error(err):
        # Deleting only the chunk would make zarr fill it silently: the whole store goes.
        return DataAccessError(
            f"{where} is damaged: chunk {_keys_text(keys)} could not be decoded ({what}). "
            f"Re-download the store, or delete {source} and create it again."
        )
    return DataAccessError(f"could not read {where}: {what}. {storage_fix(source)}")


def read_block(
    array: Any, index: Any, asarray: bool = True, lock: Any = None, *, source: str
) -> Any:
    """Read one dask block as :func:`dask.array.core.getter` does; failures name the chunk.

    Parameters
    ----------
    array : array-like
        What the block is read from.
    index : tuple of slice
        The block.
    asarray : bool, optional
        Convert the result to a numpy array (dask's getter semantics).
    lock : lock, optional
        Held while reading (dask's getter semantics).
    source : str
        The store's URL or path, for the message.

    Returns
    -------
    array-like

    Raises
    ------
    DataAccessError
        The read failed (:func:`read_error`); the original error is ``__cause__``.
    """
    from dask.array.core import getter

    try:
        return getter(array, index, asarray=asarray, lock=lock)
    except PASS_THROUGH:
        raise
    except Exception as err:
        keys = chunk_keys(array, index)
        if len(keys) > 1 and not is_network_error(err):
            keys = _damaged_keys(array, index, keys, lock) or keys
        raise read_error(source, keys, err) from err


def _damaged_keys(array: Any, index: Any, keys: list[str], lock: Any) -> list[str]:
    """Which of the chunks of a block that failed to decode are damaged (read one by one).

    A task reads whole pixel columns, so several chunks along ``mid_date``; a decoder's error
    does not say which. Only on this error path, so the extra reads cost nothing otherwise.
    """
    from dask.array.core import getter

    zarray = zarr_array_of(array)
    if zarray is None:
        return []
    selection = index if isinstance(index, tuple) else (index,)
    damaged = []
    for key, coords in zip(keys, _chunk_coords(selection, zarray), strict=False):
        region = tuple(
            slice(c * size, min((c + 1) * size, length))
            for c, size, length in zip(coords, zarray.chunks, zarray.shape, strict=True)
        )
        try:
            getter(array, region, asarray=True, lock=lock)
        except PASS_THROUGH:
            continue
        except Exception:
            damaged.append(key)
    return damaged


def _chunk_coords(selection: tuple, zarray: Any) -> list[tuple[int, ...]]:
    ranges = []
    for sel, size, length in zip(selection, zarray.chunks, zarray.shape, strict=True):
        start, stop, _ = sel.indices(length) if isinstance(sel, slice) else (sel, sel + 1, 1)
        ranges.append(range(start // size, max(stop - 1, start) // size + 1))
    return list(itertools.product(*ranges))


def block_reader(source: str) -> Callable[..., Any]:
    """The dask ``getitem`` for the variables of the store at ``source``.

    Parameters
    ----------
    source : str
        The store's URL or path, named in the errors.

    Returns
    -------
    callable
        ``read_block`` bound to ``source``; pickleable. Pass it as
        ``from_array_kwargs={"getitem": block_reader(url)}`` to :func:`xarray.open_zarr`.
    """
    return functools.partial(read_block, source=str(source))


#: Zarr metadata documents (v2 and v3) that must parse as JSON objects.
_METADATA_NAMES = (".zmetadata", ".zgroup", ".zattrs", ".zarray", "zarr.json")


def _metadata_problem(raw: bytes, key: str) -> str | None:
    try:
        document = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return "not valid JSON"
    if not isinstance(document, dict) or (
        key.endswith(".zmetadata") and not isinstance(document.get("metadata"), dict)
    ):
        return "not a zarr metadata document"
    return None


def damaged_metadata(store: Any) -> list[str]:
    """The zarr metadata documents of ``store`` that are not valid JSON objects.

    Parameters
    ----------
    store : str or mapping
        A local path, or a mapping of keys to bytes (an fsspec mapper); other stores are not
        inspected.

    Returns
    -------
    list of str
        ``"KEY (why)"`` for each damaged document: the top-level ones, and for local stores and
        in-memory mappings the arrays' own ones too. Empty when all parse (or none is readable).
    """
    import fsspec

    try:
        mapping = fsspec.get_mapper(str(store)) if isinstance(store, str) else store
        if not isinstance(mapping, Mapping):
            return []
        damaged = []

        def check(key: str) -> None:
            try:
                raw = mapping[key]
            except KeyError:
                return
            problem = _metadata_problem(raw, key)
            if problem:
                damaged.append(f"{key} ({problem})")

        for name in _METADATA_NAMES:
            check(name)
        protocol = getattr(getattr(mapping, "fs", None), "protocol", "file")
        protocol = protocol[0] if isinstance(protocol, tuple | list) else protocol
        if not damaged and protocol in ("file", "local", "memory"):
            # Listing a remote store can take many requests; a local one is cheap.
            for key in list(mapping):
                if "/" in key and key.rsplit("/", 1)[1] in _METADATA_NAMES:
                    check(key)
        return damaged
    except Exception:  # looking for the cause must not hide the original error
        return []


def damaged_coordinate_chunk(store: Any) -> tuple[str, BaseException] | None:
    """The first chunk of a one-dimensional array of ``store`` that cannot be read or decoded.

    Opening a dataset loads its index coordinates (``x``, ``y``, ``mid_date``) outside dask, so
    a damaged chunk there fails without a key; this reads those small arrays chunk by chunk to
    find it. Only called after opening failed.

    Parameters
    ----------
    store : str, mapping or zarr store
        What :func:`zarr.open_group` accepts.

    Returns
    -------
    tuple of (str, BaseException) or None
        The chunk key (``"mid_date/3"``) and its error, or None when all read.
    """
    try:
        import zarr

        group = zarr.open_group(store, mode="r")
        for name, array in group.arrays():
            if array.ndim != 1:
                continue
            for i in range(array.nchunks):
                try:
                    array.blocks[i]
                except PASS_THROUGH:
                    raise
                except Exception as err:
                    path = array.path.strip("/") or name
                    return f"{path}/{array.metadata.encode_chunk_key((i,))}", err
    except Exception:  # looking for the cause must not hide the original error
        return None
    return None


def _stored_grid(array: Any) -> tuple[int, ...]:
    """The number of stored objects of a zarr array along each axis: its chunks (v2), or its
    shards when it has some (v3: the chunk grid of the metadata is the shard grid then)."""
    grid = getattr(array.metadata, "chunk_grid", None)
    shape = getattr(grid, "chunk_shape", None) or array.metadata.chunks
    return tuple(-(-int(n) // int(c)) if c else 0 for n, c in zip(array.shape, shape, strict=True))


def expected_chunk_keys(array: Any) -> list[str]:
    """Every key a complete zarr array stores data under, relative to the array.

    Parameters
    ----------
    array : zarr.Array
        A zarr v2 or v3 array (its own key encoding: ``0.0.0``, ``0/0/0`` or ``c/0/0/0``).

    Returns
    -------
    list of str
        One key per chunk (per shard for sharded arrays), in C order.
    """
    encode = array.metadata.encode_chunk_key
    return [encode(coords) for coords in itertools.product(*map(range, _stored_grid(array)))]


def _is_nan_fill(value: Any) -> bool:
    """Whether a zarr fill value is NaN or NaT (a coordinate that reads as missing)."""
    import numpy as np

    try:
        if isinstance(value, np.datetime64 | np.timedelta64):
            return bool(np.isnat(value))
        return bool(np.isnan(value))
    except (TypeError, ValueError):
        return False


def _invents_values(array: Any, kind: str) -> str | None:
    """What zarr would read a missing chunk of ``array`` as, when that is not "missing"; None
    when a missing chunk is correct (it reads as the array's missing value).

    A zarr writer leaves out chunks equal to the fill value (``write_empty_chunks=False``, zarr
    3's default), so a sparse store is legitimate wherever the fill reads as missing:
    ``fill_value`` -32767 or NaN for data. With ``fill_value`` null, zarr reads zeros: for a
    ``coordinate`` (an axis, a pair date) or a ``velocity`` (ITS_LIVE's, -32767 meaning missing
    even without the attribute) those are invented numbers; for other ``data`` only when the
    variable declares a missing value other than 0 and is not a flag (flags such as
    ``floatingice`` are 0 in whole chunks, which zarr then leaves out: the real 3 × 3 fixture
    has no ``floatingice`` chunk).
    """
    fill = array.metadata.fill_value
    attrs = dict(array.attrs)
    if kind == "coordinate":
        if fill is None:
            return "zeros"
        return "NaN" if _is_nan_fill(fill) else None
    if fill is not None or array.ndim == 0:  # 0-d: a grid-mapping container, no data
        return None
    if "flag_values" in attrs or "flag_meanings" in attrs:
        return None
    if kind == "velocity":
        return "zeros (0.0 m/yr counted as valid data)"
    declared = [attrs[key] for key in ("missing_value", "_FillValue") if attrs.get(key) is not None]
    if declared and all(value != 0 for value in declared):
        return f"zeros, not its missing value {declared[0]}"
    return None


def _key_lister(store: Any) -> tuple[Callable[[str], set[str]], bool] | None:
    """A function listing the keys under an array's path (relative to it), and whether it
    reaches over the network; None for a store that cannot be listed cheaply.

    One listing per array: a directory walk on local disks (one ``scandir`` for zarr v2's flat
    ``0.0.0`` keys), one paginated listing through the store's own fsspec filesystem (s3fs:
    ``list_objects_v2`` under ``array/``, 1,000 keys a page).
    """
    if isinstance(store, str | os.PathLike) or type(store).__name__ == "LocalStore":
        root = os.fspath(getattr(store, "root", store))

        def local(path: str) -> set[str]:
            base = os.path.join(root, path)
            keys = set()
            for folder, _, files in os.walk(base):
                rel = os.path.relpath(folder, base).replace(os.sep, "/")
                keys.update(f if rel == "." else f"{rel}/{f}" for f in files)
            return keys

        return local, False
    fs, root = getattr(store, "fs", None), getattr(store, "root", None)
    if fs is not None and isinstance(root, str) and hasattr(fs, "find"):  # an fsspec mapper
        protocol = fs.protocol[0] if isinstance(fs.protocol, tuple | list) else fs.protocol

        def remote(path: str) -> set[str]:
            prefix = f"{root.rstrip('/')}/{path}/"
            return {name[len(prefix) :] for name in fs.find(prefix) if name.startswith(prefix)}

        return remote, protocol not in ("file", "local", "memory")
    mapping = getattr(store, "_store_dict", store)  # zarr's MemoryStore, or a plain mapping
    if isinstance(mapping, Mapping):

        def in_memory(path: str) -> set[str]:
            prefix = f"{path}/"
            return {str(k)[len(prefix) :] for k in mapping if str(k).startswith(prefix)}

        return in_memory, False
    return None


def _not_checked(source: str, err: BaseException) -> None:
    """Raise when the storage did not answer the listing; else warn that the check is lost."""
    if is_unreachable(err):
        raise DataAccessError(
            f"could not list the chunks of {source} to check that none is missing: "
            f"{type(err).__name__}: {err}. {storage_fix(source)}"
        ) from err
    # A store that may be read but not listed (a bucket without ListBucket): reading it still
    # works, only the check is lost, so say so rather than refuse the cube.
    warnings.warn(
        f"could not list the chunks of {source} ({type(err).__name__}: {err}), so missing "
        "chunks (which zarr would read as zeros) are not detected; check that the cube was "
        "copied completely",
        UserWarning,
        stacklevel=7,  # open_cube's caller
    )


def check_chunks_present(
    source: str, store: Any, arrays: Mapping[str, str], zarr_format: int | None = None
) -> None:
    """Refuse a zarr store whose arrays lack chunks that zarr would read as invented values.

    A chunk file lost in a download or a copy is not an error to zarr: it reads the array's
    fill value there. With ``fill_value`` null (ITS_LIVE's int16 velocities) that is 0.0 m/yr,
    counted as valid in every pair; a lost coordinate chunk reads as NaN ``x``. This compares
    each array's keys against its chunk grid, one listing per array, only for the arrays
    where a missing chunk would not read as missing (see ``_invents_values``): on a real cube
    opened for ``vx`` and ``vy`` that is 2 listings of ~7,000 keys (8 pages on S3) and the
    small coordinates.

    Parameters
    ----------
    source : str
        The store's URL or path, for the message.
    store : str, path-like, fsspec mapper or zarr store
        What was opened.
    arrays : mapping of str to str
        The arrays to check (those opened; names the store lacks are skipped), each with its
        kind: ``"coordinate"`` (axes and pair dates: never legitimately missing),
        ``"velocity"`` (ITS_LIVE's velocities: missing is -32767 even without the
        attribute) or ``"data"``.
    zarr_format : int, optional
        The store's zarr format when known (saves a request on S3).

    Raises
    ------
    DataAccessError
        Chunks are missing: the message names the store, each array, its first missing keys
        and their count, and says to re-download or re-copy the cube.
    """
    import zarr

    lister = _key_lister(store)
    if lister is None or not arrays:
        return
    list_keys, remote = lister
    try:
        group = zarr.open_group(store, mode="r", zarr_format=zarr_format)
    except Exception as err:
        _not_checked(source, err)
        return
    checked = []
    for name, kind in arrays.items():
        try:
            array = group[name]
        except KeyError:  # a coordinate xarray made up, or a name the store lacks
            continue
        reads_as = _invents_values(array, kind) if isinstance(array, zarr.Array) else None
        if reads_as is not None:
            checked.append((name, array, reads_as, kind))
    if not checked:
        return

    def listed(item: tuple) -> set[str]:
        return list_keys(item[1].path.strip("/") or item[0])

    try:
        if remote and len(checked) > 1:  # the listings' round trips side by side
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(8, len(checked))) as pool:
                present = list(pool.map(listed, checked))
        else:
            present = [listed(item) for item in checked]
    except Exception as err:
        _not_checked(source, err)
        return
    problems, sparse = [], []
    for (name, array, reads_as, kind), keys in zip(checked, present, strict=True):
        expected = expected_chunk_keys(array)
        missing = [f"{name}/{key}" for key in expected if key not in keys]
        if missing:
            problems.append(
                f"{name!r} lacks {len(missing)} of its {len(expected)} chunks "
                f"({_keys_text(missing)}), which zarr would read as {reads_as}"
            )
            if kind != "coordinate":
                sparse.append(name)
    if problems:
        source = str(source).rstrip("/")
        on_purpose = ""
        if sparse:  # a store written sparse by zarr from data that were 0 there
            on_purpose = (
                " If it was written sparse on purpose (zarr's write_empty_chunks=False), write "
                f"it again with a fill value, e.g. encoding={{{sparse[0]!r}: "
                "{'_FillValue': -32767}}."
            )
        raise DataAccessError(
            f"the cube at {source} is incomplete: " + "; ".join(problems) + ". A file was lost "
            "in a download or a copy (zarr does not complain about missing chunks). "
            "Re-download the cube, or copy it again completely (e.g. aws s3 sync, cp -r)."
            + on_purpose
        )


def open_error(source: str, store: Any, err: BaseException) -> ITSLiveError | None:
    """The clear error for a failure to open the zarr store at ``source``, or None to re-raise.

    Parameters
    ----------
    source : str
        The store's URL or path, for the message.
    store : str, mapping or zarr store
        What was opened (inspected for damaged metadata or chunks).
    err : BaseException
        The original error; the caller chains it.

    Returns
    -------
    ~xr_itslive.errors.NotAnITSLiveCubeError, ~xr_itslive.errors.DataAccessError or None
        :class:`~xr_itslive.errors.NotAnITSLiveCubeError` when no zarr metadata is there (an
        empty folder, a folder above or inside the cube);
        :class:`~xr_itslive.errors.DataAccessError` when the storage failed, a metadata document
        is damaged or a coordinate chunk cannot be decoded; None otherwise.
    """
    from zarr.errors import NodeNotFoundError

    source = str(source).rstrip("/")
    if isinstance(err, NodeNotFoundError | FileNotFoundError):
        empty = ""
        if not is_remote(source) and os.path.isdir(source) and not os.listdir(source):
            empty = " (the folder is empty: an interrupted download?)"
        return NotAnITSLiveCubeError(
            f"no zarr metadata found at {source!r}{empty}: is this an ITS_LIVE cube? A zarr store "
            "has .zgroup and .zmetadata (zarr v2) or zarr.json (zarr v3) at its top. Pass the "
            "cube's own folder (ITS_LIVE_vel_EPSG<code>_G0120_X<x>_Y<y>.zarr), or download it "
            "again (xr_itslive.find_cubes gives its URL)."
        )
    if is_network_error(err):
        return DataAccessError(
            f"could not open the cube at {source}: {type(err).__name__}: {err}. "
            + storage_fix(source)
        )
    damaged = damaged_metadata(store)
    if damaged:
        return DataAccessError(
            f"the zarr metadata of {source} is damaged: {', '.join(damaged)} "
            f"({type(err).__name__}: {err}). Re-download the store, or delete it and create it "
            "again."
        )
    found = damaged_coordinate_chunk(store)
    if found is not None:
        key, chunk_err = found
        return read_error(source, [key], chunk_err)
    return None
