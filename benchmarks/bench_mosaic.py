"""A glacier over two cubes: the mosaic of two halves of the real cube vs the whole cube.

The real glacier cube (47,892 pairs × 37 × 40, tile N30E090) is cut into its west and east
halves, written as two zarr stores in the real format (int16, consolidated, 20000 × 10 × 10
chunks) and opened with ``open_cube``; ``invert_mosaic`` of the two halves is timed against
``invert`` of the whole cube opened the same way (vx, vy, error weights, Tukey IRLS, 12-day
cells), each computed end to end from disk on the threaded scheduler, the fastest of
``--repeat`` runs.

Each of the two runs happens in its own child process (this script, ``--child``), so that
the peak memory of one is not the other's: a process's peak RSS (``ru_maxrss``) only grows.
Each child first compiles the kernels on 2 × 2 corners (outside the timings) and reports
its peak RSS after that warm-up and after the timed runs; the difference is what the run
itself added. Prints the times, the mosaic/whole time ratio, the largest difference and both
peaks.

Run: ``python benchmarks/bench_mosaic.py [--repeat 3] [--quick] [--json figures.json]``
(``--quick``: 2,000 pairs × 10 rows of the cube, for a test; not a measurement.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

CUBE = Path(__file__).resolve().parents[2] / "shared/data/itslive/N30E090_glacier_cube.zarr"
KWARGS = dict(step=12.0, lam=10.0, weights="error", robust=True)
NAMES = ["vx", "vy", "vx_error", "vy_error"]
#: The ``--quick`` cut of the cube: the first pairs and rows (all 40 columns, both halves).
QUICK = {"mid_date": slice(0, 2000), "y": slice(0, 10)}


def write_halves(folder: Path, quick: bool = False) -> tuple[str, str, str]:
    """The whole cube and its west and east halves as zarr stores in ``folder``."""
    raw = xr.open_zarr(CUBE, consolidated=True, zarr_format=2)
    keep = NAMES + ["acquisition_date_img1", "acquisition_date_img2"]
    keep += ["mapping"] if "mapping" in raw.variables else []
    raw = raw[keep].isel(QUICK) if quick else raw[keep]
    paths = []
    for name, window in (("whole", slice(None)), ("west", slice(0, 20)), ("east", slice(20, None))):
        part = raw.isel(x=window)
        for var in part.variables.values():
            for key in ("chunks", "preferred_chunks", "compressor", "filters"):
                var.encoding.pop(key, None)
        path = folder / f"{name}.zarr"
        part.chunk({"mid_date": 20000, "y": 10, "x": 10}).to_zarr(
            path, zarr_format=2, consolidated=True
        )
        paths.append(str(path))
    return tuple(paths)


def _peak_mb() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS)
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def child(kind: str, paths: list[str], repeat: int, out: Path) -> dict:
    """One run, in this process: ``kind`` is ``"whole"`` or ``"mosaic"``. Writes ``vx`` to
    ``out`` (``.npy``) and returns the time and peaks."""
    import xr_itslive

    whole_path, west_path, east_path = paths
    # Compile the kernels (and import what the run imports) outside the timings, on a 2 x 2
    # corner of each store the run reads, through the same function.
    corners = [
        xr_itslive.open_cube(path, variables=NAMES).isel(x=slice(0, 2), y=slice(0, 2))
        for path in ((whole_path,) if kind == "whole" else (west_path, east_path))
    ]
    if kind == "whole":
        xr_itslive.invert(corners[0], **KWARGS).compute()
    else:
        xr_itslive.invert_mosaic(corners, **KWARGS).compute()
    warm_mb = _peak_mb()

    def run() -> xr.Dataset:
        if kind == "whole":
            cube = xr_itslive.open_cube(whole_path, variables=NAMES)
            return xr_itslive.invert(cube, **KWARGS).compute()
        return xr_itslive.invert_mosaic([west_path, east_path], **KWARGS).compute()

    best, result = np.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    np.save(out, result["vx"].values)
    sizes = {dim: int(result.sizes[dim]) for dim in ("time", "y", "x")}
    return {"seconds": best, "peak_mb": _peak_mb(), "warm_peak_mb": warm_mb, "sizes": sizes}


def _run_child(kind: str, paths: tuple[str, ...], repeat: int, folder: Path) -> dict:
    out = folder / f"{kind}_vx.npy"
    command = [sys.executable, __file__, "--child", kind, "--repeat", str(repeat)]
    command += ["--paths", *paths, "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} run failed:\n{done.stdout}\n{done.stderr[-4000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures["vx"] = np.load(out)
    return figures


def run(repeat: int = 3, quick: bool = False) -> dict:
    """Both runs, each in a child process; returns the figures that :func:`main` prints."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_halves(folder, quick=quick)
        whole = _run_child("whole", paths, repeat, folder)
        mosaic = _run_child("mosaic", paths, repeat, folder)
    a, b = whole.pop("vx"), mosaic.pop("vx")
    diff = float(np.nanmax(np.abs(a - b))) if a.shape == b.shape else float("nan")
    return {
        "quick": quick,
        "repeat": repeat,
        "sizes": whole["sizes"],
        "whole_s": whole["seconds"],
        "mosaic_s": mosaic["seconds"],
        "ratio": mosaic["seconds"] / whole["seconds"],
        "max_vx_difference": diff,
        "same_shape": a.shape == b.shape,
        "whole_peak_mb": whole["peak_mb"],
        "whole_warm_peak_mb": whole["warm_peak_mb"],
        "mosaic_peak_mb": mosaic["peak_mb"],
        "mosaic_warm_peak_mb": mosaic["warm_peak_mb"],
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a tiny cut of the cube (a test)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--child", choices=("whole", "mosaic"), help=argparse.SUPPRESS)
    parser.add_argument("--paths", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.paths, args.repeat, args.out)))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; {platform.platform()}")
    figures = run(args.repeat, quick=args.quick)
    sizes = figures["sizes"]
    print(f"cube: {sizes['time']} cells x {sizes['y']} x {sizes['x']} pixels"
          + (" (--quick: a tiny cut, not a measurement)" if args.quick else ""))  # fmt: skip
    print(f"invert whole cube (open + invert + compute):      {figures['whole_s']:6.2f} s")
    print(f"invert_mosaic of the two halves (same):           {figures['mosaic_s']:6.2f} s")
    print(
        f"mosaic / whole: {figures['ratio']:.2f}x; "
        f"max |vx difference| = {figures['max_vx_difference']:.3g} m/yr"
    )
    for kind in ("whole", "mosaic"):
        peak, warm = figures[f"{kind}_peak_mb"], figures[f"{kind}_warm_peak_mb"]
        print(
            f"peak RSS of the {kind} run's process: {peak:.0f} MB "
            f"({peak - warm:+.0f} MB over its warm-up peak of {warm:.0f} MB)"
        )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
