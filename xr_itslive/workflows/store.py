"""Resumable zarr writes: a lazy result written chunk by chunk, restartable after a crash.

:func:`~xr_itslive.write_resumable` writes the metadata and coordinates of a lazy
``(time, y, x)`` result first, then computes and writes one spatial chunk per task (a zarr
region write).
After a chunk's data are written, the same task writes a small marker object under
``_xr_itslive/done/`` inside the store. A second call with the same result skips the chunks that
have a marker, so a killed run loses at most the chunks that were in flight. The run's
parameters are recorded in the store (``_xr_itslive`` group attributes); resuming with others is
refused.

:func:`~xr_itslive.invert_to_zarr` is :func:`xr_itslive.invert` followed by
:func:`~xr_itslive.write_resumable`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import itertools
import json
import os
import socket
import time
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ChunkingError, InvalidParameterError, StoreConflictError
from ..kernels.namespace import to_numpy
from .cluster import local_scheduler_name, scheduler_context

#: Group inside the store that holds the write records (ignored by ``xr.open_zarr``).
MARKER_GROUP = "_xr_itslive"
#: Folder (under :data:`MARKER_GROUP`) with one marker object per finished chunk.
DONE_FOLDER = "done"
#: Root attribute that tells a resumable store from any other zarr store.
STORE_ATTR = "xr_itslive_store"
RECORD_FORMAT = 1
_KEPT_ENCODING = ("units", "calendar", "dtype", "_FillValue", "scale_factor", "add_offset")
TASK_PREFIX = "xr-itslive-write"

__all__ = [
    "StoreStatus",
    "WriteSummary",
    "store_status",
    "write_resumable",
]


# --------------------------------------------------------------------------- store access


@dataclass(frozen=True)
class _Target:
    """A picklable handle on the store: URL or path plus fsspec options."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def filesystem(self) -> tuple[Any, str]:
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs, path.rstrip("/")

    @property
    def is_local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    def xarray_kwargs(self) -> dict[str, Any]:
        return {} if self.is_local else {"storage_options": self.storage_options}

    def zarr_store(self, read_only: bool = False) -> Any:
        import zarr.storage

        if self.is_local:
            return zarr.storage.LocalStore(self.filesystem()[1], read_only=read_only)
        return zarr.storage.FsspecStore.from_url(
            self.url, storage_options=self.storage_options, read_only=read_only
        )

    def marker_path(self, index: tuple[int, ...]) -> str:
        fs_root = self.filesystem()[1]
        return f"{fs_root}/{MARKER_GROUP}/{DONE_FOLDER}/{_index_name(index)}.json"


def _target(store: Any, storage_options: Mapping[str, Any] | None) -> _Target:
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str):
        raise InvalidParameterError(
            f"store must be a local path or a URL such as 's3://bucket/out.zarr', got "
            f"{type(store).__name__}; resumable writes keep their records beside the data, "
            "which needs a path"
        )
    options = dict(storage_options or {})
    if "://" not in store:
        if options:
            raise InvalidParameterError(
                f"storage_options={options!r} given for the local path {store!r}; they apply "
                "only to URLs such as 's3://bucket/out.zarr'"
            )
        store = os.path.abspath(store)  # workers may run in another working directory
    return _Target(store, options)


def _index_name(index: tuple[int, ...]) -> str:
    return ".".join(str(i) for i in index)


def _parse_index(name: str) -> tuple[int, ...] | None:
    stem = name.rsplit("/", 1)[-1].removesuffix(".json")
    try:
        return tuple(int(part) for part in stem.split("."))
    except ValueError:
        return None


def _done_chunks(target: _Target) -> set[tuple[int, ...]]:
    fs, root = target.filesystem()
    folder = f"{root}/{MARKER_GROUP}/{DONE_FOLDER}"
    fs.invalidate_cache(folder)  # s3fs caches listings; other processes add markers
    try:
        names = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return set()
    found = (_parse_index(name) for name in names if name.endswith(".json"))
    return {index for index in found if index is not None}


def _read_record(target: _Target) -> dict[str, Any] | None:
    """The write record of the store, or None when there is none."""
    import zarr

    try:
        group = zarr.open_group(target.zarr_store(read_only=True), path=MARKER_GROUP, mode="r")
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        return None
    record = dict(group.attrs).get("record")
    return json.loads(record) if isinstance(record, str) else None


def _root_kind(target: _Target) -> str:
    """'absent' (nothing there), 'ours' (template of a resumable write), 'zarr' or 'other'."""
    fs, root = target.filesystem()
    fs.invalidate_cache(root)
    try:
        names = [n.rsplit("/", 1)[-1] for n in fs.ls(root, detail=False)]
    except (FileNotFoundError, NotADirectoryError):
        return "other" if fs.exists(root) else "absent"
    if not names:
        return "absent"
    if not ({"zarr.json", ".zgroup", ".zattrs"} & set(names)):
        return "other"
    import zarr

    try:
        attrs = dict(zarr.open_group(target.zarr_store(read_only=True), mode="r").attrs)
    except Exception:  # unreadable metadata: a template cut short while being written
        return "ours"
    return "ours" if STORE_ATTR in attrs else "zarr"


def _remove(target: _Target) -> None:
    fs, root = target.filesystem()
    if fs.exists(root):
        fs.rm(root, recursive=True)
    fs.invalidate_cache(root)


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class _Plan:
    result: xr.Dataset
    names: tuple[str, ...]  # data variables written chunk by chunk
    dims: tuple[str, ...]  # the chunked (spatial) dims
    chunks: dict[str, tuple[int, ...]]
    fingerprint: dict[str, Any]

    def indices(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(len(self.chunks[d])) for d in self.dims))

    @property
    def n_chunks(self) -> int:
        return int(np.prod([len(self.chunks[d]) for d in self.dims]))

    def region(self, index: tuple[int, ...]) -> dict[str, slice]:
        region = {}
        for dim, i in zip(self.dims, index, strict=True):
            sizes = self.chunks[dim]
            start = int(sum(sizes[:i]))
            region[dim] = slice(start, start + sizes[i])
        return region


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def coord_digest(values: np.ndarray) -> str:
    """A short fingerprint of an array: 16 hex digits of the SHA-256 of its values and dtype.

    Parameters
    ----------
    values : numpy.ndarray
        The array (e.g. a coordinate's values); strings and objects are hashed as text.
    """
    array = np.ascontiguousarray(values)
    if array.dtype.kind in "OUST":
        payload = "\x1f".join(map(str, array.ravel())).encode()
    else:
        payload = array.tobytes()
    return hashlib.sha256(payload + str(array.dtype).encode()).hexdigest()[:16]


def _plan(
    result: xr.Dataset,
    dims: Sequence[Hashable],
    chunks: Mapping[Hashable, int] | None,
    parameters: Mapping[str, Any] | None,
) -> _Plan:
    if not isinstance(result, xr.Dataset):
        raise InvalidParameterError(
            f"expected an xarray.Dataset to write, got {type(result).__name__}; pass e.g. the "
            "result of xr_itslive.invert(...)"
        )
    requested = [str(d) for d in dims]
    dims = tuple(d for d in requested if d in result.dims)
    if not dims:
        raise InvalidParameterError(
            f"none of the chunk dimensions {requested} is in the result (dims "
            f"{list(result.dims)}); pass dims=(...) naming the dimensions to write chunk by chunk"
        )
    names = tuple(str(n) for n, v in result.data_vars.items() if set(v.dims) & set(dims))
    if not names:
        raise InvalidParameterError(
            f"no data variable of the result has any of the dims {list(dims)}; nothing to write "
            "chunk by chunk"
        )
    # Small lazy pieces outside the chunk grid go with the template.
    eager = {
        n: v.compute()
        for n, v in result.variables.items()
        if v.chunks is not None and (n not in names)
    }
    if eager:
        result = result.assign(
            {n: v for n, v in eager.items() if n in result.data_vars}
        ).assign_coords({n: v for n, v in eager.items() if n in result.coords})

    lazy = [n for n in names if result[n].chunks is not None]
    sizes: dict[str, tuple[int, ...]] = {}
    for dim in dims:
        found = {result[n].chunksizes[dim] for n in lazy if dim in result[n].dims}
        if len(found) > 1:
            result = result.unify_chunks()
            found = {result[n].chunksizes[dim] for n in lazy if dim in result[n].dims}
        if found:
            sizes[dim] = found.pop()
        else:
            step = int((chunks or {}).get(dim, result.sizes[dim]))
            length = result.sizes[dim]
            sizes[dim] = tuple(min(step, length - s) for s in range(0, length, step))
    for dim, dim_sizes in sizes.items():
        if len(dim_sizes) > 1 and (len(set(dim_sizes[:-1])) > 1 or dim_sizes[-1] > dim_sizes[0]):
            raise ChunkingError(
                f"the result's chunks along {dim!r} are {dim_sizes}; zarr region writes need "
                f"equal chunks (the last may be smaller). Chunk the input evenly, e.g. "
                f"cube.chunk({{'mid_date': -1, {dim!r}: {dim_sizes[0]}}}), before inverting"
            )
    rechunked = {}
    for name in names:
        var = result[name]
        target = {d: (sizes[d] if d in sizes else -1) for d in var.dims}
        if var.chunks is None or any(var.chunksizes[d] != sizes[d] for d in var.dims if d in sizes):
            var = var.chunk(target)
        elif any(len(var.chunksizes[d]) > 1 for d in var.dims if d not in sizes):
            var = var.chunk(target)
        rechunked[name] = var
    result = result.assign(rechunked)
    for var in result.variables.values():
        # Chunks and codecs inherited from the source (e.g. zarr v2 Blosc on x/y) would clash
        # with the output's own; keep only what decoding needs.
        var.encoding = {k: v for k, v in var.encoding.items() if k in _KEPT_ENCODING}

    fingerprint = {
        "parameters": _jsonable(dict(result.attrs) if parameters is None else dict(parameters)),
        "variables": {
            n: {
                "dims": list(map(str, result[n].dims)),
                "shape": list(result[n].shape),
                "dtype": str(result[n].dtype),
            }
            for n in names
        },
        "coords": {
            str(n): coord_digest(np.asarray(result[n].values))
            for n in result.dims
            if n in result.coords
        },
        "chunks": {d: list(sizes[d]) for d in dims},
    }
    return _Plan(result, names, dims, sizes, fingerprint)


def _differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    out = []
    order = ["parameters", "variables", "coords", "chunks"]
    keys = sorted(set(stored) | set(wanted), key=lambda k: (order.index(k) if k in order else 9, k))
    for key in keys:
        a, b = stored.get(key, "<absent>"), wanted.get(key, "<absent>")
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{item}" for item in _differences(a, b)]
        else:
            out.append(f"{key} (store: {a!r}, this run: {b!r})")
    return out


# --------------------------------------------------------------------------- the writers


@dataclass(frozen=True)
class WriteSummary:
    """What a call to :func:`~xr_itslive.write_resumable` did.

    Parameters
    ----------
    store : str
        The store's URL, or its absolute path for a local store.
    n_chunks : int
        Chunks in the store, in all.
    n_skipped : int
        Chunks finished before this call (their done marker was there).
    n_written : int
        Chunks computed and written by this call.
    """

    store: str
    n_chunks: int
    n_skipped: int
    n_written: int

    @property
    def complete(self) -> bool:
        """Whether every chunk of the store is written."""
        return self.n_skipped + self.n_written == self.n_chunks

    @property
    def already_complete(self) -> bool:
        """Whether the store was complete before this call (nothing was computed)."""
        return self.n_skipped == self.n_chunks


@dataclass(frozen=True)
class StoreStatus:
    """The progress recorded in a resumable store (see :func:`store_status`).

    Parameters
    ----------
    store : str
        The store's URL, or its absolute path for a local store.
    n_chunks : int
        Chunks in the store, in all.
    n_done : int
        Chunks with a done marker.
    parameters : dict
        The run's parameters as recorded in the store (see :func:`~xr_itslive.write_resumable`).
    """

    store: str
    n_chunks: int
    n_done: int
    parameters: dict[str, Any]

    @property
    def complete(self) -> bool:
        """Whether every chunk of the store is written."""
        return self.n_done == self.n_chunks


def store_status(store: str | os.PathLike, storage_options: Mapping[str, Any] | None = None):
    """Progress of a resumable store, or None when ``store`` holds no write record.

    Parameters
    ----------
    store : str or path-like
        Local path or URL (``s3://bucket/out.zarr``, any fsspec protocol) of a store written
        by :func:`~xr_itslive.write_resumable` or :func:`xr_itslive.invert_to_zarr`.
    storage_options : mapping, optional
        fsspec options for a URL (credentials, endpoint...); not allowed with a local path.

    Returns
    -------
    StoreStatus or None

    Examples
    --------
    >>> store_status("/nonexistent/out.zarr") is None
    True
    """
    target = _target(store, storage_options)
    record = _read_record(target)
    if record is None:
        return None
    return StoreStatus(
        target.url,
        int(record["n_chunks"]),
        len(_done_chunks(target)),
        record["fingerprint"]["parameters"],
    )


def _write_chunk(
    target: _Target,
    layout: dict[str, tuple[str, ...]],
    region: dict[str, slice],
    index: tuple[int, ...],
    *blocks: Any,
) -> tuple[int, ...]:
    """Write one chunk of every variable (a zarr region write), then its done marker."""
    started = time.time()
    data = {
        name: (dims, to_numpy(block))  # GPU (CuPy) chunks are copied to the host here
        for (name, dims), block in zip(layout.items(), blocks, strict=True)
    }
    chunk = xr.Dataset(data)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        chunk.to_zarr(target.url, region=region, mode="r+", **target.xarray_kwargs())
    # Only after the data are stored does the chunk count as done.
    marker = {
        "chunk": list(index),
        "region": {d: [s.start, s.stop] for d, s in region.items()},
        "written_at": _dt.datetime.now(_dt.UTC).isoformat(),
        "write_seconds": round(time.time() - started, 4),
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    payload = json.dumps(marker).encode()
    path = target.marker_path(index)
    if target.is_local:
        # a marker cut short by a kill must not exist: write aside, then rename
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.partial-{os.getpid()}"
        with open(partial, "wb") as file:
            file.write(payload)
        os.replace(partial, path)
    else:
        target.filesystem()[0].pipe(path, payload)  # one PUT: all or nothing
    return index


def _write_template(plan: _Plan, target: _Target) -> None:
    import zarr

    template = plan.result.copy()
    template.attrs[STORE_ATTR] = (
        f"written chunk by chunk by xr_itslive; progress records in {MARKER_GROUP}/"
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        template.to_zarr(target.url, mode="w", compute=False, **target.xarray_kwargs())
    root = zarr.open_group(target.zarr_store(), mode="r")
    record = {
        "format": RECORD_FORMAT,
        "n_chunks": plan.n_chunks,
        "dims": list(plan.dims),
        "fingerprint": plan.fingerprint,
    }
    # The record group is written last: its presence means the template is complete.
    zarr.open_group(
        target.zarr_store(),
        path=MARKER_GROUP,
        mode="w",
        zarr_format=root.metadata.zarr_format,
        attributes={"record": json.dumps(record, sort_keys=True)},
    )


def _progress_bar(total: int, initial: int, store: str, enabled: bool):
    from tqdm.auto import tqdm  # a widget in notebooks, a text bar in terminals

    return tqdm(
        total=total,
        initial=initial,
        desc=f"writing {os.path.basename(store.rstrip('/')) or store}",
        unit="chunk",
        disable=not enabled,
        dynamic_ncols=True,
    )


def _compute(tasks: list[Any], scheduler: Any, bar: Any) -> None:
    import dask
    from dask.callbacks import Callback

    with scheduler_context(scheduler) as client:
        if client is None:

            def count(key, *_):
                if isinstance(key, str) and key.startswith(TASK_PREFIX):
                    bar.update(1)

            with Callback(posttask=count):
                dask.compute(*tasks, scheduler=local_scheduler_name(scheduler))
            return
        from distributed import as_completed

        futures = client.compute(tasks)
        try:
            for future in as_completed(futures):
                future.result()  # raises the task's error here
                bar.update(1)
        finally:
            client.cancel([f for f in futures if not f.done()])


def write_resumable(
    result: xr.Dataset,
    store: str | os.PathLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    parameters: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    scheduler: Any = None,
    progress: bool = True,
    dims: Sequence[Hashable] = ("y", "x"),
    chunks: Mapping[Hashable, int] | None = None,
) -> WriteSummary:
    """Write a lazy result to zarr chunk by chunk, skipping chunks a previous run finished.

    Parameters
    ----------
    result
        The Dataset to write, typically lazy (dask) with dims ``(time, y, x)`` and chunked in
        space, as :func:`xr_itslive.invert` returns it. Every spatial chunk becomes one task
        that computes and writes it.
    store
        Local path or URL (``s3://bucket/out.zarr``, any fsspec protocol). With a cluster, the
        workers must reach it (a local path then needs a shared file system).
    storage_options
        fsspec options for a URL (credentials, endpoint...).
    parameters
        What identifies the run, recorded in the store and compared on resume. Default: the
        result's attributes (:func:`~xr_itslive.invert` records all its parameters there).
        The shapes, dtypes, dimension coordinates and chunks are always compared too.
    overwrite
        Delete whatever is at ``store`` first. Otherwise an unfinished store from the same run
        is resumed, a finished one is left as is, and anything else is refused.
    scheduler
        Where to compute: see :func:`xr_itslive.get_client` (None: a running
        distributed Client, else dask's threads; ``"local"``; an address; a ``Client``; a
        Dask Gateway cluster).
    progress
        Show a progress bar (tqdm: a widget in notebooks, text elsewhere), counted in chunks.
    dims
        The dimensions written chunk by chunk; the others are written whole with each chunk.
    chunks
        Chunk sizes for variables that are not dask-backed (default: one chunk).

    Returns
    -------
    WriteSummary
        Chunks in the store, skipped (done before) and written now.

    Raises
    ------
    StoreConflictError
        ``store`` holds another run (other parameters, data or chunks) or data not written by
        xr_itslive; the message names what differs. Use a new store or ``overwrite=True``.
    ChunkingError
        The chunks are uneven along a written dimension.

    Examples
    --------
    >>> import tempfile, xr_itslive
    >>> from xr_itslive.synthetic import synthetic_cube
    >>> cube = synthetic_cube(n_pairs=300, ny=4, nx=4, chunks={"y": 2, "x": 2})
    >>> result = xr_itslive.invert(cube, step=30)
    >>> out = tempfile.mkdtemp() + "/result.zarr"
    >>> write_resumable(result, out, progress=False).n_written
    4
    >>> write_resumable(result, out, progress=False).already_complete
    True
    """
    import dask

    target = _target(store, storage_options)
    plan = _plan(result, dims, chunks, parameters)
    if overwrite:
        _remove(target)
    record = _read_record(target)
    if record is None:
        kind = _root_kind(target)
        if kind in ("zarr", "other"):
            what = "a zarr store not written by xr_itslive" if kind == "zarr" else "other files"
            raise StoreConflictError(
                f"{target.url} already holds {what} (no {MARKER_GROUP}/ write record), expected "
                "a new path or a store started by write_resumable/invert_to_zarr. Write to a new "
                "store, or pass overwrite=True (CLI: --overwrite) to delete it and start again"
            )
        _write_template(plan, target)  # 'absent', or our template cut short: start over
        done: set[tuple[int, ...]] = set()
    else:
        if record.get("fingerprint") != plan.fingerprint:
            diffs = _differences(record.get("fingerprint", {}), plan.fingerprint)
            raise StoreConflictError(
                f"{target.url} holds a run with other settings: "
                f"{'; '.join(diffs[:8])}{' ...' if len(diffs) > 8 else ''}. Expected the same "
                "parameters, data and chunks to resume. Write to a new store, or pass "
                "overwrite=True (CLI: --overwrite) to discard it and start again"
            )
        done = _done_chunks(target)

    remaining = [index for index in plan.indices() if index not in done]
    n_skipped = plan.n_chunks - len(remaining)
    if remaining:
        # Unoptimized on purpose: fusing each array's graph on its own would give the blocks
        # they share (vx feeds vx, v and n_obs) different keys, and compute them again.
        blocks = {n: plan.result[n].data.to_delayed(optimize_graph=False) for n in plan.names}
        layout = {n: tuple(map(str, plan.result[n].dims)) for n in plan.names}
        token = dask.base.tokenize(target.url, plan.fingerprint)
        writer = dask.delayed(_write_chunk, pure=False)
        tasks = []
        for index in remaining:
            position = dict(zip(plan.dims, index, strict=True))
            args = [blocks[n][tuple(position.get(d, 0) for d in layout[n])] for n in plan.names]
            key = f"{TASK_PREFIX}-{token}-{_index_name(index)}"
            tasks.append(
                writer(target, layout, plan.region(index), index, *args, dask_key_name=key)
            )
        with _progress_bar(plan.n_chunks, n_skipped, target.url, progress) as bar:
            _compute(tasks, scheduler, bar)
    return WriteSummary(target.url, plan.n_chunks, n_skipped, len(remaining))
