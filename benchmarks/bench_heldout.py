"""Held-out prediction error on the real glacier cube: plain, weighted, robust and auto-λ.

Protocol (issue 5): pairs from 2014-01-01 to 2024-11-03; a random sample of pixels with at
least 500 valid pairs; a random 20% of each pixel's valid pairs hidden. Each setting inverts
the rest and predicts the hidden pairs (``predict``: the model's mean over each pair's
interval). Prints the median and 90th percentile of |error| for vx and vy, and the runtime
(invert + predict, both variables; the fastest of ``--repeat`` runs).
A per-pixel median of the training pairs is the naive baseline.

Run: ``python benchmarks/bench_heldout.py [--pixels 200] [--step 12] [--seed 0] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import xarray as xr

import xr_itslive

DEFAULT_CUBE = Path(__file__).resolve().parents[2] / "shared/data/itslive/N30E090_glacier_cube.zarr"
START, END = "2014-01-01", "2024-11-03"


def load_sample(path: str, n_pixels: int, seed: int) -> tuple[xr.Dataset, xr.Dataset]:
    names = ["vx", "vy", "vx_error", "vy_error"]
    cube = xr_itslive.open_cube(path, variables=names)
    inside = (cube["acquisition_date_img1"] >= np.datetime64(START)) & (
        cube["acquisition_date_img2"] <= np.datetime64(END)
    )
    cube = cube.isel(mid_date=np.flatnonzero(inside.values)).load()
    counts = cube["vx"].notnull().sum("mid_date").values
    ys, xs = np.nonzero(counts >= 500)
    rng = np.random.default_rng(seed)
    pick = rng.choice(ys.size, min(n_pixels, ys.size), replace=False)
    sample = cube.isel(
        y=xr.DataArray(ys[pick], dims="pixel"), x=xr.DataArray(xs[pick], dims="pixel")
    )
    hidden = np.zeros(sample["vx"].shape, bool)
    valid = sample["vx"].notnull().values & sample["vy"].notnull().values
    for p in range(valid.shape[1]):  # choosing the held-out pairs, not in any timed path
        rows = np.flatnonzero(valid[:, p])
        hidden[rng.choice(rows, int(0.2 * rows.size), replace=False), p] = True
    hidden = xr.DataArray(hidden, dims=sample["vx"].dims)
    training = sample.assign(vx=sample["vx"].where(~hidden), vy=sample["vy"].where(~hidden))
    truth = sample[["vx", "vy"]].where(hidden)
    return training, truth


def scores(predicted: xr.Dataset, truth: xr.Dataset) -> dict[str, tuple[float, float]]:
    out = {}
    for name in ("vx", "vy"):
        error = np.abs((predicted[name] - truth[name]).transpose("mid_date", "pixel").values)
        error = error[np.isfinite(truth[name].transpose("mid_date", "pixel").values)]
        error = error[np.isfinite(error)]
        out[name] = (float(np.median(error)), float(np.percentile(error, 90)))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", default=str(DEFAULT_CUBE))
    parser.add_argument("--pixels", type=int, default=200)
    parser.add_argument("--step", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting (fastest kept)")
    args = parser.parse_args(argv)
    training, truth = load_sample(args.cube, args.pixels, args.seed)
    n_hidden = int(truth["vx"].notnull().sum())
    print(
        f"{training.sizes['pixel']} pixels, {training.sizes['mid_date']} pairs {START}..{END}, "
        f"{n_hidden} held-out pairs, step {args.step:g} d"
    )

    median = training[["vx", "vy"]].median("mid_date")
    naive = scores(median + 0 * truth, truth)
    print(
        f"{'setting':44s} {'vx median':>9s} {'vx P90':>7s} "
        f"{'vy median':>9s} {'vy P90':>7s} {'time':>7s}"
    )
    print(
        f"{'per-pixel median of training pairs':44s} {naive['vx'][0]:9.2f} {naive['vx'][1]:7.1f} "
        f"{naive['vy'][0]:9.2f} {naive['vy'][1]:7.1f}"
    )
    settings = {
        "plain, lam=10": {"lam": 10.0},
        "weights='error', lam=10": {"lam": 10.0, "weights": "error"},
        "robust (Tukey), lam=10": {"lam": 10.0, "robust": True},
        "robust + weights='error', lam=10": {"lam": 10.0, "robust": True, "weights": "error"},
        "robust + weights='error', 3 iterations": {
            "lam": 10.0,
            "robust": True,
            "weights": "error",
            "robust_iterations": 3,
        },
        "robust + weights='error', 4 iterations": {
            "lam": 10.0,
            "robust": True,
            "weights": "error",
            "robust_iterations": 4,
        },
        "lam='auto' (GCV per pixel)": {"lam": "auto"},
        "robust + weights='error' + lam='auto'": {
            "lam": "auto",
            "robust": True,
            "weights": "error",
        },
    }
    for kwargs in settings.values():  # numba warm-up: compile (or load) every kernel used
        xr_itslive.invert(training.isel(pixel=slice(0, 2)), step=args.step, **kwargs).compute()
    timings = {}
    for label, kwargs in settings.items():
        seconds = float("inf")
        for _ in range(args.repeat):  # the fastest of a few runs: this machine is shared
            t0 = time.perf_counter()
            result = xr_itslive.invert(training, step=args.step, start=START, end=END, **kwargs)
            predicted = xr_itslive.predict(training, result)
            seconds = min(seconds, time.perf_counter() - t0)
        timings[label] = seconds
        s = scores(predicted, truth)
        print(
            f"{label:44s} {s['vx'][0]:9.2f} {s['vx'][1]:7.1f} "
            f"{s['vy'][0]:9.2f} {s['vy'][1]:7.1f} {seconds:6.2f}s"
        )
    plain = timings["plain, lam=10"]
    print(
        "robust + weights time / plain time: "
        f"{timings['robust + weights=' + repr('error') + ', lam=10'] / plain:.1f}x"
    )
    print("TICOI 0.1.2 (ITS_LIVE demo settings, issue 5's figures): vx 2.56 / 23.3, vy 2.64 / 23.2")


if __name__ == "__main__":
    main()
