"""Two ``xr-itslive invert`` runs started at the same instant on one new store.

Each trial starts two real CLI processes (``xr_itslive.cli.main``, the function behind the
``xr-itslive`` console script) on the same new store. Both import everything first, say they
are ready, and wait for a go file (a barrier across processes), so their store checks and
template writes start within a millisecond of each other. After both exit, the store is
checked: complete per :func:`xr_itslive.store_status`, its data variables and coordinates
(``time_bounds`` included, with their attributes) identical to a store written by a single run,
and still marked as a resumable store. A trial is one of

- ``both ok``: both exited 0 with a complete, identical store;
- ``one waited``: both exited 0 and one of them found the store complete (it waited for the
  other, or started after the other had finished);
- ``one stopped with message``: one exited 0, the other 1 with xr_itslive's message and no
  traceback;
- ``wrong error``: one exited 0, the other 1 with a message that does not say another process
  is writing the store (e.g. one calling the other's half-written template foreign);
- ``corrupt``: anything else (a traceback, an incomplete store, or data that differ).

Run::

    python benchmarks/bench_concurrent_writers.py               # 10 trials
    python benchmarks/bench_concurrent_writers.py --trials 1    # one trial (used by the tests)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout

#: Imports everything, says it is ready, waits for the go file, then runs the CLI.
WRITER = """
import os, sys, time
import xr_itslive.cli, xr_itslive.io.open, xr_itslive.workflows.invert_to_zarr  # before the start
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
sys.exit(xr_itslive.cli.main(sys.argv[3:]))
"""

OUTCOMES = ("both ok", "one waited", "one stopped with message", "wrong error", "corrupt")


def write_cube(path: Path, n_pairs: int, side: int) -> None:
    """A synthetic cube of ``side × side`` pixels in 2 × 2 chunks, saved to zarr."""
    from xr_itslive.synthetic import synthetic_cube

    cube = synthetic_cube(n_pairs=n_pairs, ny=side, nx=side, seed=5, chunks={"y": 2, "x": 2})
    cube.to_zarr(path, mode="w")


def cli_args(cube: Path, store: Path) -> list[str]:
    # --chunks 2: tasks of 2 × 2 pixels, whatever chunks open_cube would pick
    return ["invert", str(cube), "--out", str(store), "--step", "30", "--chunks", "2",
            "--no-progress"]  # fmt: skip


def environment() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, PYTHONWARNINGS="ignore")


def run_writers(cube: Path, store: Path, n: int) -> tuple[list[tuple[int, str, str]], float]:
    """Run ``n`` CLI processes on ``store``, released together once all have imported; each
    one's (exit status, stdout, stderr), and the seconds from the release to the last exit."""
    barrier = store.with_suffix(".barrier")
    barrier.mkdir()
    go = barrier / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(barrier / f"ready-{i}"), str(go)]
            + cli_args(cube, store),
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n)
    ]
    while len(list(barrier.glob("ready-*"))) < n:
        if any(p.poll() is not None for p in procs):
            break  # one died while importing: its output says why
        time.sleep(0.01)
    go.touch()
    released = time.perf_counter()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        results.append((proc.returncode, out, err))
    return results, time.perf_counter() - released


def identical_to(store: Path, reference: Path) -> str | None:
    """None when ``store`` holds what ``reference`` holds, else what differs."""
    import xarray as xr

    from xr_itslive.workflows.store import store_status

    status = store_status(store)
    if status is None or not status.complete:
        return f"store status {status}"
    try:
        written = xr.open_zarr(store).load()
        expected = xr.open_zarr(reference).load()
        if "xr_itslive_store" not in written.attrs:
            return "the store lost its xr_itslive_store attribute"
        # The global attributes are left out: others editing this checkout while the benchmark
        # runs can change them (a version in 'history') between the reference and a trial.
        xr.testing.assert_identical(written.drop_attrs(deep=False), expected.drop_attrs(deep=False))
    except Exception as err:  # a broken store fails to open in many ways: report, don't stop
        return f"{type(err).__name__}: {str(err)[:300]}"
    return None


def classify(results: list[tuple[int, str, str]], difference: str | None) -> str:
    """The outcome of a trial from each writer's (exit status, stdout, stderr)."""
    if difference is not None or any("Traceback" in err for _, _, err in results):
        return "corrupt"
    codes = sorted(code for code, _, _ in results)
    if codes == [0, 0]:
        waited = any("already complete" in out for _, out, _ in results)
        return "one waited" if waited else "both ok"
    if codes == [0, 1]:
        _, _, err = next(r for r in results if r[0] == 1)
        # xr_itslive's own message, and one that says what happened: another writer is at work
        # (not, say, "a zarr store not written by xr_itslive" about the other's template)
        if "xr-itslive invert: error:" in err and "another process" in err:
            return "one stopped with message"
        return "wrong error"
    return "corrupt"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10, help="trials (10)")
    parser.add_argument("--pairs", type=int, default=400, help="pairs of the synthetic cube (400)")
    parser.add_argument("--side", type=int, default=8, help="pixels along x and y (8)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # zarr's notes on v3 dtypes, here and in the writers

    counts: Counter[str] = Counter()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-concurrent-") as folder:
        work = Path(folder)
        cube, reference = work / "cube.zarr", work / "reference.zarr"
        write_cube(cube, args.pairs, args.side)
        [(code, out, err)], _ = run_writers(cube, reference, 1)
        if code != 0:
            print(f"the single-writer reference failed:\n{out}\n{err}")
            return 1
        print(f"cube {args.side}x{args.side} pixels, {args.pairs} pairs; reference: {out.strip()}")
        for trial in range(1, args.trials + 1):
            store = work / f"trial-{trial}.zarr"
            results, seconds = run_writers(cube, store, 2)
            difference = identical_to(store, reference)
            outcome = classify(results, difference)
            counts[outcome] += 1
            codes = [r[0] for r in results]
            print(f"trial {trial:2d}: {outcome:<25s} exit {codes}, {seconds:.1f} s")
            for code, out, err in results:
                last = (err.strip().splitlines() or out.strip().splitlines() or [""])[-1]
                print(f"    exit {code}: {last[:240]}")
            if difference is not None:
                print(f"    store: {difference}")
    total = time.perf_counter() - started
    print("totals: " + ", ".join(f"{name}: {counts[name]}" for name in OUTCOMES))
    print(f"{args.trials} trials in {total:.1f} s")
    return 0 if counts["corrupt"] + counts["wrong error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
