"""Invert the real glacier cube end to end and compare with the time to just read it.

The cube: ``../shared/data/itslive/N30E090_glacier_cube.zarr`` (47,892 pairs x 37 x 40, 707
pixels with data, 1986-2024). Prints the time to read vx and vy, the time to open + invert
+ compute both at 12-day cells (~1,160 unknowns per pixel), their ratio, pixels/s and peak
memory.

Run: ``python benchmarks/bench_real_cube.py [--cube PATH] [--step 12]``
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import dask
import numpy as np

import xr_itslive

DEFAULT_CUBE = Path(__file__).resolve().parents[2] / "shared/data/itslive/N30E090_glacier_cube.zarr"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", default=str(DEFAULT_CUBE))
    parser.add_argument("--step", type=float, default=12.0)
    parser.add_argument("--lam", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; cube {args.cube}")

    with dask.config.set(scheduler="threads"):
        # warm-up: numba compiles or loads its cache, the OS caches the files
        cube = xr_itslive.open_cube(args.cube, variables=["vx", "vy"])
        xr_itslive.invert(cube.isel(y=slice(0, 10), x=slice(0, 10)), step=args.step).compute()

        invert_best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            cube = xr_itslive.open_cube(args.cube, variables=["vx", "vy"])
            result = xr_itslive.invert(cube, step=args.step, lam=args.lam).compute()
            invert_best = min(invert_best, time.perf_counter() - t0)
        # peak memory of the inversion, before the read baseline loads the whole cube
        invert_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        read_best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            cube = xr_itslive.open_cube(args.cube, variables=["vx", "vy"])
            cube[["vx", "vy"]].load()
            read_best = min(read_best, time.perf_counter() - t0)

    solved = int(np.isfinite(result["vx"].isel(time=0)).sum())
    print(
        f"pairs: {cube.sizes['mid_date']}, pixels: {cube.sizes['y'] * cube.sizes['x']}, "
        f"solved: {solved}, cells: {result.sizes['time']} "
        f"({result.attrs['start'][:10]}..{result.attrs['end'][:10]}), "
        f"bandwidth {result.attrs['bandwidth']}"
    )
    print(f"read vx, vy (open + load):            {read_best:6.2f} s")
    print(f"open + invert vx, vy + compute:       {invert_best:6.2f} s")
    print(f"ratio invert / read:                  {invert_best / read_best:6.2f}")
    print(f"glacier pixels/s (2 variables each):  {solved / invert_best:8.0f}")
    chunk_mb = cube.sizes["mid_date"] * 10 * 10 * 4 / 1e6
    print(
        f"peak RSS during open + invert: {invert_rss:.0f} MB (input chunks: {chunk_mb:.0f} MB "
        f"of float32 each; the whole vx+vy cube decoded is {2 * cube['vx'].size * 4 / 1e6:.0f} MB)"
    )


if __name__ == "__main__":
    main()
