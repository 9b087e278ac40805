"""Several writers on one store, and stores left by killed runs: never stuck, never corrupt.

Everything here runs real processes: ``xr-itslive invert`` (``xr_itslive.cli.main``) started
several times at the same instant on one new store, writers killed with SIGKILL at chosen points
of the template, writers holding a store while another one arrives.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import xarray as xr
from conftest import REPO, make_bucket

import xr_itslive
from xr_itslive.cli import main
from xr_itslive.errors import StoreConflictError
from xr_itslive.synthetic import synthetic_cube
from xr_itslive.workflows.store import (
    LOCK_NAME,
    MARKER_GROUP,
    PARTIAL_NAME,
    store_status,
    write_resumable,
)

BUCKET = "xr-itslive-concurrency-tests"
CUBE_OPTIONS = dict(n_pairs=300, ny=4, nx=8, seed=3, chunks={"y": 2, "x": 2})  # 8 chunks
STEP = 30.0
BUSY = r"is being written by another process \(pid (\d+) on host"


def environment() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path)


def cli_args(cube: Path, store: str) -> list[str]:
    # --chunks: 8 tasks of 2 × 2 pixels whatever chunks open_cube would pick
    return ["invert", str(cube), "--out", store, "--step", str(STEP), "--chunks", "2",
            "--no-progress"]  # fmt: skip


def open_store(url: str) -> xr.Dataset:
    return xr.open_zarr(url).load()


def same_data(ds: xr.Dataset) -> xr.Dataset:
    """The data variables and coordinates with their attributes (time_bounds included), without
    the global attributes: those may change (a version in 'history') when others edit this
    checkout between the module's reference store and a test."""
    return ds.drop_attrs(deep=False)


def markers(url: str) -> list[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    folder = f"{root}/{MARKER_GROUP}/done"
    fs.invalidate_cache(folder)
    try:
        return sorted(p for p in fs.ls(folder, detail=False) if p.endswith(".json"))
    except FileNotFoundError:
        return []


def root_names(url: str) -> set[str]:
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    fs.invalidate_cache(root)
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}


@pytest.fixture(scope="module")
def cube_path(tmp_path_factory) -> Path:
    """A small synthetic cube saved to zarr, as the CLI reads cubes."""
    path = tmp_path_factory.mktemp("cube") / "cube.zarr"
    synthetic_cube(**CUBE_OPTIONS).to_zarr(path)
    return path


@pytest.fixture(scope="module")
def reference(cube_path, tmp_path_factory) -> xr.Dataset:
    """What one ``xr-itslive invert`` alone writes."""
    store = str(tmp_path_factory.mktemp("reference") / "reference.zarr")
    assert main(cli_args(cube_path, store)) == 0
    return open_store(store)


@pytest.fixture(scope="module")
def s3_bucket(s3_server):
    make_bucket(s3_server, BUCKET)
    return BUCKET


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path):
    """A fresh store location, on disk or on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "result.zarr")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/{uuid.uuid4().hex}/result.zarr"


# --------------------------------------------------------------------------- writers at once

#: Imports everything, says it is ready, waits for the go file, then runs the CLI: the
#: processes' store checks and template writes start within a millisecond of each other.
BARRIER_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import xr_itslive.cli, xr_itslive.io.open, xr_itslive.workflows.invert_to_zarr
    ready, go = sys.argv[1], sys.argv[2]
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    sys.exit(xr_itslive.cli.main(sys.argv[3:]))
    """
)


def run_at_once(n: int, args: list[str], folder: Path) -> list[tuple[int, int, str, str]]:
    """Start ``n`` CLI processes, release them together; each one's (pid, exit, out, err)."""
    folder.mkdir()
    go = folder / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BARRIER_WRITER, str(folder / f"ready-{i}"), str(go), *args],
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    try:
        deadline = time.monotonic() + 120
        while len(list(folder.glob("ready-*"))) < n:
            assert time.monotonic() < deadline, "the writers did not start within 120 s"
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.01)
        go.touch()
        return [(p.pid, p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_three_cli_writers_started_at_once_leave_the_single_writer_store(
    cube_path, reference, store_url, tmp_path
):
    results = run_at_once(3, cli_args(cube_path, store_url), tmp_path / "barrier")

    finished = {pid for pid, code, _, _ in results if code == 0}
    assert finished, results
    for _, code, out, err in results:
        assert "Traceback" not in err and "ValueError" not in err, err
        assert "breaking the lock" not in err, err  # nobody took a live writer for a dead one
        if code == 0:
            assert "the store is complete" in out or "is already complete" in out, out
        else:
            assert code == 1, (code, err)
            # the stopped ones name the process that had the store, which then finished it
            found = re.search(rf"xr-itslive invert: error: .*{BUSY}", err)
            assert found, err
            assert int(found.group(1)) in finished
            assert "wait for that run to finish" in err and "--overwrite" in err

    status = store_status(store_url)
    assert status.complete and status.n_done == 8 and status.writer is None
    assert LOCK_NAME not in root_names(store_url) and PARTIAL_NAME not in root_names(store_url)
    written = open_store(store_url)
    assert "xr_itslive_store" in written.attrs
    xr.testing.assert_identical(same_data(written), same_data(reference))
    xr.testing.assert_identical(written["time_bounds"], reference["time_bounds"])


# --------------------------------------------------------------------------- killed mid-template

#: A local file system (fsspec protocol ``killfile://``) that SIGKILLs its own process the
#: moment it is asked to write a key matching KILL_AT: a kill at an exact point of the write,
#: through the writer's own code path for fsspec stores.
KILLED_WRITER = textwrap.dedent(
    """
    import os, re, signal, sys
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    class KillAtWrite(LocalFileSystem):
        protocol = ("killfile",)
        pattern = re.compile(os.environ["KILL_AT"])

        def __init__(self, *args, **kwargs):
            kwargs.setdefault("auto_mkdir", True)
            super().__init__(*args, **kwargs)

        @classmethod
        def _strip_protocol(cls, path):
            path = str(path)
            return super()._strip_protocol(path.removeprefix("killfile://"))

        def pipe_file(self, path, value, mode="overwrite", **kwargs):
            if self.pattern.search(self._strip_protocol(path)):
                os.kill(os.getpid(), signal.SIGKILL)
            return super().pipe_file(path, value, mode=mode, **kwargs)

    fsspec.register_implementation("killfile", KillAtWrite, clobber=True)
    import xr_itslive.cli
    sys.exit(xr_itslive.cli.main(sys.argv[1:]))
    """
)

KILL_POINTS = {
    "root group metadata": r"result\.zarr/zarr\.json$",
    "an array's metadata": r"/vx/zarr\.json$",
    "time_bounds' data": r"/time_bounds/c/",
    "the record (template done)": rf"/{MARKER_GROUP}/zarr\.json$",
    "the first done marker": rf"/{MARKER_GROUP}/done/",
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_a_run_killed_while_creating_the_store_resumes_to_the_reference(
    point, cube_path, reference, tmp_path
):
    store = str(tmp_path / "result.zarr")
    killed = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, *cli_args(cube_path, f"killfile://{store}")],
        env=dict(environment(), KILL_AT=KILL_POINTS[point]),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, err
    left = root_names(store)
    assert LOCK_NAME in left  # the killed process's lock: pid dead, same host
    in_template = point != "the first done marker"
    assert (PARTIAL_NAME in left) == in_template
    assert store_status(store) is None or not store_status(store).complete

    with pytest.warns(RuntimeWarning) as seen:
        assert main(cli_args(cube_path, store)) == 0
    messages = " | ".join(str(w.message) for w in seen)
    assert re.search(rf"breaking the lock .*pid {killed.pid} .*no longer runs", messages)
    assert ("killed run left unfinished" in messages) == in_template

    status = store_status(store)
    assert status.complete and status.writer is None
    assert root_names(store).isdisjoint({LOCK_NAME, PARTIAL_NAME})
    xr.testing.assert_identical(same_data(open_store(store)), same_data(reference))


def test_a_cli_run_killed_early_anywhere_resumes_to_the_reference(cube_path, reference, tmp_path):
    """SIGKILL as soon as the run has touched the store, wherever it is then."""
    store = tmp_path / "result.zarr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "xr_itslive", *cli_args(cube_path, str(store))],
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (store / LOCK_NAME).exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.warns(RuntimeWarning, match=rf"breaking the lock .*pid {proc.pid}\b"):
        assert main(cli_args(cube_path, str(store))) == 0
    assert store_status(store).complete
    xr.testing.assert_identical(same_data(open_store(str(store))), same_data(reference))


# --------------------------------------------------------------------------- locks left behind


def small_result() -> xr.Dataset:
    return xr_itslive.invert(synthetic_cube(**CUBE_OPTIONS), step=STEP)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def plant_lock(store: Path, **fields) -> dict:
    """A lock as a writer leaves one, with some fields changed."""
    lock = {
        "token": uuid.uuid4().hex,
        "pid": os.getpid(),
        "pid_start": None,
        "host": socket.gethostname(),
        "started_at": "2026-01-01T00:00:00+00:00",
        "heartbeat_unix": time.time(),
        "command": "xr-itslive invert cube.zarr --out out.zarr",
        "store": str(store),
    }
    lock.update(fields)
    store.mkdir(exist_ok=True)
    (store / LOCK_NAME).write_text(json.dumps(lock))
    return lock


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("dead pid on this host", r"pid \d+\) no longer runs on this host"),
        ("other host, silent 20 minutes", r"last refreshed it 20 minutes ago"),
        ("unreadable", r"unreadable"),
    ],
)
def test_a_stale_lock_is_broken_with_a_warning(kind, reason, tmp_path):
    store = tmp_path / "out.zarr"
    if kind == "dead pid on this host":
        pid = dead_pid()
        plant_lock(store, pid=pid)
        reason = reason.replace(r"\d+", str(pid))
    elif kind == "other host, silent 20 minutes":
        plant_lock(store, host="elsewhere", heartbeat_unix=time.time() - 1200)
    else:
        store.mkdir()
        (store / LOCK_NAME).write_text("{not json")
        old = time.time() - 60
        os.utime(store / LOCK_NAME, (old, old))
    with pytest.warns(RuntimeWarning, match=rf"breaking the lock .*{reason}"):
        summary = write_resumable(small_result(), store, progress=False)
    assert summary.complete and summary.n_written == 8
    assert not (store / LOCK_NAME).exists()
    assert not [p for p in store.iterdir() if p.name.startswith(LOCK_NAME)]  # nothing aside
    xr.testing.assert_identical(
        xr.open_zarr(store).load().drop_attrs(), small_result().compute().drop_attrs()
    )


@pytest.mark.parametrize("kind", ["live pid on this host", "other host, fresh heartbeat"])
def test_a_live_lock_stops_the_second_writer_with_a_message(kind, tmp_path):
    store = tmp_path / "out.zarr"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if kind == "live pid on this host":
            lock = plant_lock(store, pid=sleeper.pid)
            expected = rf"pid {sleeper.pid} on host '{re.escape(socket.gethostname())}'"
        else:
            lock = plant_lock(store, pid=1234, host="elsewhere")
            expected = r"pid 1234 on host 'elsewhere'.*after 10 minutes without a heartbeat"
        for overwrite in (False, True):  # overwrite never takes a live writer's store
            with pytest.raises(StoreConflictError, match=rf"{BUSY}.*") as raised:
                write_resumable(small_result(), store, overwrite=overwrite, progress=False)
            assert re.search(expected, str(raised.value)), raised.value
            assert "overwrite=True (CLI: --overwrite) does not take" in str(raised.value)
        assert json.loads((store / LOCK_NAME).read_text()) == lock  # untouched
        assert sorted(p.name for p in store.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        sleeper.kill()
        sleeper.wait()


# --------------------------------------------------------------------------- a writer at work

#: A writer whose chunks wait for a gate file: it holds the store as long as the test wants.
GATED_WRITER = (
    textwrap.dedent(
        """
    import os, sys, time
    import xr_itslive
    from xr_itslive.errors import ITSLiveError
    from xr_itslive.synthetic import synthetic_cube
    from xr_itslive.workflows import store as store_module
    from xr_itslive.workflows.store import write_resumable

    store, gate = sys.argv[1], sys.argv[2]
    check_lock = store_module._check_lock

    def gated(*args):
        # Each chunk task waits here, before it checks its lock and writes. Outside the
        # result's graph: the result (and its fingerprint) is the parent's small_result().
        while not os.path.exists(gate):
            time.sleep(0.01)
        check_lock(*args)

    store_module._check_lock = gated
    result = xr_itslive.invert(synthetic_cube(**OPTIONS), step=STEP)
    try:
        write_resumable(result, store, progress=False)
    except ITSLiveError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    print("finished")
    """
    )
    .replace("OPTIONS", repr(CUBE_OPTIONS))
    .replace("STEP", repr(STEP))
)


def start_gated(store: Path, gate: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", GATED_WRITER, str(store), str(gate)],
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while store_status(store) is None:  # the template and record are written: it is at work
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the gated writer wrote no template within 120 s"
        time.sleep(0.02)
    return proc


def test_a_second_writer_stops_or_waits_while_the_first_works(tmp_path):
    store, gate = tmp_path / "out.zarr", tmp_path / "gate"
    first = start_gated(store, gate)
    try:
        status = store_status(store)
        assert status.writer["pid"] == first.pid and status.n_done == 0
        with pytest.raises(StoreConflictError, match=rf"{BUSY}") as raised:
            write_resumable(small_result(), store, progress=False)
        assert f"pid {first.pid} " in str(raised.value)
        with pytest.raises(StoreConflictError, match=rf"{BUSY}"):
            write_resumable(small_result(), store, overwrite=True, progress=False)
        assert store_status(store).writer["pid"] == first.pid  # the overwrite deleted nothing

        opener = threading.Timer(1.0, gate.touch)  # the first run goes on in a second
        opener.start()
        with pytest.warns(RuntimeWarning, match=rf"waiting for another writer.*pid {first.pid}"):
            waited = write_resumable(small_result(), store, progress=False, lock_timeout=None)
        opener.join()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert waited.already_complete and waited.n_written == 0  # it waited, then found it done
    finally:
        gate.touch()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert store_status(store).complete and not (store / LOCK_NAME).exists()
    xr.testing.assert_identical(
        xr.open_zarr(store).load().drop_attrs(), small_result().compute().drop_attrs()
    )


def test_a_writer_whose_lock_was_taken_over_writes_no_more_chunks(tmp_path):
    store, gate = tmp_path / "out.zarr", tmp_path / "gate"
    first = start_gated(store, gate)
    try:
        # As when another run judged this one dead (or someone deleted the lock) and took over.
        taken = plant_lock(store, host="elsewhere", pid=4321)
        gate.touch()
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 1, (out, err)
    assert "Traceback" not in err
    assert re.search(r"this run lost the lock on .*pid 4321 on host 'elsewhere'.*stopped", err)
    assert markers(str(store)) == []  # no chunk written into a store another run holds
    assert json.loads((store / LOCK_NAME).read_text()) == taken  # the new holder's lock stays


# --------------------------------------------------------------------------- the benchmark


def test_the_benchmark_runs_once():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_concurrent_writers.py"),
            "--trials",
            "1",
            "--side",
            "4",
            "--pairs",
            "200",
        ],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "trial  1: " in done.stdout and "corrupt: 0" in done.stdout
