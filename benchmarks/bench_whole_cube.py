"""A whole ITS_LIVE-shaped cube end to end: read-and-decode time vs the CLI's inversion.

Writes (or reuses) a cube made by ``benchmarks/make_cube.py`` (today's chunking and int16
encoding), then, in one run:

1. **read and decode**: ``open_cube`` of vx, vy (and their errors) and a reduction over every
   value (the count of valid values), with the threaded scheduler: the time it takes merely to
   read, decompress and decode the cube, and the peak memory;
2. **invert**: ``xr-itslive invert CUBE --out STORE --weights error --robust tukey --step 12``
   in a subprocess (the command a user runs), its wall time and the peak resident memory of its
   process tree (sampled every 50 ms), and optionally the same through a ``LocalCluster``
   (``--cluster``: peak memory of each worker process);
3. the ratio and the pixels per second (all pixels of the cube, and those with data).

Run::

    python benchmarks/bench_whole_cube.py --size 1/16     # 208 x 208 x 25,000
    python benchmarks/bench_whole_cube.py                 # the whole 833 x 833 x 25,000
    python benchmarks/bench_whole_cube.py --quick         # tiny (used by the tests)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout
sys.path.insert(0, str(HERE))

GiB = 2**30


class TreePeak:
    """Peak resident memory of a process and its children (sum), and of each child."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_total = 0
        self.peak_each: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                total += rss
                self.peak_each[proc.pid] = max(self.peak_each.get(proc.pid, 0), rss)
            self.peak_total = max(self.peak_total, total)
            time.sleep(self.interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def read_and_decode(path: Path) -> tuple[float, int, int]:
    """Seconds to read + decode vx, vy (every value), the valid count, pixels with data."""
    import dask
    import numpy as np

    import xr_itslive

    started = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        ds = xr_itslive.open_cube(path, variables=["vx", "vy", "vx_error", "vy_error"])
        counts = (ds.vx.notnull().sum("mid_date"), ds.vy.notnull().sum("mid_date"))
        nx_valid, ny_valid = dask.compute(*(c.data for c in counts))
    seconds = time.perf_counter() - started
    return seconds, int(nx_valid.sum() + ny_valid.sum()), int(np.count_nonzero(nx_valid >= 5))


def run_cli(path: Path, store: Path, extra: list[str]) -> tuple[float, TreePeak, str]:
    command = [
        sys.executable, "-m", "xr_itslive", "invert", str(path), "--out", str(store),
        "--weights", "error", "--robust", "tukey", "--step", "12", "--no-progress", *extra,
    ]  # fmt: skip
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with TreePeak(proc.pid) as peak:
        output, _ = proc.communicate()
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the CLI failed ({proc.returncode}):\n{output}")
    return seconds, peak, output.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1", help="fraction of the 833 x 833 tile: 1, 1/4...")
    parser.add_argument("--pairs", type=int, default=25_000)
    parser.add_argument("--cube", type=Path, default=None, help="reuse (or write) this cube")
    parser.add_argument("--cluster", action="store_true", help="also on a LocalCluster of 2")
    parser.add_argument("--chunks", type=int, default=None, help="the CLI's --chunks")
    parser.add_argument("--quick", action="store_true", help="a tiny run (for the tests)")
    args = parser.parse_args(argv)

    from make_cube import make_cube

    side = round(833 * float(Fraction(args.size)) ** 0.5)
    n_pairs = args.pairs
    if args.quick:
        side, n_pairs = 20, 2_500
    work = Path(tempfile.mkdtemp(prefix="whole_cube_"))
    cube = args.cube or work / "cube.zarr"
    try:
        if not (cube / ".zmetadata").exists():
            made = make_cube(cube, side, side, n_pairs, chunk_pairs=min(20_000, n_pairs))
            print(f"made the cube in {made['seconds']:.0f} s: {made['bytes'] / GiB:.2f} GiB, "
                  f"{made['valid_fraction']:.1%} of pair-pixels valid")  # fmt: skip
        import xarray as xr

        sizes = xr.open_zarr(cube, consolidated=True).sizes
        side, n_pairs = sizes["y"], sizes["mid_date"]  # a reused cube has its own size
        print(f"machine: {os.cpu_count()} cores; cube {n_pairs:,} pairs x {side} x {side} "
              f"({side * side:,} pixels)")  # fmt: skip
        read_s, n_valid, with_data = read_and_decode(cube)
        print(f"read + decode vx, vy: {read_s:.1f} s ({n_valid:,} valid values; "
              f"{with_data:,} pixels with >= 5 pairs)")  # fmt: skip
        extra = ["--chunks", str(args.chunks)] if args.chunks else []
        runs = [("threads", extra)]
        if args.cluster:
            runs.append(("LocalCluster(2)", [*extra, "--scheduler", "local", "--workers", "2"]))
        for label, flags in runs:
            store = work / f"out_{label[:5]}.zarr"
            shutil.rmtree(store, ignore_errors=True)
            seconds, peak, _ = run_cli(cube, store, flags)
            workers = sorted(peak.peak_each.values(), reverse=True)
            each = ", ".join(f"{w / GiB:.2f}" for w in workers[:3])
            print(
                f"invert ({label}): {seconds:.1f} s = {seconds / read_s:.2f}x read; "
                f"{side * side / seconds:,.0f} pixels/s ({with_data / seconds:,.0f} with data); "
                f"peak RSS {peak.peak_total / GiB:.2f} GiB (largest processes: {each} GiB)"
            )
    finally:
        if args.cube is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
