"""Tasks of 10 x 10 against 20 x 20 pixels: the read and the inversion of one cube, back to back.

``open_cube`` gives each task 2 x 2 stored chunks where every pair of them fits
``xr_itslive.io.cube.TASK_BYTES`` (:func:`xr_itslive.io.cube.inversion_chunks`). This prints
why: for each task size, alternately and ``--repeat`` times, the seconds to read and decode vx
and vy (``benchmarks/bench_whole_cube.py``'s measure) and those of ``invert_to_zarr`` (the
CLI's job: error weights, Tukey, 12-day cells) on dask's threads, with its CPU seconds, in
this one process.

Run::

    python benchmarks/make_cube.py /tmp/c16.zarr --ny 208 --nx 208 --pairs 25000
    python benchmarks/bench_task_size.py --cube /tmp/c16.zarr
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a checkout
sys.path.insert(0, str(HERE))

VARIABLES = ["vx", "vy", "vx_error", "vy_error"]


def invert_seconds(cube: Path, side: int, store: Path) -> tuple[float, float]:
    """Wall and CPU seconds of invert_to_zarr with ``side`` x ``side``-pixel tasks."""
    import xr_itslive
    from xr_itslive.workflows.invert_to_zarr import invert_to_zarr

    shutil.rmtree(store, ignore_errors=True)
    started, cpu = time.perf_counter(), time.process_time()
    ds = xr_itslive.open_cube(cube, variables=VARIABLES, chunks=_chunks(side))
    invert_to_zarr(ds, store, progress=False, weights="error", robust="tukey", step=12)
    return time.perf_counter() - started, time.process_time() - cpu


def _chunks(side: int) -> dict[str, int]:
    return {"mid_date": -1, "y": side, "x": side}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", type=Path, required=True)
    parser.add_argument("--sides", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    from bench_whole_cube import read_and_decode

    work = Path(tempfile.mkdtemp(prefix="task_size_"))
    figures: dict = {side: {"read": [], "invert": [], "cpu": []} for side in args.sides}
    print(f"machine: {os.cpu_count()} cores; cube {args.cube}")
    try:
        for run in range(args.repeat):
            for side in args.sides:
                read_s = read_and_decode(args.cube, chunks=_chunks(side))[0]
                wall, cpu = invert_seconds(args.cube, side, work / "out.zarr")
                figures[side]["read"].append(read_s)
                figures[side]["invert"].append(wall)
                figures[side]["cpu"].append(cpu)
                print(f"run {run + 1}, {side} x {side} tasks: read + decode {read_s:.1f} s; "
                      f"invert_to_zarr {wall:.1f} s ({cpu:.1f} CPU s) = "
                      f"{wall / read_s:.2f}x read")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures


if __name__ == "__main__":
    main()
