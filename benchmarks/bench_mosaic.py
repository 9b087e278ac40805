"""A glacier over two cubes: the mosaic of two halves of the real cube vs the whole cube.

The real glacier cube (47,892 pairs × 37 × 40, tile N30E090) is cut into its west and east
halves, written as two zarr stores in the real format (int16, consolidated, 20000 × 10 × 10
chunks) and opened with ``open_cube``; ``invert_mosaic`` of the two halves is timed against
``invert`` of the whole cube opened the same way (vx, vy, error weights, Tukey IRLS, 12-day
cells), each computed end to end from disk on the threaded scheduler, the fastest of
``--repeat`` runs. Prints the times, their ratio, the largest difference and the peak memory.

Run: ``python benchmarks/bench_mosaic.py [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

import xr_itslive

CUBE = Path(__file__).resolve().parents[2] / "shared/data/itslive/N30E090_glacier_cube.zarr"
KWARGS = dict(step=12.0, lam=10.0, weights="error", robust=True)
NAMES = ["vx", "vy", "vx_error", "vy_error"]


def write_halves(folder: Path) -> tuple[str, str, str]:
    raw = xr.open_zarr(CUBE, consolidated=True, zarr_format=2)
    keep = NAMES + ["acquisition_date_img1", "acquisition_date_img2"]
    keep += ["mapping"] if "mapping" in raw.variables else []
    paths = []
    for name, window in (("whole", slice(None)), ("west", slice(0, 20)), ("east", slice(20, None))):
        part = raw[keep].isel(x=window)
        for var in part.variables.values():
            for key in ("chunks", "preferred_chunks", "compressor", "filters"):
                var.encoding.pop(key, None)
        path = folder / f"{name}.zarr"
        part.chunk({"mid_date": 20000, "y": 10, "x": 10}).to_zarr(
            path, zarr_format=2, consolidated=True
        )
        paths.append(str(path))
    return tuple(paths)


def fastest(run, repeat: int) -> tuple[float, xr.Dataset]:
    best, out = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {platform.platform()}")
    with tempfile.TemporaryDirectory() as tmp:
        whole_path, west_path, east_path = write_halves(Path(tmp))

        def whole():
            cube = xr_itslive.open_cube(whole_path, variables=NAMES)
            return xr_itslive.invert(cube, **KWARGS).compute()

        def halves():
            return xr_itslive.invert_mosaic([west_path, east_path], **KWARGS).compute()

        xr_itslive.invert(  # compile the kernels outside the timings
            xr_itslive.open_cube(whole_path, variables=NAMES).isel(x=slice(0, 2), y=slice(0, 2)),
            **KWARGS,
        ).compute()
        t_whole, a = fastest(whole, args.repeat)
        t_mosaic, b = fastest(halves, args.repeat)
        diff = float(np.nanmax(np.abs(a["vx"].values - b["vx"].values)))
        print(f"cube: {a.sizes['time']} cells x {a.sizes['y']} x {a.sizes['x']} pixels")
        print(f"invert whole cube (open + invert + compute):      {t_whole:6.2f} s")
        print(f"invert_mosaic of the two halves (same):           {t_mosaic:6.2f} s")
        print(f"mosaic / whole: {t_mosaic / t_whole:.2f}x; max |vx difference| = {diff:.3g} m/yr")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of the process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
