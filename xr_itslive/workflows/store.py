"""Resumable zarr writes: a lazy result written chunk by chunk, restartable after a crash.

:func:`~xr_itslive.write_resumable` writes the metadata and coordinates of a lazy
``(time, y, x)`` result first, then computes and writes one spatial chunk per task (a zarr
region write).
After a chunk's data are written, the same task writes a small marker object under
``_xr_itslive/done/`` inside the store. A second call with the same result skips the chunks that
have a marker, so a killed run loses at most the chunks that were in flight. The run's
fingerprint is recorded in the store (``_xr_itslive`` group attributes): its parameters, the
variables' shapes, coordinates and chunks, and a token of every variable's values
(:func:`values_token`); resuming with another is refused.

One process writes a store at a time: it holds a lock object, ``xr_itslive.lock`` at the store's
root, from before it looks at the store until its last chunk is written. A second writer on the
same store stops with a message naming the first (or waits for it, see ``lock_timeout``); a lock
left by a killed process is broken, with a warning: at once when its pid no longer runs on this
host, after ``STALE_AFTER_SECONDS`` (10 minutes) without a heartbeat when it comes from another
host.
The template is written after a partial marker (``xr_itslive.partial``) and before the record,
so a template a kill cut short is recognised and rebuilt, never taken for a foreign store.

Why a lock rather than an atomic template (write it aside, then rename): object stores such as
S3 have no rename, and racing templates are only half the problem; a run with
``overwrite=True`` deleting a store another process is filling is the other half. An exclusive
create exists where it matters: ``os.link`` of a finished file on local disks (atomic, NFS
included) and a conditional PUT (``If-None-Match: *``, fsspec's ``open(path, "xb")``) on S3.
Limits: on an fsspec file system without ``"xb"`` the lock is check-then-write (a warning says
so); a lock is judged by pid only on the host that wrote it (hosts are told apart by name, so
containers sharing a hostname but not a pid namespace look alike), and by its heartbeat
elsewhere, which needs clocks within minutes of each other. Each chunk task checks the lock is
still its run's before writing, so a writer whose lock was taken over stops.

:func:`~xr_itslive.invert_to_zarr` is :func:`xr_itslive.invert` followed by
:func:`~xr_itslive.write_resumable`.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import itertools
import json
import os
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from ..errors import (
    ChunkingError,
    DataAccessError,
    InvalidParameterError,
    StoreConflictError,
)
from ..kernels.namespace import to_numpy
from .cluster import local_scheduler_name, scheduler_context

#: Group inside the store that holds the write records (ignored by ``xr.open_zarr``).
MARKER_GROUP = "_xr_itslive"
#: Folder (under :data:`MARKER_GROUP`) with one marker object per finished chunk.
DONE_FOLDER = "done"
#: Root attribute that tells a resumable store from any other zarr store.
STORE_ATTR = "xr_itslive_store"
#: 2: the fingerprint identifies the values (``data``; ``input`` for invert_to_zarr). Stores of
#: format 1 cannot be checked against a run, and are refused (overwrite=True starts again).
RECORD_FORMAT = 2
_KEPT_ENCODING = ("units", "calendar", "dtype", "_FillValue", "scale_factor", "add_offset")
TASK_PREFIX = "xr-itslive-write"
#: Lock object at the store's root, held by the one process writing the store (see the module
#: docstring). Not a zarr key: zarr skips it (noting it when it lists the store's members).
LOCK_NAME = "xr_itslive.lock"
#: Written before the template and removed after the record: a template a kill cut short.
PARTIAL_NAME = "xr_itslive.partial"
#: How often a writer refreshes its lock, and how old a refresh must be before another host
#: may take the lock over. A process on the same host is checked directly (by its pid); the
#: heartbeat is for writers elsewhere (another machine, a cluster job, an S3 store shared
#: across hosts), and a long margin so that a busy writer is never taken for a dead one.
HEARTBEAT_SECONDS = 30.0
STALE_AFTER_SECONDS = 600.0
#: zarr's note on every non-zarr object it meets when listing a group (consolidating): ours.
_OWN_FILES_WARNING = r"Object at (xr_itslive\.(lock|partial)|done)\b.*not recognized"

__all__ = [
    "StoreStatus",
    "WriteSummary",
    "store_status",
    "write_resumable",
]


# --------------------------------------------------------------------------- store access


@dataclass(frozen=True)
class _Target:
    """A picklable handle on the store: URL or path plus fsspec options.

    An S3 store is reached through the readers' bounded filesystem
    (:func:`xr_itslive.io.s3.s3_output_filesystem`): a frozen endpoint fails a request after
    a few bounded attempts instead of s3fs's nested retries with default timeouts (15+
    minutes). Its options are resolved once, when the target is made, so dask workers write
    with the timeouts of the process that started the run.
    """

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith(("s3://", "s3a://"))

    def filesystem(self) -> tuple[Any, str]:
        if self.is_s3:
            from ..io.s3 import s3_output_filesystem

            fs = s3_output_filesystem(self.storage_options)
            return fs, fs._strip_protocol(self.url).rstrip("/")
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs, path.rstrip("/")

    @property
    def is_local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    def zarr_store(self, read_only: bool = False) -> Any:
        import zarr.storage

        if self.is_local:
            return zarr.storage.LocalStore(self.filesystem()[1], read_only=read_only)
        if self.is_s3:
            from ..io.s3 import s3_output_filesystem

            fs = s3_output_filesystem(self.storage_options, asynchronous=True)
            path = fs._strip_protocol(self.url).rstrip("/")
            return zarr.storage.FsspecStore(fs=fs, path=path, read_only=read_only)
        return zarr.storage.FsspecStore.from_url(
            self.url, storage_options=self.storage_options, read_only=read_only
        )

    def marker_path(self, index: tuple[int, ...]) -> str:
        fs_root = self.filesystem()[1]
        return f"{fs_root}/{_marker_key(index)}"


def _marker_key(index: tuple[int, ...]) -> str:
    return f"{MARKER_GROUP}/{DONE_FOLDER}/{_index_name(index)}.json"


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
    target = _Target(store, options)
    if target.is_s3:
        from ..io.urls import s3_storage_options

        # Bounded timeouts and retries, signed (credentials from the environment) unless the
        # user asks for anon=True; XR_ITSLIVE_S3_TIMEOUT is read here, once.
        target = _Target(store, s3_storage_options({"anon": False, **options}))
    return target


# --------------------------------------------------------------------------- storage errors


def _access_error(target: _Target, key: str, action: str, err: BaseException) -> Exception:
    """The :class:`~xr_itslive.errors.DataAccessError` for a failed ``action`` on ``key``."""
    from ..io.urls import S3_TIMEOUT_ENV

    where = f"{target.url.rstrip('/')}/{key}" if key else target.url
    if target.is_local:
        fix = "Check that the disk is mounted, writable and not full"
    else:
        fix = (
            "The storage did not answer, or refused the request, after bounded retries. Check "
            "the network, the endpoint (AWS_ENDPOINT_URL, or storage_options={'endpoint_url': "
            "...}) and that the credentials may write there; on a slow link raise the "
            f"per-attempt timeout: {S3_TIMEOUT_ENV}=<seconds> (default 15) or "
            "storage_options={'config_kwargs': {'read_timeout': <seconds>}}"
        )
    return DataAccessError(
        f"could not {action} {where}: {type(err).__name__}: {err}. {fix}; then run the same "
        "command again: it resumes, keeping the chunks already written."
    )


#: Errors that say what is (not) in the store, not that it could not be reached.
_ANSWERS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


@contextlib.contextmanager
def _storage_errors(target: _Target, key: str, action: str = "write") -> Iterator[None]:
    """Turn a storage error (timeout, connection, HTTP, disk) raised inside into a
    :class:`~xr_itslive.errors.DataAccessError` naming the store and ``key``, chained.

    Used around each operation on the store. Answers about what is there (``FileNotFoundError``,
    ``FileExistsError``, ``NotADirectoryError``, ``IsADirectoryError``) pass unchanged: the
    callers handle them (a missing lock, a lock taken meanwhile).
    """
    from ..io.faults import PASS_THROUGH, is_network_error

    try:
        yield
    except (*PASS_THROUGH, *_ANSWERS):
        raise
    except Exception as err:
        if not is_network_error(err):
            raise
        raise _access_error(target, key, action, err) from err


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
        with _storage_errors(target, f"{MARKER_GROUP}/{DONE_FOLDER}/", "list"):
            names = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return set()
    found = (_parse_index(name) for name in names if name.endswith(".json"))
    return {index for index in found if index is not None}


def _read_record(target: _Target) -> dict[str, Any] | None:
    """The write record of the store, or None when there is none."""
    import zarr

    try:
        with _storage_errors(target, f"{MARKER_GROUP}/ (the write record)", "read"):
            store = target.zarr_store(read_only=True)
            group = zarr.open_group(store, path=MARKER_GROUP, mode="r")
    except (FileNotFoundError, KeyError, ValueError, zarr.errors.GroupNotFoundError):
        return None
    record = dict(group.attrs).get("record")
    return json.loads(record) if isinstance(record, str) else None


def _ours(name: str) -> bool:
    """Whether a name at the store's root is one of the writer's own files (lock, partial
    marker, or what writing them aside leaves when a kill lands in between)."""
    return name.startswith((LOCK_NAME, PARTIAL_NAME))


def _root_kind(target: _Target) -> str:
    """'absent' (nothing there), 'partial' (a template cut short), 'ours' (template of a
    resumable write), 'zarr' or 'other'."""
    fs, root = target.filesystem()
    fs.invalidate_cache(root)
    try:
        with _storage_errors(target, "", "list"):
            names = [n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(root, detail=False)]
    except (FileNotFoundError, NotADirectoryError):
        with _storage_errors(target, "", "read"):
            return "other" if fs.exists(root) else "absent"
    if PARTIAL_NAME in names:
        return "partial"
    names = [n for n in names if not _ours(n)]
    if not names:
        return "absent"
    if not ({"zarr.json", ".zgroup", ".zattrs"} & set(names)):
        return "other"
    import zarr

    from ..io.faults import is_network_error

    try:
        attrs = dict(zarr.open_group(target.zarr_store(read_only=True), mode="r").attrs)
    except Exception as err:  # unreadable metadata: a template cut short while being written
        if is_network_error(err) and not isinstance(err, FileNotFoundError):
            # not the store's content but the way to it: never rebuild (clear) a store because
            # the endpoint did not answer
            raise _access_error(target, "zarr.json / .zgroup", "read", err) from err
        return "partial"
    return "ours" if STORE_ATTR in attrs else "zarr"


def _clear(target: _Target, keep: Sequence[str] = ()) -> None:
    """Delete everything in the store but the lock (held by the caller) and ``keep``."""
    fs, root = target.filesystem()
    fs.invalidate_cache(root)
    try:
        with _storage_errors(target, "", "list"):
            entries = fs.ls(root, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if not (name.startswith(LOCK_NAME) or name in keep):
            with _storage_errors(target, name, "delete"):
                fs.rm(entry, recursive=True)
    fs.invalidate_cache(root)


def _put(target: _Target, path: str, payload: bytes) -> None:
    """Write a small object whole or not at all: a reader never sees it cut short."""
    with _storage_errors(target, _key_of(target, path)):
        if target.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            partial = f"{path}.partial-{os.getpid()}-{threading.get_ident()}"
            with open(partial, "wb") as file:
                file.write(payload)
            os.replace(partial, path)
        else:
            target.filesystem()[0].pipe_file(path, payload)  # one PUT: all or nothing


def _key_of(target: _Target, path: str) -> str:
    """``path`` (of the target's filesystem) relative to the store's root, for messages."""
    root = target.filesystem()[1]
    return path[len(root) :].lstrip("/") if path.startswith(root) else path


# --------------------------------------------------------------------------- the lock


def _lock_path(target: _Target) -> str:
    return f"{target.filesystem()[1]}/{LOCK_NAME}"


def _process_start(pid: int) -> str | None:
    """When ``pid`` started (Linux clock ticks since boot), to tell a reused pid; else None."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int, started: str | None) -> bool:
    """Whether the process ``pid`` of this host still runs (and is the one that was ``started``)."""
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: trust the heartbeat
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to another user
        return True
    try:
        with open(f"/proc/{pid}/stat") as file:
            if file.read().rsplit(")", 1)[1].split()[0] == "Z":  # killed, not yet reaped
                return False
    except (OSError, IndexError):
        pass
    now = _process_start(pid)
    return started is None or now is None or now == started


def _read_lock(target: _Target) -> dict[str, Any] | None:
    """The lock's content; None when there is no lock, ``{"unreadable": ...}`` for garbage."""
    fs, _ = target.filesystem()
    try:
        with _storage_errors(target, LOCK_NAME, "read"):
            raw = fs.cat_file(_lock_path(target))
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        info = json.loads(raw)
        if not isinstance(info, dict) or "token" not in info:
            raise ValueError("no token")
    except ValueError:
        try:
            modified = fs.modified(_lock_path(target)).timestamp()
        except Exception:  # not every file system knows, or the lock went meanwhile
            modified = None
        return {"unreadable": raw[:80].decode(errors="replace"), "modified": modified}
    return info


#: The tokens of the locks this process holds (or is taking) now.
_HELD_TOKENS: set[str] = set()


def _stale_reason(info: Mapping[str, Any]) -> str | None:
    """Why the lock ``info`` belongs to no live writer, or None when it may."""
    if "unreadable" in info:
        # An exclusive open creates the lock a moment before its content is written: give a
        # writer that moment before calling its lock garbage.
        modified = info.get("modified")
        if modified is not None and time.time() - modified < 10.0:
            return None
        return f"it is unreadable ({info['unreadable']!r}), not a lock this library wrote"
    age = time.time() - float(info.get("heartbeat_unix", 0.0))
    if info.get("host") == socket.gethostname():
        pid = int(info.get("pid", -1))
        if not _pid_alive(pid, info.get("pid_start")):
            return f"its process (pid {pid}) no longer runs on this host"
        if pid == os.getpid() and info.get("token") not in _HELD_TOKENS:
            # A run of this very process (a notebook's kernel, say) ended without removing
            # it, the storage not answering: no writer holds it, though its pid lives.
            return "an earlier run of this process left it (it could not be removed then)"
    if age > STALE_AFTER_SECONDS:
        return (
            f"its writer last refreshed it {age / 60:.0f} minutes ago (a live writer does every "
            f"{HEARTBEAT_SECONDS:.0f} s)"
        )
    return None


def _describe_writer(info: Mapping[str, Any]) -> str:
    if "unreadable" in info:
        return "an unreadable lock"
    age = time.time() - float(info.get("heartbeat_unix", 0.0))
    return (
        f"pid {info.get('pid')} on host {info.get('host')!r}, started {info.get('started_at')}, "
        f"last heartbeat {age:.0f} s ago, command {info.get('command', '?')!r}"
    )


def _busy_message(target: _Target, info: Mapping[str, Any]) -> str:
    return (
        f"{target.url} is being written by another process ({_describe_writer(info)}); it holds "
        f"the lock {_lock_path(target)}. One writer at a time: wait for that run to finish, "
        "then run this command again (it resumes, or says the store is complete); "
        "overwrite=True (CLI: --overwrite) does not take a live writer's store. If that process "
        "is gone, its lock is broken on the next run: at once on the same host, after "
        f"{STALE_AFTER_SECONDS / 60:.0f} minutes without a heartbeat from another host; or "
        "delete the lock by hand"
    )


class _StoreLock:
    """The right to write one store, held by one process (a context manager).

    The lock is an object at the store's root created with exclusive-create semantics; its
    content (pid, host, times, command, a random token) lets another process tell a live
    writer from a killed one, and lets the holder's chunk tasks check the store is still theirs.
    """

    def __init__(self, target: _Target, timeout: float | None = 0.0) -> None:
        self.target = target
        self.timeout = timeout
        self.token = uuid.uuid4().hex
        self.path = _lock_path(target)
        self.created_root = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        self.info: dict[str, Any] = {
            "token": self.token,
            "pid": os.getpid(),
            "pid_start": _process_start(os.getpid()),
            "host": socket.gethostname(),
            "started_at": started,
            "heartbeat_unix": time.time(),
            # the program only: arguments may hold credentials (--storage-option)
            "command": os.path.basename(sys.argv[0]) if sys.argv else "",
        }

    def payload(self) -> bytes:
        return json.dumps(self.info, sort_keys=True).encode()

    # -- taking the lock

    def _create(self) -> bool:
        """Create the lock if there is none; whether this call created it."""
        fs, root = self.target.filesystem()
        if self.target.is_local:
            if not os.path.isdir(root):
                try:
                    os.makedirs(root)
                    self.created_root = True
                except FileExistsError:
                    if not os.path.isdir(root):
                        raise StoreConflictError(
                            f"{self.target.url} is a file, expected a new path or a store started "
                            "by write_resumable/invert_to_zarr. Write to a new store, or pass "
                            "overwrite=True (CLI: --overwrite) to delete it and start again"
                        ) from None
            # Written aside, then hard-linked: link fails when the lock exists (atomic on local
            # disks and NFS), and the lock never exists without its content.
            aside = f"{self.path}.{self.token}.tmp"
            with open(aside, "wb") as file:
                file.write(self.payload())
            try:
                os.link(aside, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:  # no hard links here (some FUSE, FAT...): exclusive open instead
                try:
                    descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    return False
                with os.fdopen(descriptor, "wb") as file:
                    file.write(self.payload())
                return True
            finally:
                os.unlink(aside)
        try:
            created = self._open_exclusive(fs)
        except FileNotFoundError:  # a file system with folders, and the store's not made yet
            fs.makedirs(root, exist_ok=True)
            created = self._open_exclusive(fs)
        if not created:
            return False
        current = _read_lock(self.target)
        return current is not None and current.get("token") == self.token

    def _open_exclusive(self, fs: Any) -> bool:
        """fsspec's exclusive create (``"xb"``): a conditional PUT (``If-None-Match: *``) on
        S3, ``O_EXCL`` on local disks; whether this call created the lock."""
        try:
            with fs.open(self.path, "xb") as file:
                file.write(self.payload())
            return True
        except FileExistsError:
            return False
        except (TypeError, NotImplementedError, ValueError):
            pass
        # This file system has no exclusive create: check, then write. Two writers starting in
        # the same instant may then both pass; the read-back after this and the check before
        # each chunk catch most, not all, such races.
        warnings.warn(
            f"{type(fs).__name__} has no exclusive create (open(path, 'xb')); the lock on "
            f"{self.target.url} cannot fully stop two writers starting in the same instant",
            RuntimeWarning,
            stacklevel=5,
        )
        if fs.exists(self.path):
            return False
        fs.pipe_file(self.path, self.payload())
        return True

    def _break(self, info: Mapping[str, Any], reason: str) -> None:
        """Remove the stale lock ``info`` (and only it, not a fresh one taken meanwhile)."""
        warnings.warn(
            f"breaking the lock {self.path} ({_describe_writer(info)}): {reason}. Writing on: "
            "chunks that process finished are kept",
            RuntimeWarning,
            stacklevel=4,
        )
        fs, _ = self.target.filesystem()
        if self.target.is_local:
            # A rename moves exactly one file: if two processes break the same lock, one rename
            # fails; if a third took a fresh lock in between, it is put back.
            aside = f"{self.path}.stale-{uuid.uuid4().hex}"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return
            moved = _read_lock_file(aside)
            if moved.get("token") != info.get("token"):
                try:
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
            os.unlink(aside)
        else:
            current = _read_lock(self.target)
            if current is not None and current.get("token") == info.get("token"):
                with _storage_errors(self.target, LOCK_NAME, "remove"):
                    fs.rm(self.path)

    def acquire(self) -> _StoreLock:
        _HELD_TOKENS.add(self.token)  # before the lock exists: never judged stale meanwhile
        try:
            return self._acquire()
        except BaseException:
            _HELD_TOKENS.discard(self.token)
            raise

    def _acquire(self) -> _StoreLock:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        announced = False
        broken = 0
        while True:
            self.info["heartbeat_unix"] = time.time()
            with _storage_errors(self.target, LOCK_NAME, "create"):
                created = self._create()
            if created:
                break
            info = _read_lock(self.target)
            if info is None:  # released in between: try again
                time.sleep(0.01)
                continue
            reason = _stale_reason(info)
            if reason is not None and broken < 20:  # more: something removes nothing, say so
                broken += 1
                try:
                    self._break(info, reason)
                except OSError as err:
                    raise StoreConflictError(
                        f"cannot remove the stale lock {self.path} ({reason}): {err}. Delete "
                        "it by hand, then run again"
                    ) from err
                continue
            if reason is not None:
                raise StoreConflictError(
                    f"the stale lock {self.path} ({reason}) keeps coming back after being "
                    "removed; delete it by hand, then run again"
                )
            if deadline is not None and time.monotonic() >= deadline:
                raise StoreConflictError(_busy_message(self.target, info))
            if not announced:
                warnings.warn(
                    f"waiting for another writer of {self.target.url} "
                    f"({_describe_writer(info)}) to finish",
                    RuntimeWarning,
                    stacklevel=3,
                )
                announced = True
            time.sleep(0.5)
        self._thread = threading.Thread(
            target=self._beat, name=f"xr-itslive-lock-{self.token[:8]}", daemon=True
        )
        self._thread.start()
        return self

    # -- holding it

    def _beat(self) -> None:
        """Refresh the lock's heartbeat until released, while the lock is still this run's."""
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                current = _read_lock(self.target)
                if current is None or current.get("token") != self.token:
                    return  # taken over: the chunk tasks see it and stop
                self.info["heartbeat_unix"] = time.time()
                _put(self.target, self.path, self.payload())
            except Exception:  # a network error: the next beat tries again
                continue

    def release(self, unreachable: bool = False) -> None:
        """Remove the lock, if still this run's; with ``unreachable`` (the run ended because
        the storage did not answer) leave it: asking again would only wait as long once more
        before the error reaches the user, and the next run breaks it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        if unreachable:
            warnings.warn(
                f"left the lock {self.path}: the storage did not answer. The next run breaks it "
                "(at once on this host, this process included; from another host after "
                f"{STALE_AFTER_SECONDS / 60:.0f} minutes), or delete it by hand",
                RuntimeWarning,
                stacklevel=3,
            )
            _HELD_TOKENS.discard(self.token)
            return
        try:
            current = _read_lock(self.target)
            if current is not None and current.get("token") == self.token:
                with _storage_errors(self.target, LOCK_NAME, "remove"):
                    self.target.filesystem()[0].rm(self.path)
        except OSError as err:  # never hide the error that ended the run behind this one
            # (DataAccessError, for a storage that does not answer, is an OSError too)
            warnings.warn(
                f"could not remove the lock {self.path} ({err}); the next run breaks it (at once "
                "on this host, this process included; from another host after "
                f"{STALE_AFTER_SECONDS / 60:.0f} minutes), or delete it by hand",
                RuntimeWarning,
                stacklevel=3,
            )
        _HELD_TOKENS.discard(self.token)
        if self.created_root:
            try:  # a run refused before writing anything leaves no empty folder behind
                os.rmdir(self.target.filesystem()[1])
            except OSError:
                pass

    def __enter__(self) -> _StoreLock:
        return self.acquire()

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        from ..io.faults import is_unreachable

        cause = getattr(error, "__cause__", None)
        self.release(
            isinstance(error, DataAccessError) and cause is not None and is_unreachable(cause)
        )


def _read_lock_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            return json.loads(file.read())
    except (OSError, ValueError):
        return {}


def _check_lock(target: _Target, token: str, index: tuple[int, ...]) -> None:
    """Stop a chunk task whose run no longer holds the store (its lock was broken)."""
    current = _read_lock(target)
    if current is None or current.get("token") != token:
        holder = "no lock" if current is None else _describe_writer(current)
        raise StoreConflictError(
            f"this run lost the lock on {target.url} (it now holds {holder}) and stopped "
            f"before writing chunk {_index_name(index)}: another run took the store over, "
            "judging this one dead. Chunks this run finished are kept; run the command again "
            "once the other run is done, to check or resume the store"
        )


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


def values_token(variable: xr.Variable) -> str:
    """What identifies the values of ``variable``, deterministically and computing nothing.

    dask's token: for a dask array its name, which encodes its graph (the store read and every
    operation applied: ``cube.where(...)`` or ``vx + 100`` give another one); for data in
    memory (numpy) a hash of the content; for a variable opened lazily without dask, its
    backend wrapper (store, array metadata, indexing), since ``.data`` would read it. The same
    in every process (``PYTHONHASHSEED`` included), so a resumed run in a new process matches.
    A store's content on disk is not in a graph's name: see :func:`sources_identity`.

    Parameters
    ----------
    variable : xarray.Variable
        A variable of a cube or of a result.

    Returns
    -------
    str
        32 hex digits.

    Raises
    ------
    InvalidParameterError
        The data are of a kind dask cannot hash deterministically.
    """
    import dask
    from dask.base import tokenize

    if variable.chunks is not None or variable._in_memory:
        data = variable.data
    else:  # lazily indexed backend array: ``.data`` would load it
        data = variable._data
    try:
        with dask.config.set({"tokenize.ensure-deterministic": True}):
            return tokenize(tuple(map(str, variable.dims)), data)
    except RuntimeError as err:  # dask's TokenizationError
        raise InvalidParameterError(
            f"the values of a {type(data).__name__} variable cannot be identified for a "
            f"resumable store ({err}); pass numpy- or dask-backed data (e.g. .load() or "
            ".chunk() it first)"
        ) from err


def _zarr_arrays(variable: xr.Variable) -> list[Any]:
    """The zarr arrays ``variable`` is read from: the arrays dask's graph starts from (each
    a layer of one key holding xarray's lazy wrapper), or the one a lazy variable wraps."""
    from dask.highlevelgraph import MaterializedLayer

    from ..io.faults import zarr_array_of

    if variable.chunks is None:
        found = None if variable._in_memory else zarr_array_of(variable._data)
        return [] if found is None else [found]
    graph = getattr(variable.data, "dask", None)
    arrays = []
    for layer in getattr(graph, "layers", {}).values():
        # Only one-key layers: a Blockwise layer would be materialized by looking inside it.
        if not isinstance(layer, MaterializedLayer) or len(layer) != 1:
            continue
        for value in layer.values():
            found = zarr_array_of(getattr(value, "value", value))  # a DataNode holds its value
            if found is not None:
                arrays.append(found)
    return arrays


def _store_text(store: Any) -> str:
    root = getattr(store, "root", None)
    if root is not None:  # zarr's LocalStore
        return os.fspath(root)
    fs, path = getattr(store, "fs", None), getattr(store, "path", None)
    if fs is not None and isinstance(path, str):
        return fs.unstrip_protocol(path)
    return str(store)


def _local_folder(store: Any) -> str | None:
    """The folder on this machine that holds ``store``, or None for a remote store."""
    root = getattr(store, "root", None)
    if root is not None:
        return os.fspath(root)
    fs, path = getattr(store, "fs", None), getattr(store, "path", None)
    protocol = getattr(fs, "protocol", None)
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol or ())
    return path if isinstance(path, str) and {"file", "local"} & set(protocols) else None


def _files_digest(folder: str) -> tuple[str, int]:
    """A digest of every file under ``folder``: relative path, size and modification time
    (one stat each, nothing read), and how many files there are."""
    entries = []
    for here, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(here, name)
            try:
                stat = os.stat(path)
            except FileNotFoundError:  # removed meanwhile
                continue
            relative = os.path.relpath(path, folder)
            entries.append(f"{relative}\x1f{stat.st_size}\x1f{stat.st_mtime_ns}")
    entries.sort()
    return hashlib.sha256("\x1e".join(entries).encode()).hexdigest()[:16], len(entries)


#: The documents that hold a zarr store's (consolidated) metadata, v2 and v3.
_ROOT_METADATA = (".zmetadata", "zarr.json")


def _root_metadata_digest(store: Any, source: str) -> str | None:
    """A digest of the store's consolidated metadata document (one small read), or None."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    from ..io.faults import is_network_error, read_error

    for key in _ROOT_METADATA:
        try:
            found = sync(store.get(key, prototype=default_buffer_prototype()))
        except (FileNotFoundError, KeyError):
            continue
        except Exception as err:
            if not is_network_error(err):
                raise
            raise read_error(source, [key], err) from err  # the store's URL and the key
        if found is not None:
            return hashlib.sha256(found.to_bytes()).hexdigest()[:16]
    return None


def sources_identity(variables: Sequence[xr.Variable]) -> dict[str, dict[str, Any]]:
    """What identifies the zarr stores ``variables`` are read from, cheaply.

    For each store (found in the variables' dask graphs: the path actually read, not an
    attribute naming where the cube came from): its location, a digest of its consolidated
    metadata (``.zmetadata`` or ``zarr.json``, one small read), and for each array read a
    digest of its metadata and, on a local disk, of every chunk file's size and modification
    time (one stat each, nothing read), so that values rewritten in place are told apart.
    The chunks of a remote store are not listed (one request per 1,000 chunks on every run).

    Parameters
    ----------
    variables : sequence of xarray.Variable
        The variables a job reads (a cube's, or a result's: its graph holds the cubes').

    Returns
    -------
    dict
        ``{location: {"metadata": ..., "arrays": {path: ...}}}`` per store (keyed, so that a
        refused resume names the store and array that differ); empty for data in memory.

    Raises
    ------
    DataAccessError
        The store's metadata could not be read (the storage did not answer in time).
    """
    stores: dict[str, tuple[Any, dict[str, Any]]] = {}
    for variable in variables:
        for array in _zarr_arrays(variable):
            text = _store_text(array.store)
            stores.setdefault(text, (array.store, {}))[1].setdefault(array.path, array)
    out = {}
    for text in sorted(stores):
        store, arrays = stores[text]
        folder = _local_folder(store)
        described = {}
        for path in sorted(arrays):
            metadata = json.dumps(arrays[path].metadata.to_dict(), sort_keys=True, default=str)
            entry: dict[str, Any] = {"metadata": hashlib.sha256(metadata.encode()).hexdigest()[:16]}
            if folder is not None:
                entry["files"], entry["n_files"] = _files_digest(os.path.join(folder, path))
            described[path] = entry
        out[text] = {"metadata": _root_metadata_digest(store, text), "arrays": described}
    return out


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
        # What the values are (their graph, or their content in memory): the same attributes
        # and coordinates with other numbers are another run.
        "data": {str(n): values_token(v) for n, v in result.variables.items()},
    }
    return _Plan(result, names, dims, sizes, fingerprint)


def _differences(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    out = []
    order = ["parameters", "variables", "coords", "chunks", "data"]
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
    writer : dict or None
        The process writing the store now, as its lock describes it (``pid``, ``host``,
        ``started_at``, ``command``...), or None when no process holds the lock.
    """

    store: str
    n_chunks: int
    n_done: int
    parameters: dict[str, Any]
    writer: dict[str, Any] | None = None

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
    lock = _read_lock(target)
    return StoreStatus(
        target.url,
        int(record["n_chunks"]),
        len(_done_chunks(target)),
        record["fingerprint"]["parameters"],
        None if lock is None else {k: v for k, v in lock.items() if k != "token"},
    )


def _write_chunk(
    target: _Target,
    token: str,
    layout: dict[str, tuple[str, ...]],
    region: dict[str, slice],
    index: tuple[int, ...],
    *blocks: Any,
) -> tuple[int, ...]:
    """Write one chunk of every variable (a zarr region write), then its done marker.

    A storage error (a frozen endpoint, a full disk) comes out as a
    :class:`~xr_itslive.errors.DataAccessError` naming the store and the key being written.
    """
    started = time.time()
    _check_lock(target, token, index)  # one small read: never write into a store taken over
    from xarray.backends.zarr import encode_zarr_variable

    with _storage_errors(target, "(the arrays' metadata)", "open"):
        arrays, zarr_format = _stored_arrays(target, token, tuple(layout))
    for (name, dims), block in zip(layout.items(), blocks, strict=True):
        array, encoding = arrays[name]
        # GPU (CuPy) chunks are copied to the host here; encoded as xarray encodes a region
        # write (with the stored variable's encoding: dtype, fill value)
        variable = xr.Variable(dims, to_numpy(block), encoding=dict(encoding))
        encoded = encode_zarr_variable(variable, name=name, zarr_format=zarr_format)
        if encoded.dtype != array.dtype:
            raise TypeError(
                f"{name} encodes to {encoded.dtype} but {target.url} stores {array.dtype}"
            )
        selection = tuple(region.get(d, slice(None)) for d in dims)
        with _storage_errors(target, _chunk_key(array, selection)):
            array[selection] = np.asarray(encoded.data)
    # Only after the data are stored does the chunk count as done.
    marker = {
        "chunk": list(index),
        "region": {d: [s.start, s.stop] for d, s in region.items()},
        "written_at": _dt.datetime.now(_dt.UTC).isoformat(),
        "write_seconds": round(time.time() - started, 4),
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    _put(target, target.marker_path(index), json.dumps(marker).encode())  # never cut short
    return index


def _chunk_key(array: Any, selection: tuple[slice, ...]) -> str:
    """The store key(s) of the chunks of the zarr ``array`` that ``selection`` covers."""
    try:
        ranges = []
        for sel, size, length in zip(selection, array.chunks, array.shape, strict=True):
            start, stop, _ = sel.indices(length)
            ranges.append(range(start // size, max(stop - 1, start) // size + 1))
        keys = [array.metadata.encode_chunk_key(c) for c in itertools.product(*ranges)]
    except Exception:  # the message must come out even where the layout is not zarr's
        return str(array.path)
    prefix = f"{array.path.strip('/')}/" if array.path.strip("/") else ""
    shown = ", ".join(prefix + key for key in keys[:4])
    return shown + (f", … ({len(keys)} chunks)" if len(keys) > 4 else "")


#: Per process, the zarr arrays and stored encodings of the stores this process writes, keyed
#: by store and run (the lock's token): ``to_zarr(region=...)`` re-opened the store, read its
#: metadata and checked the region for every chunk.
_STORED: dict[tuple[str, str], tuple[dict[str, tuple[Any, dict]], int]] = {}
_STORED_LOCK = threading.Lock()


def _stored_arrays(target: _Target, token: str, names: tuple[str, ...]) -> tuple[dict, int]:
    """The zarr arrays of ``names`` in ``target`` with their encodings, opened once per run,
    and the store's zarr format."""
    import zarr

    key = (target.url, token)
    with _STORED_LOCK:
        found = _STORED.get(key)
        if found is not None and all(n in found[0] for n in names):
            return found
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            warnings.filterwarnings("ignore", message=_OWN_FILES_WARNING)
            group = zarr.open_group(target.zarr_store(), mode="r+")
            # the encodings xarray would apply, decoded from the store as to_zarr(region=) does
            stored = xr.open_zarr(target.zarr_store(read_only=True), chunks=None)
        arrays = {n: (group[n], dict(stored[n].encoding)) for n in names}
        found = (arrays, group.metadata.zarr_format)
        while len(_STORED) >= 4:  # a long-lived worker writing many stores
            _STORED.pop(next(iter(_STORED)))
        _STORED[key] = found
        return found


def _write_template(plan: _Plan, target: _Target) -> None:
    """Write the store's metadata and coordinates, then its record; the caller holds the lock."""
    import zarr

    fs, root_path = target.filesystem()
    # The partial marker first: until the record exists, whatever a kill leaves here is known
    # to be an unfinished template (rebuilt by the next run), not somebody else's zarr store.
    started = {"pid": os.getpid(), "host": socket.gethostname(), "at": time.time()}
    _put(target, f"{root_path}/{PARTIAL_NAME}", json.dumps(started).encode())
    _clear(target, keep=(PARTIAL_NAME,))  # what a killed run left; never the lock
    template = plan.result.copy()
    template.attrs[STORE_ATTR] = (
        f"written chunk by chunk by xr_itslive; progress records in {MARKER_GROUP}/"
    )
    # A remote store goes through our own zarr store (its filesystem bounded), not a URL that
    # xarray would open with s3fs's defaults.
    where = target.url if target.is_local else target.zarr_store()
    with (
        warnings.catch_warnings(),
        _storage_errors(target, "(the template: zarr metadata and coordinates)"),
    ):
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        warnings.filterwarnings("ignore", message=_OWN_FILES_WARNING)
        # mode="a" on the emptied store, not "w": "w" deletes the whole store, lock included
        template.to_zarr(where, mode="a", compute=False)
        root = zarr.open_group(target.zarr_store(), mode="r")
    record = {
        "format": RECORD_FORMAT,
        "n_chunks": plan.n_chunks,
        "dims": list(plan.dims),
        "fingerprint": plan.fingerprint,
    }
    # The record group is written last: its presence means the template is complete.
    with _storage_errors(target, f"{MARKER_GROUP}/ (the write record)"):
        zarr.open_group(
            target.zarr_store(),
            path=MARKER_GROUP,
            mode="w",
            zarr_format=root.metadata.zarr_format,
            attributes={"record": json.dumps(record, sort_keys=True)},
        )
    with _storage_errors(target, PARTIAL_NAME, "remove"):
        fs.rm(f"{root_path}/{PARTIAL_NAME}")


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
    from dask.system import CPU_COUNT

    with scheduler_context(scheduler) as client:
        if client is None:

            def count(key, *_):
                if isinstance(key, str) and key.startswith(TASK_PREFIX):
                    bar.update(1)

            name = local_scheduler_name(scheduler)
            chosen = name or dask.config.get("scheduler", None) or "threads"
            threaded = chosen in ("threads", "threading")
            extra = {}
            if threaded and dask.config.get("num_workers", None) is None:
                # A task that reads waits while zarr's own threads read and decompress its
                # chunks: one thread more than the cores keeps them all busy meanwhile
                # (benchmarks/bench_whole_cube.py, docs/scaling.md). dask's num_workers
                # setting, where a user gave one, wins.
                extra["num_workers"] = CPU_COUNT + 1
            with Callback(posttask=count):
                dask.compute(*tasks, scheduler=name, **extra)
            return
        from distributed import as_completed

        futures = client.compute(tasks)
        pending = set(futures)
        try:
            for future in as_completed(futures):
                future.result()  # raises the task's error here
                bar.update(1)
                # Release it: a finished chunk is on disk with its marker, and a future the
                # client still holds is recomputed (and rewritten) when its worker dies.
                pending.discard(future)
                future.release()
        finally:
            client.cancel([f for f in pending if not f.done()])


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
    lock_timeout: float | None = 0.0,
) -> WriteSummary:
    """Write a lazy result to zarr chunk by chunk, skipping chunks a previous run finished.

    One process writes a store at a time (it holds the lock ``xr_itslive.lock`` at the store's
    root); a lock left by a killed process is broken with a warning (see the module docstring).

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
        The shapes, dtypes, dimension coordinates and chunks are always compared too, and
        the values: dask's token of every variable
        (:func:`~xr_itslive.workflows.store.values_token`: its graph, or its content in
        memory), so another result with the same attributes is refused.
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
    lock_timeout
        Seconds to wait while another live process writes the same store: 0 (default) stops at
        once with a :class:`~xr_itslive.errors.StoreConflictError` naming that process; None
        waits as long as it takes (then resumes, or finds the store complete).

    Returns
    -------
    WriteSummary
        Chunks in the store, skipped (done before) and written now.

    Raises
    ------
    StoreConflictError
        ``store`` holds another run (other parameters, values or chunks), data not written by
        xr_itslive, or a store of an earlier release whose record cannot be checked; the
        message names what differs. Use a new store or ``overwrite=True``.
        Or another live process is writing ``store`` (and ``lock_timeout`` ran out): the
        message names it.
    DataAccessError
        The storage did not answer (after bounded retries on S3) or refused a read or write:
        the message names the store and the key; chained to the storage's own error.
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
    target = _target(store, storage_options)
    plan = _plan(result, dims, chunks, parameters)
    if not overwrite and _finished(target, plan):
        # Nothing to write: no lock taken, so read-only credentials can check a finished store.
        return WriteSummary(target.url, plan.n_chunks, plan.n_chunks, 0)
    if overwrite and target.is_local and os.path.isfile(target.filesystem()[1]):
        os.remove(target.filesystem()[1])  # a lone file is no store being written: no lock needed
    with _StoreLock(target, timeout=lock_timeout) as lock:
        return _write_locked(plan, target, lock.token, overwrite, scheduler, progress)


def _finished(target: _Target, plan: _Plan) -> bool:
    """Whether ``target`` holds this very run, complete, with no writer at work on it."""
    record = _read_record(target)
    if record is None or record.get("fingerprint") != plan.fingerprint:
        return False
    return set(plan.indices()) <= _done_chunks(target) and _read_lock(target) is None


def _write_locked(
    plan: _Plan, target: _Target, token: str, overwrite: bool, scheduler: Any, progress: bool
) -> WriteSummary:
    """The body of :func:`write_resumable`, run while holding the store's lock."""
    import dask

    if overwrite:
        _clear(target)
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
        if kind in ("partial", "ours"):
            warnings.warn(
                f"{target.url} holds a template that a killed run left unfinished (no "
                f"{MARKER_GROUP}/ write record yet); rebuilding it and writing every chunk",
                RuntimeWarning,
                stacklevel=3,
            )
        _write_template(plan, target)
        done: set[tuple[int, ...]] = set()
    else:
        written_format = int(record.get("format", 1))
        if written_format < RECORD_FORMAT:
            raise StoreConflictError(
                f"{target.url} was written by an earlier xr_itslive (write record format "
                f"{written_format}, this one writes {RECORD_FORMAT}) whose record does not "
                "identify the input's values, so whether it holds this run's numbers cannot be "
                "checked. Its data stay readable as they are (xarray.open_zarr); to compute them "
                "again pass overwrite=True (CLI: --overwrite), or write to a new store"
            )
        if record.get("fingerprint") != plan.fingerprint:
            diffs = _differences(record.get("fingerprint", {}), plan.fingerprint)
            values = any(d.startswith(("data.", "parameters.input")) for d in diffs)
            raise StoreConflictError(
                f"{target.url} holds a run with other settings or other input: "
                f"{'; '.join(diffs[:8])}{' ...' if len(diffs) > 8 else ''}. "
                + (
                    "The values differ: the input cube (its data, or the operations applied "
                    "to it) or an argument's content changed since the store was started. "
                    if values
                    else ""
                )
                + "Expected the same parameters, input values and chunks to resume. Write to a "
                "new store, or pass overwrite=True (CLI: --overwrite) to discard it and start "
                "again"
            )
        done = _done_chunks(target)
        fs, root = target.filesystem()
        with _storage_errors(target, PARTIAL_NAME, "remove"):
            if fs.exists(f"{root}/{PARTIAL_NAME}"):  # a kill between the record and its removal
                fs.rm(f"{root}/{PARTIAL_NAME}")

    remaining = [index for index in plan.indices() if index not in done]
    n_skipped = plan.n_chunks - len(remaining)
    if remaining:
        # Unoptimized on purpose: fusing each array's graph on its own would give the blocks
        # they share (vx feeds vx, v and n_obs) different keys, and compute them again.
        blocks = {n: plan.result[n].data.to_delayed(optimize_graph=False) for n in plan.names}
        layout = {n: tuple(map(str, plan.result[n].dims)) for n in plan.names}
        key_token = dask.base.tokenize(target.url, plan.fingerprint)
        writer = dask.delayed(_write_chunk, pure=False)
        tasks = []
        for index in remaining:
            position = dict(zip(plan.dims, index, strict=True))
            args = [blocks[n][tuple(position.get(d, 0) for d in layout[n])] for n in plan.names]
            key = f"{TASK_PREFIX}-{key_token}-{_index_name(index)}"
            region = plan.region(index)
            tasks.append(writer(target, token, layout, region, index, *args, dask_key_name=key))
        with _progress_bar(plan.n_chunks, n_skipped, target.url, progress) as bar:
            _compute(tasks, scheduler, bar)
    return WriteSummary(target.url, plan.n_chunks, n_skipped, len(remaining))
