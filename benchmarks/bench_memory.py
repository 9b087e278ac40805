"""Peak worker memory of ``invert_to_zarr`` as the cube grows, at fixed chunking.

The chunking rule (``mid_date`` whole, space chunked) makes every task hold one spatial chunk
of all pairs, so a worker's peak memory should follow the chunk size, not the cube size. This
script writes synthetic cubes of 1×, 4× and 16× the pixels with the same chunks to zarr, inverts
each with ``invert_to_zarr`` on a ``LocalCluster`` (fresh workers for each size), samples every
worker's resident memory (psutil, every 10 ms) and prints a table.

Run::

    python benchmarks/bench_memory.py            # 1x, 4x, 16x of 16x16 pixels, 4000 pairs
    python benchmarks/bench_memory.py --quick    # a tiny run (used by the tests)
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

MB = 1024**2


def write_cube(path: Path, side: int, base: int, n_pairs: int, chunk: int) -> None:
    """A synthetic cube of ``side × side`` pixels: the ``base × base`` one tiled, written lazily."""
    import dask.array as da
    import numpy as np
    import xarray as xr

    from xr_itslive.synthetic import synthetic_cube

    small = synthetic_cube(n_pairs=n_pairs, ny=base, nx=base, seed=1, gap_fraction=0.3)
    reps = side // base
    variables = {}
    for name in ("vx", "vy"):
        tiled = da.tile(da.from_array(small[name].values, chunks=(-1, base, base)), (1, reps, reps))
        variables[name] = (("mid_date", "y", "x"), tiled.rechunk((-1, chunk, chunk)))
    for name in ("acquisition_date_img1", "acquisition_date_img2"):  # data variables, as on S3
        variables[name] = ("mid_date", small[name].values)
    coords = {"mid_date": small["mid_date"]}
    coords["y"] = 3_315_847.5 - 120.0 * np.arange(side)
    coords["x"] = 784_252.5 + 120.0 * np.arange(side)
    cube = xr.Dataset(variables, coords=coords, attrs={"projection": "32646"})
    cube.to_zarr(path, mode="w", zarr_format=2, consolidated=True)  # as ITS_LIVE stores them


class PeakSampler:
    """Samples the resident memory of some processes in a thread; keeps each one's peak."""

    def __init__(self, pids: list[int], interval: float = 0.01) -> None:
        import psutil

        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak = dict.fromkeys(pids, 0)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in self.processes:
                try:
                    rss = proc.memory_info().rss
                except Exception:  # a worker that went away
                    continue
                self.peak[proc.pid] = max(self.peak[proc.pid], rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def graph_bytes(result) -> int:
    """Pickled size of every task of a lazy result's graph."""
    import pickle

    return sum(len(pickle.dumps(task)) for task in dict(result.__dask_graph__()).values())


def worker_rss(client) -> dict[int, int]:
    import psutil

    pids = client.run(lambda: __import__("os").getpid())
    return {pid: psutil.Process(pid).memory_info().rss for pid in pids.values()}


def warm_up(client) -> None:
    """Import and load the compiled kernels on every worker, so the baseline includes them."""
    from xr_itslive.synthetic import synthetic_cube

    cube = synthetic_cube(n_pairs=200, ny=2, nx=2, chunks={"y": 1, "x": 1})
    from xr_itslive import invert

    client.compute(invert(cube, step=30.0)["vx"]).result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: 1x and 4x only")
    parser.add_argument("--base", type=int, default=16, help="pixels a side at 1x (16)")
    parser.add_argument("--pairs", type=int, default=4000, help="image pairs (4000)")
    parser.add_argument("--chunk", type=int, default=8, help="spatial chunk a side (8)")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster workers (2)")
    parser.add_argument("--workdir", default=None, help="where to write cubes and results")
    args = parser.parse_args(argv)
    scales = (1, 4) if args.quick else (1, 4, 16)
    base, pairs, chunk = (4, 300, 2) if args.quick else (args.base, args.pairs, args.chunk)

    from distributed import Client, LocalCluster

    import xr_itslive
    from xr_itslive.workflows.invert_to_zarr import invert_to_zarr

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_memory_"))
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, dashboard_address=None, memory_limit=None
    )
    client = Client(cluster)
    chunk_input_mb = chunk * chunk * pairs * 4 * 2 / MB  # vx + vy float32
    rows = []
    try:
        for scale in scales:
            side = base * math.isqrt(scale)
            source = workdir / f"cube_{scale}x.zarr"
            write_cube(source, side, base, pairs, chunk)
            client.restart()
            warm_up(client)
            baseline = worker_rss(client)
            cube = xr_itslive.open_cube(str(source), variables=["vx", "vy"])
            graph_kb = graph_bytes(xr_itslive.invert(cube, step=30.0)) / 1024
            started = time.perf_counter()
            with PeakSampler(list(baseline)) as sampler:
                summary = invert_to_zarr(
                    cube,
                    workdir / f"result_{scale}x.zarr",
                    step=30.0,
                    scheduler=client,
                    progress=False,
                    overwrite=True,
                )
            seconds = time.perf_counter() - started
            growth = max(sampler.peak[pid] - baseline[pid] for pid in baseline)
            rows.append(
                (
                    f"{scale}x",
                    side * side,
                    summary.n_chunks,
                    side * side * pairs * 4 * 2 / MB,
                    max(baseline.values()) / MB,
                    max(sampler.peak.values()) / MB,
                    growth / MB,
                    graph_kb / summary.n_chunks,
                    seconds,
                )
            )
    finally:
        client.close()
        cluster.close()

    print(
        f"invert_to_zarr on a LocalCluster: {args.workers} workers x 1 thread, {pairs} pairs, "
        f"chunks {chunk}x{chunk} pixels (input {chunk_input_mb:.1f} MB per chunk)"
    )
    header = ("scale", "pixels", "chunks", "cube MB", "base RSS MB", "peak RSS MB", "growth MB",
              "graph KB/chk", "seconds")  # fmt: skip
    print("  ".join(f"{h:>12}" for h in header))
    for row in rows:
        scale, pixels, n_chunks, cube_mb, base_mb, peak_mb, growth_mb, graph_kb, seconds = row
        print(
            f"{scale:>12}  {pixels:>12}  {n_chunks:>12}  {cube_mb:>12.1f}  {base_mb:>12.1f}  "
            f"{peak_mb:>12.1f}  {growth_mb:>12.1f}  {graph_kb:>12.1f}  {seconds:>12.2f}"
        )
    print(
        "growth: peak minus baseline resident memory of the busiest worker (after imports). "
        "graph: pickled task graph of the result per chunk (what the scheduler ships)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
