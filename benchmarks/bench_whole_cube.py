"""A whole ITS_LIVE-shaped cube end to end: read-and-decode time vs the CLI's inversion.

Writes (or reuses) a cube made by ``benchmarks/make_cube.py`` (today's chunking and int16
encoding), then, in one run:

1. **read and decode**: ``open_cube`` of vx, vy (and their errors) and a reduction over every
   value (the count of valid values), with the threaded scheduler: the time it takes merely to
   read, decompress and decode the cube, and the peak memory of this process;
2. **invert**: ``xr-itslive invert CUBE --out STORE --weights error --robust tukey --step 12``
   in a subprocess (the command a user runs), its wall time and the peak resident memory and
   CPU seconds of its process tree (sampled every 50 ms), on dask's threads and, with the
   options below, on clusters (each worker process's too);
3. the ratio and the pixels per second (all pixels of the cube, and those with data).

Cluster runs (each one more run of the same command, its own output store):

- ``--cluster``: ``--scheduler local --workers 2`` (a ``LocalCluster`` of 2 worker processes,
  1 thread each, started by the CLI);
- ``--remote``: a ``dask scheduler`` and two ``dask worker --nthreads 1 --no-nanny`` processes
  started here on 127.0.0.1, the CLI with ``--scheduler tcp://127.0.0.1:PORT``;
- ``--kill-worker``: the same on a fresh remote cluster, one worker SIGKILLed once a third of
  the chunks are written: the run must still finish (the scheduler reruns the lost tasks);
  it also counts the chunks the killed worker had finished that the survivor wrote again;
- ``--resume``: the threaded command SIGKILLed once 40% of the chunks are written, then run
  again: the second run must write exactly the chunks without a marker;
- ``--compare``: every store written is checked against the threaded one
  (``xarray.testing.assert_identical`` of the whole store, and exact equality of vx, vy, n_obs).

``--composite`` also runs ``xr-itslive composite CUBE --out STORE --weights error --robust
tukey`` (ITS_LIVE's annual composites of vx and vy) on dask's threads: its wall time, ratio to
the read, peak memory and CPU seconds.

Run::

    python benchmarks/bench_whole_cube.py --size 1/16     # 208 x 208 x 25,000
    python benchmarks/bench_whole_cube.py                 # the whole 833 x 833 x 25,000
    python benchmarks/bench_whole_cube.py --cube /tmp/c16.zarr \\
        --cluster --remote --kill-worker --resume --compare
    python benchmarks/bench_whole_cube.py --quick         # tiny (used by the tests)

A ``--cube`` given is only read. ``--json FILE`` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run from a checkout
sys.path.insert(0, str(HERE))

GiB = 2**30
DASK = str(Path(sys.executable).with_name("dask"))
INVERT_FLAGS = ["--weights", "error", "--robust", "tukey", "--step", "12", "--no-progress"]
COMPOSITE_FLAGS = ["--weights", "error", "--robust", "tukey", "--no-progress"]


class TreePeak:
    """Peak resident memory of processes and their children (sum), and of each process.

    ``roots`` is one pid or several; every sample walks each root's children again, so worker
    processes started later are counted too.
    """

    def __init__(self, roots: int | list[int], interval: float = 0.05) -> None:
        import psutil

        pids = [roots] if isinstance(roots, int) else list(roots)
        self.roots = [psutil.Process(pid) for pid in pids]
        self.interval = interval
        self.peak_total = 0
        self.peak_each: dict[int, int] = {}
        self.cpu_each: dict[int, float] = {}  # user + system seconds, at the last sample
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            procs = {}
            for root in self.roots:
                try:
                    for proc in (root, *root.children(recursive=True)):
                        procs[proc.pid] = proc
                except psutil.Error:
                    continue
            total = 0
            for pid, proc in procs.items():
                try:
                    rss = proc.memory_info().rss
                    cpu = proc.cpu_times()
                except psutil.Error:
                    continue
                total += rss
                self.cpu_each[pid] = cpu.user + cpu.system
                self.peak_each[pid] = max(self.peak_each.get(pid, 0), rss)
            self.peak_total = max(self.peak_total, total)
            time.sleep(self.interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def read_and_decode(
    path: str | Path,
    storage_options: dict | None = None,
    variables: tuple[str, ...] = ("vx", "vy", "vx_error", "vy_error"),
    chunks: dict | None = None,
) -> tuple[float, int, int]:
    """Seconds to read + decode vx, vy (every value), the valid count, pixels with data."""
    import dask
    import numpy as np

    import xr_itslive

    started = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        ds = xr_itslive.open_cube(
            path, variables=list(variables), storage_options=storage_options, chunks=chunks
        )
        counts = (ds.vx.notnull().sum("mid_date"), ds.vy.notnull().sum("mid_date"))
        nx_valid, ny_valid = dask.compute(*(c.data for c in counts))
    seconds = time.perf_counter() - started
    return seconds, int(nx_valid.sum() + ny_valid.sum()), int(np.count_nonzero(nx_valid >= 5))


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment, with the checkout importable (workers unpickle xr_itslive)."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, **(extra or {}))


def cli_command(
    path: str | Path, store: Path, extra: list[str], command: str = "invert"
) -> list[str]:
    flags = INVERT_FLAGS if command == "invert" else COMPOSITE_FLAGS
    return [sys.executable, "-m", "xr_itslive", command, str(path), "--out", str(store),
            *flags, *extra]  # fmt: skip


def run_cli(
    path: str | Path,
    store: Path,
    extra: list[str],
    env: dict[str, str] | None = None,
    watch: list[int] | None = None,
    during=None,
    check: bool = True,
    command: str = "invert",
) -> tuple[float, TreePeak, str, int]:
    """Run the CLI; (seconds, memory peaks, output, exit code).

    ``watch``: more pids whose memory is sampled with the CLI's tree (remote workers);
    ``during(proc)`` runs in a thread while the CLI runs (to kill something mid-run).
    """
    started = time.perf_counter()
    proc = subprocess.Popen(
        cli_command(path, store, extra, command), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True, env=subprocess_env(env), start_new_session=True,
    )  # fmt: skip
    helper = None
    if during is not None:
        helper = threading.Thread(target=during, args=(proc,), daemon=True)
        helper.start()
    with TreePeak([proc.pid, *(watch or [])]) as peak:
        output, _ = proc.communicate()
    seconds = time.perf_counter() - started
    if helper is not None:
        helper.join(timeout=30)
    if check and proc.returncode != 0:
        raise SystemExit(f"the CLI failed ({proc.returncode}):\n{output}")
    return seconds, peak, output.strip(), proc.returncode


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RemoteCluster:
    """``dask scheduler`` + ``n`` ``dask worker --nthreads 1 --no-nanny`` on 127.0.0.1.

    Each is a subprocess in its own process group (logs in ``folder``); :meth:`close` shuts
    the cluster down and kills whatever is left.
    """

    def __init__(self, folder: Path, n_workers: int = 2, timeout: float = 60.0) -> None:
        self.folder = folder
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self._logs = []
        try:
            self.scheduler = self._spawn(
                [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                 "--no-dashboard"], "scheduler",
            )  # fmt: skip
            self._wait_for_port(timeout)
            worker = [DASK, "worker", self.address, "--nthreads", "1", "--no-dashboard",
                      "--no-nanny", "--host", "127.0.0.1"]  # fmt: skip
            self.workers = [
                self._spawn([*worker, "--name", f"w{i}"], f"worker{i}") for i in range(n_workers)
            ]
            import distributed

            with distributed.Client(self.address, timeout=timeout, set_as_default=False) as client:
                client.wait_for_workers(n_workers, timeout=timeout)
        except BaseException:
            self.close()
            raise

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed in close()
        self._logs.append(log)
        proc = subprocess.Popen(args, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def _wait_for_port(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scheduler.poll() is not None:
                break
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the dask scheduler did not listen on {self.address}")

    def close(self) -> None:
        try:
            import distributed

            with distributed.Client(self.address, timeout=10, set_as_default=False) as client:
                client.shutdown()
        except Exception:
            pass
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait(timeout=10)
        for log in self._logs:
            log.close()

    def __enter__(self) -> RemoteCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def done_count(store: Path) -> int:
    from xr_itslive.workflows.store import store_status

    try:
        status = store_status(store)
    except Exception:  # the template is being written
        return 0
    return 0 if status is None else status.n_done


def marker_pids(store: Path) -> Counter:
    """How many chunk markers each process wrote."""
    from xr_itslive.workflows.store import MARKER_GROUP

    folder = Path(store) / MARKER_GROUP / "done"
    return Counter(json.loads(p.read_text())["pid"] for p in folder.glob("*.json"))


def marker_writers(store: Path) -> dict[str, int]:
    """Chunk → pid of the process that wrote its marker (the last one, if written twice)."""
    from xr_itslive.workflows.store import MARKER_GROUP

    writers = {}
    for path in (Path(store) / MARKER_GROUP / "done").glob("*.json"):
        try:
            writers[path.stem] = json.loads(path.read_text())["pid"]
        except (OSError, ValueError):  # being written
            pass
    return writers


def killer(store: Path, at: int, victim, event: dict, timeout: float = 3600):
    """A ``during`` callback: SIGKILL ``victim`` (a Popen, or ``None`` for the CLI itself)
    once ``at`` chunks of ``store`` are marked done."""

    def run(cli: subprocess.Popen) -> None:
        target = cli if victim is None else victim
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while time.monotonic() < deadline and cli.poll() is None:
            n = done_count(store)
            if n >= at:
                if victim is None:
                    os.killpg(target.pid, signal.SIGKILL)  # the CLI and anything it started
                else:
                    target.send_signal(signal.SIGKILL)
                event.update(done_at_kill=n, seconds_at_kill=time.monotonic() - started)
                if victim is not None:  # whose chunks were done when it died
                    event["writers_at_kill"] = marker_writers(store)
                return
            time.sleep(0.1)

    return run


def compare_stores(reference: Path, other: Path) -> str:
    """'identical', or what differs (values of vx, vy, n_obs checked exactly as well)."""
    import numpy as np
    import xarray as xr

    with xr.open_zarr(reference) as a, xr.open_zarr(other) as b:
        a, b = a.load(scheduler="threads"), b.load(scheduler="threads")
        unequal = [
            name for name in ("vx", "vy", "n_obs")
            if not np.array_equal(a[name].values, b[name].values, equal_nan=True)
        ]  # fmt: skip
        try:
            xr.testing.assert_identical(a, b)
        except AssertionError as err:
            first = " ".join(str(err).split())[:200]
            values = "vx, vy, n_obs differ" if unequal else "vx, vy, n_obs equal"
            return f"NOT identical ({values}): {first}"
    return "identical" if not unequal else f"NOT identical: {', '.join(unequal)} differ"


def parse_wrote(output: str) -> tuple[int, int, int] | None:
    """(written, total, done before) from the CLI's last line."""
    match = re.search(r"wrote (\d+) of (\d+) chunks", output)
    if match is None:
        return None
    before = re.search(r"(\d+) were done before", output)
    return int(match[1]), int(match[2]), int(before[1]) if before else 0


def describe_memory(peak: TreePeak, cli_pid: int, labels: dict[int, str]) -> str:
    """Peak RSS of every process, then their CPU seconds (as sampled)."""

    def each(pid: int) -> str:
        return f"{peak.peak_each.get(pid, 0) / GiB:.2f} GiB, {peak.cpu_each.get(pid, 0):.0f} s"

    parts = [f"CLI process {each(cli_pid)}"]
    parts += [f"{label} {each(pid)}" for pid, label in labels.items()]
    others = sorted(
        (pid for pid in peak.peak_each if pid != cli_pid and pid not in labels),
        key=lambda pid: -peak.peak_each[pid],
    )
    if others:
        parts.append("child processes " + ", ".join(each(pid) for pid in others[:3]))
    cpu = sum(peak.cpu_each.values())
    return (
        f"peak RSS {peak.peak_total / GiB:.2f} GiB in all, {cpu:.0f} CPU s in all (peak RSS, "
        f"CPU s: {'; '.join(parts)})"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1", help="fraction of the 833 x 833 tile: 1, 1/4...")
    parser.add_argument("--pairs", type=int, default=25_000)
    parser.add_argument("--cube", type=Path, default=None, help="reuse (or write) this cube")
    parser.add_argument("--cluster", action="store_true", help="also on a LocalCluster of 2")
    parser.add_argument("--remote", action="store_true",
                        help="also on a dask scheduler + 2 workers started here")  # fmt: skip
    parser.add_argument("--kill-worker", action="store_true",
                        help="also remote, one worker SIGKILLed a third of the way")  # fmt: skip
    parser.add_argument("--resume", action="store_true",
                        help="also the CLI SIGKILLed at 40%% of the chunks, rerun")  # fmt: skip
    parser.add_argument("--compare", action="store_true",
                        help="check every store against the threaded one")  # fmt: skip
    parser.add_argument("--chunks", type=int, default=None, help="the CLI's --chunks")
    parser.add_argument("--work", type=Path, default=None,
                        help="keep the stores and logs in this folder")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument(
        "--composite", action="store_true", help="also the annual composites (xr-itslive composite)"
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run (for the tests)")
    args = parser.parse_args(argv)

    from make_cube import make_cube

    side = round(833 * float(Fraction(args.size)) ** 0.5)
    n_pairs = args.pairs
    chunk_pairs = 20_000
    if args.quick:  # two mid_date chunks, as a full cube has; 16 spatial chunks
        side, n_pairs, chunk_pairs = 40, 2_500, 2_000
        # the CLI's tasks as stored (10 x 10), not 2 x 2 of them: 16 chunks, so that a worker
        # killed or a run stopped once a few are written stops mid-run
        args.chunks = args.chunks or 10
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="whole_cube_"))
    cube = args.cube or work / "cube.zarr"
    figures: dict = {"cores": os.cpu_count(), "runs": {}}
    try:
        if not (cube / ".zmetadata").exists():
            made = make_cube(cube, side, side, n_pairs, chunk_pairs=min(chunk_pairs, n_pairs))
            print(f"made the cube in {made['seconds']:.0f} s: {made['bytes'] / GiB:.2f} GiB, "
                  f"{made['valid_fraction']:.1%} of pair-pixels valid")  # fmt: skip
        import xarray as xr

        sizes = xr.open_zarr(cube, consolidated=True).sizes
        side, n_pairs = sizes["y"], sizes["mid_date"]  # a reused cube has its own size
        figures.update(cube=str(cube), pairs=n_pairs, side=side)
        print(f"machine: {os.cpu_count()} cores; cube {n_pairs:,} pairs x {side} x {side} "
              f"({side * side:,} pixels)")  # fmt: skip
        cpu_started = time.process_time()  # every thread of this process
        with TreePeak(os.getpid()) as own:
            read_s, n_valid, with_data = read_and_decode(cube)
        read_cpu = time.process_time() - cpu_started
        figures.update(read_seconds=read_s, valid_values=n_valid, pixels_with_data=with_data,
                       read_peak_rss=own.peak_total, read_cpu=read_cpu)  # fmt: skip
        print(f"read + decode vx, vy: {read_s:.1f} s, {read_cpu:.0f} CPU s ({n_valid:,} valid "
              f"values; {with_data:,} pixels with >= 5 pairs); peak RSS of this process "
              f"{own.peak_total / GiB:.2f} GiB")  # fmt: skip
        extra = ["--chunks", str(args.chunks)] if args.chunks else []
        stores: dict[str, Path] = {}

        def report(label: str, seconds: float, peak: TreePeak,
                   labels: dict[int, str] | None = None, note: str = "") -> None:  # fmt: skip
            memory = describe_memory(peak, peak.roots[0].pid, labels or {})
            print(
                f"invert ({label}): {seconds:.1f} s = {seconds / read_s:.2f}x read; "
                f"{side * side / seconds:,.0f} pixels/s ({with_data / seconds:,.0f} with data); "
                f"{memory}{note}"
            )
            name = (labels or {}).get
            figures["runs"][label] = {
                "seconds": seconds, "peak_total": peak.peak_total,
                "peak_each": {name(pid, str(pid)): rss for pid, rss in peak.peak_each.items()},
                "cpu_each": {name(pid, str(pid)): cpu for pid, cpu in peak.cpu_each.items()},
                "cpu_total": sum(peak.cpu_each.values()),
            }  # fmt: skip

        def fresh(name: str) -> Path:
            store = work / f"out_{name}.zarr"
            shutil.rmtree(store, ignore_errors=True)
            stores[name] = store
            return store

        local_runs = [("threads", extra)]
        if args.cluster:
            local_runs.append(("LocalCluster(2)", [*extra, "--scheduler", "local",
                                                   "--workers", "2"]))  # fmt: skip
        for label, flags in local_runs:
            seconds, peak, _, _ = run_cli(cube, fresh(label.split("(")[0].lower()), flags)
            report(label, seconds, peak)
        n_chunks = done_count(stores["threads"])
        if args.composite:
            seconds, peak, _, _ = run_cli(cube, fresh("composite"), extra, command="composite")
            memory = describe_memory(peak, peak.roots[0].pid, {})
            print(f"composite (threads): {seconds:.1f} s = {seconds / read_s:.2f}x read; "
                  f"{side * side / seconds:,.0f} pixels/s; {memory}")  # fmt: skip
            figures["runs"]["composite"] = {
                "seconds": seconds, "peak_total": peak.peak_total,
                "cpu_total": sum(peak.cpu_each.values()),
            }  # fmt: skip

        if args.remote:
            with RemoteCluster(work) as cluster:
                store = fresh("remote")
                labels = {cluster.scheduler.pid: "scheduler"}
                labels |= {w.pid: f"worker w{i}" for i, w in enumerate(cluster.workers)}
                seconds, peak, _, _ = run_cli(
                    cube, store, [*extra, "--scheduler", cluster.address], watch=list(labels)
                )
                report("remote scheduler + 2 workers", seconds, peak, labels)

        if args.kill_worker:
            with RemoteCluster(work) as cluster:
                store = fresh("remote_killed")
                victim = cluster.workers[1]
                labels = {cluster.scheduler.pid: "scheduler"}
                labels |= {w.pid: f"worker w{i}" for i, w in enumerate(cluster.workers)}
                event: dict = {}
                seconds, peak, _, _ = run_cli(
                    cube, store, [*extra, "--scheduler", cluster.address], watch=list(labels),
                    during=killer(store, max(1, n_chunks // 3), victim, event),
                )  # fmt: skip
                code = victim.wait(timeout=30)
                by_pid = marker_pids(store)
                survivor = cluster.workers[0].pid
                complete = done_count(store)
                # chunks the victim had finished, written again by the survivor after the kill
                before = event.get("writers_at_kill", {})
                by_victim = [c for c, p in before.items() if p == victim.pid]
                final = marker_writers(store)
                redone = sum(final.get(c) == survivor for c in by_victim)
                note = (
                    f"; worker w1 SIGKILLed (exit {code}) at {event.get('done_at_kill')} of "
                    f"{n_chunks} chunks done ({len(by_victim)} of them by w1), "
                    f"{event.get('seconds_at_kill', float('nan')):.1f} s in; the run finished "
                    f"with {complete} of {n_chunks} chunks marked (markers last written by w0: "
                    f"{by_pid.get(survivor, 0)}, by w1: {by_pid.get(victim.pid, 0)}); "
                    f"{redone} of w1's {len(by_victim)} finished chunks computed and written "
                    f"again by w0 after the kill"
                )
                report("remote, a worker killed", seconds, peak, labels, note)
                figures["runs"]["remote, a worker killed"] |= {
                    "killed_exit": code, "done_at_kill": event.get("done_at_kill"),
                    "complete": complete, "w0_wrote": by_pid.get(survivor, 0),
                    "w1_wrote": by_pid.get(victim.pid, 0), "w1_done_at_kill": len(by_victim),
                    "w1_chunks_redone": redone,
                }  # fmt: skip

        if args.resume:
            store = fresh("resumed")
            event = {}
            first_s, first_peak, first_out, first_rc = run_cli(
                cube, store, extra, during=killer(store, max(1, (2 * n_chunks) // 5), None, event),
                check=False,
            )  # fmt: skip
            done_after_kill = done_count(store)
            second_s, second_peak, second_out, _ = run_cli(cube, store, extra)
            wrote = parse_wrote(second_out)
            written, total, before = wrote if wrote else (None, None, None)
            consistent = wrote is not None and written + before == total == n_chunks
            line = (
                f"resume: first run SIGKILLed (exit {first_rc}) at {event.get('done_at_kill')} "
                f"chunks done ({event.get('seconds_at_kill', float('nan')):.1f} s in; "
                f"{done_after_kill} marked once it had died); the same command again: "
                f"{second_s:.1f} s, wrote {written} of {total} chunks ({before} done before; "
                f"{'adds up' if consistent else 'DOES NOT add up'}); peak RSS "
                f"{second_peak.peak_total / GiB:.2f} GiB"
            )
            print(line)
            figures["runs"]["resume"] = {
                "first_seconds": first_s, "first_exit": first_rc,
                "done_at_kill": event.get("done_at_kill"), "done_after_kill": done_after_kill,
                "second_seconds": second_s, "second_written": written, "total": total,
                "done_before": before, "consistent": consistent,
                "second_output": second_out.splitlines()[-1] if second_out else "",
            }  # fmt: skip

        if args.compare:
            figures["compare"] = {}
            for name, store in stores.items():
                if name == "threads":
                    continue
                verdict = compare_stores(stores["threads"], store)
                figures["compare"][name] = verdict
                print(f"compare {name} with threads: {verdict}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    return figures


if __name__ == "__main__":
    main()
