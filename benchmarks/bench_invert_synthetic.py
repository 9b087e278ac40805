"""Pixels per second of ``invert`` on a synthetic cube, next to the reference formulation.

The case of the issue: 5,000 pairs over 8 years, 12-day cells (~244 unknowns), baselines of
5..546 days. The reference formulation builds the dense design matrix and calls
``np.linalg.solve`` once per pixel, as peers do. Both run in this process, on this machine.

Run: ``python benchmarks/bench_invert_synthetic.py [--pixels 10000] [--reference-pixels 200]``
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import dask
import numpy as np

import xr_itslive
from xr_itslive.synthetic import synthetic_cube


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reference_pixels_per_second(
    cube, n_pixels: int, step: float, lam: float
) -> tuple[float, np.ndarray]:
    dm = xr_itslive.design_matrix(cube, step=step)
    a = dm.matrix.toarray()
    reg = lam**2 * (dm.regularization.T @ dm.regularization).toarray()
    values = cube["vx"].values[dm.kept].reshape(a.shape[0], -1)[:, :n_pixels].astype(float)
    out = np.empty((a.shape[1], values.shape[1]))
    t0 = time.perf_counter()
    for p in range(values.shape[1]):  # the reference: one dense solve per pixel
        valid = ~np.isnan(values[:, p])
        av = a[valid]
        out[:, p] = np.linalg.solve(av.T @ av + reg, av.T @ values[valid, p])
    return values.shape[1] / (time.perf_counter() - t0), out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--pixels", type=int, default=10_000)
    parser.add_argument("--reference-pixels", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=25, help="spatial chunk side for the dask run")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    side = int(np.sqrt(args.pixels))
    step, lam = 12.0, 10.0
    cube = synthetic_cube(n_pairs=args.pairs, ny=side, nx=side, years=8, seed=0)
    n_pixels = side * side
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; numpy {np.__version__}")
    print(f"cube: {args.pairs} pairs x {n_pixels} pixels, step {step:g} d, lam {lam:g}")
    print(f"peak RSS after building the cube: {peak_rss_mb():.0f} MB")

    # warm up (numba compiles or loads its cache)
    xr_itslive.invert(cube.isel(y=slice(0, 2), x=slice(0, 2)), variables="vx", step=step, lam=lam)

    timings = {}
    for label, data, scheduler in [
        ("invert, numpy-backed (2 threads)", cube, None),
        (
            f"invert, dask {args.chunk}x{args.chunk} chunks (threads)",
            cube.chunk({"y": args.chunk, "x": args.chunk, "mid_date": -1}),
            "threads",
        ),
    ]:
        best = np.inf
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            with dask.config.set(scheduler=scheduler or "threads"):
                result = xr_itslive.invert(data, variables="vx", step=step, lam=lam).compute()
            best = min(best, time.perf_counter() - t0)
        timings[label] = n_pixels / best
        print(f"{label:45s}: {n_pixels / best:10.0f} pixels/s  ({best:.2f} s)")
    cells = result.sizes["time"]
    print(f"unknowns per pixel: {cells}, bandwidth {result.attrs['bandwidth']} cells")

    ref_rate, ref_solution = reference_pixels_per_second(cube, args.reference_pixels, step, lam)
    ours = result["vx"].values.reshape(cells, -1)[:, : args.reference_pixels]
    diff = np.nanmax(np.abs(ours - ref_solution))
    print(
        f"{'reference (dense A, np.linalg.solve per pixel)':45s}: {ref_rate:10.0f} pixels/s "
        f"({args.reference_pixels} pixels)"
    )
    best_rate = max(timings.values())
    print(f"speed-up over the reference in this run: {best_rate / ref_rate:.0f}x")
    print(f"max |invert - reference| = {diff:.2e} m/yr (float32 output)")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
