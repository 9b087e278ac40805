"""Pixels per second of the inversion on the CPU (numba) and on a GPU (CuPy), in one run.

Two cases, each inverted on the CPU (numpy chunks, the compiled ``numba`` engine, all cores)
and on the GPU (CuPy chunks, the namespace-generic ``array`` engine), one variable (``vx``),
12-day cells, lam 10:

1. the 5,000-pair synthetic case (``synthetic_cube(n_pairs=5000, years=8)``, ``--side``²
   pixels);
2. a cube that fills the card: those pixels tiled until the cube takes ``--fill-fraction`` of
   the free GPU memory (the array engine then works through it in batches sized to what is
   left). The CPU is timed on at most ``--cpu-max-pixels`` of it (its rate does not depend
   on the cube's size).

Prints the card's name, memory, versions and both rates for each case, and the largest
difference between the GPU and CPU results. Without a usable GPU it says why and exits 2
(``--cpu-only`` times the CPU alone).

Run: ``python benchmarks/bench_gpu.py [--side 64] [--fill-fraction 0.1] [--json out.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any

import numpy as np
import xarray as xr

import xr_itslive
from xr_itslive.kernels import batching
from xr_itslive.kernels.pipeline import Options
from xr_itslive.synthetic import synthetic_cube
from xr_itslive.workflows.invert import build_problem

STEP, LAM = 12.0, 10.0
NO_GPU_EXIT = 2


def gpu_status() -> tuple[Any, str]:
    """(cupy, '') when a CUDA device is usable, else (None, why not)."""
    try:
        import cupy
    except Exception as err:  # ImportError, or CUDA libraries that fail to load
        return None, f"CuPy is not importable ({type(err).__name__}: {err})"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "CuPy sees no CUDA device"
    except Exception as err:
        return None, f"CuPy sees no CUDA device ({type(err).__name__}: {err})"
    return cupy, ""


def card_description(cp) -> dict[str, Any]:
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    free, total = cp.cuda.runtime.memGetInfo()
    name = props["name"]
    return {
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "free_gib": free / 2**30,
        "total_gib": total / 2**30,
        "cupy": cp.__version__,
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
    }


def on_device(cube: xr.Dataset, cp, name: str = "vx") -> xr.Dataset:
    out = cube[[name]].copy()
    out[name] = cube[name].copy(data=cp.asarray(cube[name].values))
    return out


def tiled(cube: xr.Dataset, reps: int, xp, name: str = "vx") -> xr.Dataset:
    """``cube`` with its pixels repeated ``reps`` times along ``y`` (arrays of ``xp``)."""
    data = xp.tile(xp.asarray(cube[name].values), (1, reps, 1))
    ny = data.shape[1]
    out = xr.Dataset(
        {name: (cube[name].dims, data, cube[name].attrs)},
        coords={
            "mid_date": cube["mid_date"],
            "y": np.arange(ny, dtype=float),
            "x": cube["x"],
            "acquisition_date_img1": cube["acquisition_date_img1"],
            "acquisition_date_img2": cube["acquisition_date_img2"],
        },
    )
    return out


def timed_invert(cube: xr.Dataset, sync=None, **kwargs) -> tuple[float, xr.Dataset]:
    t0 = time.perf_counter()
    result = xr_itslive.invert(cube, variables="vx", step=STEP, lam=LAM, **kwargs)
    if sync is not None:
        sync()
    return time.perf_counter() - t0, result


def host(data) -> np.ndarray:
    return data.get() if hasattr(data, "get") else np.asarray(data)


def max_difference(gpu: xr.Dataset, cpu: xr.Dataset, n_pixels: int) -> float:
    a = host(gpu["vx"].data).reshape(gpu.sizes["time"], -1)[:, :n_pixels]
    b = cpu["vx"].values.reshape(cpu.sizes["time"], -1)[:, :n_pixels]
    both = ~(np.isnan(a) | np.isnan(b))
    if not np.array_equal(np.isnan(a), np.isnan(b)):
        return float("inf")
    return float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0


def report(label: str, n_pixels: int, seconds: float) -> float:
    rate = n_pixels / seconds
    print(f"  {label:44s} {rate:12,.0f} pixels/s  ({n_pixels:,} pixels in {seconds:.2f} s)")
    return rate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--years", type=float, default=8.0)
    parser.add_argument("--side", type=int, default=64, help="base cube: side x side pixels")
    parser.add_argument(
        "--fill-fraction",
        type=float,
        default=0.1,
        help="share of the free GPU memory the big cube's float32 data takes",
    )
    parser.add_argument("--cpu-max-pixels", type=int, default=131_072)
    parser.add_argument("--cpu-only", action="store_true", help="time the CPU alone")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)  # fmt: skip

    cp, why = gpu_status()
    if cp is None and not args.cpu_only:
        print(
            f"no GPU: {why}. This benchmark compares the CPU with a CUDA GPU; run it where "
            "CuPy sees a device (pip install 'xr_itslive[gpu]'), or pass --cpu-only.",
            file=sys.stderr,
        )
        return NO_GPU_EXIT

    figures: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "numpy": np.__version__,
        "xarray": xr.__version__,
    }
    print(f"machine: {figures['machine']}; numpy {np.__version__}, xarray {xr.__version__}")
    if cp is not None:
        figures["card"] = card_description(cp)
        card = figures["card"]
        print(
            f"card: {card['name']}, {card['free_gib']:.1f} GiB free of {card['total_gib']:.1f} "
            f"GiB; cupy {card['cupy']}, CUDA runtime {card['cuda_runtime']}"
        )
        sync = cp.cuda.Device().synchronize

    cube = synthetic_cube(n_pairs=args.pairs, ny=args.side, nx=args.side, years=args.years, seed=0)
    cube = cube[["vx"]]
    n_base = args.side * args.side
    problem = build_problem(cube, STEP)
    print(
        f"problem: {problem.geometry.n_pairs} pairs, {problem.n_cells} cells of {STEP:g} days, "
        f"bandwidth {problem.bandwidth}; lam {LAM:g}; one variable (vx)"
    )
    figures.update(pairs=args.pairs, cells=problem.n_cells, bandwidth=problem.bandwidth)

    # Warm-ups: numba compiles (or loads its cache); CuPy compiles its kernels once.
    warm = cube.isel(y=slice(0, 2))
    timed_invert(warm)
    if cp is not None:
        timed_invert(on_device(warm, cp), sync=sync)

    print(f"case 1: the {args.pairs:,}-pair synthetic case, {n_base:,} pixels")
    seconds, cpu_result = timed_invert(cube)
    figures["case1_cpu_pixels_per_s"] = report("CPU numba, numpy-backed", n_base, seconds)
    if cp is not None:
        seconds, gpu_result = timed_invert(on_device(cube, cp), sync=sync)
        figures["case1_gpu_pixels_per_s"] = report("GPU array engine, cupy-backed", n_base, seconds)
        diff = max_difference(gpu_result, cpu_result, n_base)
        figures["case1_max_abs_difference"] = diff
        print(f"  max |GPU - CPU| = {diff:.2e} m/yr")

    if cp is None:
        figures["case2"] = "skipped: no GPU"
    else:
        free = batching.free_device_bytes(cp.zeros(1))
        pair_bytes = problem.geometry.n_pairs * 4  # float32 cube data per pixel
        reps = max(1, int(args.fill_fraction * free / (pair_bytes * n_base)))
        n_big = reps * n_base
        batch = batching.pixel_batch_size(problem, Options(lams=(LAM,)), free)
        print(
            f"case 2: a cube filling the card, {n_big:,} pixels "
            f"({n_big * pair_bytes / 2**30:.1f} GiB of float32 data; batches of about "
            f"{batch:,} pixels)"
        )
        big = tiled(cube, reps, cp)
        seconds, big_result = timed_invert(big, sync=sync)
        figures["case2_pixels"] = n_big
        figures["case2_gpu_pixels_per_s"] = report("GPU array engine, cupy-backed", n_big, seconds)
        pool = cp.get_default_memory_pool()
        figures["case2_gpu_pool_gib"] = pool.total_bytes() / 2**30
        print(f"  CuPy memory pool after the run: {figures['case2_gpu_pool_gib']:.1f} GiB")
        same = max_difference(big_result, cpu_result, n_base)
        print(f"  max |GPU big cube - CPU| over its first {n_base:,} pixels = {same:.2e} m/yr")
        figures["case2_max_abs_difference"] = same
        del big, big_result
        pool.free_all_blocks()
        n_cpu = min(n_big, max(n_base, args.cpu_max_pixels // n_base * n_base))
        seconds, _ = timed_invert(tiled(cube, n_cpu // n_base, np))
        figures["case2_cpu_pixels"] = n_cpu
        figures["case2_cpu_pixels_per_s"] = report(
            f"CPU numba, numpy-backed (first {n_cpu:,} pixels)", n_cpu, seconds
        )

    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
