"""Held-out benchmark of the interval-average GP on the real ITS_LIVE point series.

Protocol (issue 5): the 18,489 pairs of ``point_series_lat34.3963_lon85.9067.csv``; a random
20% hidden; the GP fitted on every other pair; each hidden pair predicted as its interval
average plus its noise. Prints the fit time, the median and 90th percentile of |error|, and
the coverage of the 95% band overall and per baseline class (<30, 30-60, 60-120, >=120 d).

Anchor from the issue (the seed's scikit-learn GP on mid_date, 8,000 training pairs): 769 s,
median 22.0 m/yr, P90 63.7, coverage 0.953 (0.76 below 30 days).

Usage: ``python benchmarks/bench_gp.py [--csv PATH] [--fraction 1.0] [--seed 0]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import xr_itslive  # noqa: E402

DEFAULT_CSV = REPO.parent / "shared" / "data" / "itslive" / "point_series_lat34.3963_lon85.9067.csv"
CLASSES = ((0, 30, "<30 d"), (30, 60, "30-60 d"), (60, 120, "60-120 d"), (120, np.inf, ">=120 d"))


def read_point_series(path: Path) -> dict[str, np.ndarray]:
    """The CSV as arrays: img1, img2 (mid_date ∓ dt/2), v, dt (days), satellite."""
    import pandas as pd

    table = pd.read_csv(path, skipinitialspace=True)
    table.columns = [c.strip() for c in table.columns]
    mid = pd.to_datetime(table["mid_date"]).dt.tz_localize(None).to_numpy("datetime64[ns]")
    dt = table["dt (days)"].to_numpy(np.float64)
    half = (dt * 86400e9 / 2).astype("int64").astype("timedelta64[ns]")
    return {
        "img1": mid - half,
        "img2": mid + half,
        "v": table["v [m/yr]"].to_numpy(np.float64),
        "dt": dt,
        "satellite": table["satellite"].astype(str).str.strip().to_numpy(),
    }


def run(path: Path = DEFAULT_CSV, fraction: float = 1.0, seed: int = 0, **fit_kwargs) -> dict:
    """Fit on 80% of (a ``fraction`` of) the pairs, score the rest; returns the figures."""
    data = read_point_series(path)
    rng = np.random.default_rng(seed)
    n = data["v"].size
    chosen = rng.permutation(n)[: max(int(round(fraction * n)), 20)]
    hidden = np.zeros(n, bool)
    hidden[chosen[: len(chosen) // 5]] = True
    train = np.zeros(n, bool)
    train[chosen[len(chosen) // 5 :]] = True

    tic = time.perf_counter()
    fit = xr_itslive.gp_fit(
        data["img1"][train], data["img2"][train], data["v"][train], **fit_kwargs
    )
    fit_seconds = time.perf_counter() - tic
    tic = time.perf_counter()
    mean, _ = fit.predict_pairs(data["img1"][hidden], data["img2"][hidden])
    lower, upper = fit.pair_interval(data["img1"][hidden], data["img2"][hidden], level=0.95)
    predict_seconds = time.perf_counter() - tic

    truth = data["v"][hidden]
    error = np.abs(mean - truth)
    inside = (truth >= lower) & (truth <= upper)
    dt = data["dt"][hidden]
    figures = {
        "n_train": int(train.sum()),
        "n_hidden": int(hidden.sum()),
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
        "median_abs_error": float(np.median(error)),
        "p90_abs_error": float(np.percentile(error, 90)),
        "coverage": float(inside.mean()),
        "coverage_by_class": {
            label: float(inside[(dt >= lo) & (dt < hi)].mean())
            if ((dt >= lo) & (dt < hi)).any()
            else float("nan")
            for lo, hi, label in CLASSES
        },
        "fit": fit,
    }
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=float, default=4.0)
    parser.add_argument("--harmonics", type=int, default=1)
    parser.add_argument(
        "--gaussian", action="store_true", help="Gaussian noise (likelihood='gaussian')"
    )
    args = parser.parse_args(argv)
    figures = run(
        args.csv, args.fraction, args.seed, step=args.step, harmonics=args.harmonics,
        likelihood="gaussian" if args.gaussian else "student-t",
    )  # fmt: skip
    print(figures["fit"])
    print(f"training pairs        {figures['n_train']}")
    print(f"held-out pairs        {figures['n_hidden']}")
    print(f"fit time              {figures['fit_seconds']:.2f} s")
    print(f"predict time          {figures['predict_seconds']:.2f} s")
    print(f"median |error|        {figures['median_abs_error']:.2f} m/yr   (target < 22.0)")
    print(f"P90 |error|           {figures['p90_abs_error']:.2f} m/yr   (target < 62)")
    print(f"95% band coverage     {figures['coverage']:.3f}        (target 0.93-0.97)")
    for label, value in figures["coverage_by_class"].items():
        print(f"  coverage {label:<10}  {value:.3f}        (target >= 0.90)")


if __name__ == "__main__":
    main()
