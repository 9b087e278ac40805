"""Same-run comparison with TICOI 0.1.2 on the held-out protocol of issue 5.

Both tools see the same sample (``bench_heldout.load_sample``: pairs 2014-01-01..2024-11-03
of the real glacier cube, random pixels with >= 500 valid pairs, a random 20% of each pixel's
valid pairs hidden) and predict the same hidden pairs; errors are scored on the hidden pairs
that every setting predicts.

- xr_itslive runs here: ``invert(training, step=12, start, end, lam=10)`` plain and with
  ``robust=True, weights="error"``, then ``predict``.
- TICOI runs in its own virtual environment (it is not a dependency of xr_itslive): this file
  is re-run there with ``--ticoi-worker IN OUT`` on a temporary ``.npz`` with the sample.
  The sample's pixels become the columns of a 1 × n-pixel cube with the sample's full
  ``mid_date`` axis (hidden pairs are NaN, as missing pairs are in a real cube), loaded into
  TICOI's ``CubeDataClass``; TICOI's own ``filter_cube_before_inversion`` and ``process``
  run with the settings of its ITS_LIVE demo (``examples/advanced/demo_for_different_datasets/
  cube_ticoi_demo_its_live.py``), pixel by pixel as its ``direct_process`` mode does.
  A one-row cube makes TICOI skip its 3 × 3 spatial mean (it only applies it to cubes larger
  than the window), so each pixel sees only its own training pairs, as in xr_itslive.
- TICOI's hidden-pair predictions, two ways from the same run:
  *regular series*: its output (30-day velocities every 5 days) as a step function, each value
  held over the 5-day bin centred on its window's centre; a pair's prediction is the
  time-weighted mean of that step function over the pair's interval, using the finite values;
  no prediction where they cover less than half of the interval.
  *cumulative spline*: TICOI's own ``interpolation_to_data`` (its cubic spline of the
  cumulative displacement, differenced at the pair's two dates, day resolution) for the pairs
  strictly inside the span of its inverted series.
- Runtimes exclude imports, reading the sample and a warm-up run on two pixels (numba
  compilation) for both tools. TICOI runs once (~20 s); each xr_itslive setting runs
  ``--repeat`` times and the fastest run is kept (sub-second runs on a shared machine).
  Both use every core: xr_itslive's numba kernels run the variables and pixel blocks in
  threads, TICOI runs its pixels in as many joblib jobs as there are cores
  (``--ticoi-jobs``; 1 runs them one after the other).

Run: ``python benchmarks/bench_ticoi_compare.py [--pixels 50] [--seed 0]
[--ticoi-python /work/venv-ticoi/bin/python]``. Set up TICOI with
``python3 -m venv /work/venv-ticoi && /work/venv-ticoi/bin/pip install ticoi==0.1.2``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_TICOI_PYTHON = os.environ.get(
    "TICOI_PYTHON", str(HERE.parents[1] / "venv-ticoi" / "bin" / "python")
)
UNIT = 365  # TICOI works in m/yr with unit=365
INTERVAL_OUTPUT = 30  # days: TICOI demo's output sampling

# TICOI 0.1.2, examples/advanced/demo_for_different_datasets/cube_ticoi_demo_its_live.py
# (the cube projection replaces the demo's EPSG:3413; verbose off).
TICOI_PREPROCESSING = {
    "smooth_method": "gaussian",
    "s_win": 3,
    "t_win": 90,
    "sigma": 3,
    "order": 3,
    "unit": UNIT,
    "delete_outliers": "vvc_angle",
    "flag": None,
    "dem_file": None,
    "regu": "1accelnotnull",
    "solver": "LSMR_ini",
    "proj": "EPSG:32646",
    "velo_or_disp": "velo",
    "verbose": False,
}
TICOI_INVERSION = {
    "coef": 100,
    "conf": False,
    "unit": UNIT,
    "interpolation_load_pixel": "nearest",
    "iteration": True,
    "nb_max_iteration": 10,
    "threshold_it": 0.1,
    "apriori_weight": True,
    "detect_temporal_decorrelation": True,
    "linear_operator": None,
    "interval_output": INTERVAL_OUTPUT,
    "option_interpol": "spline",
    "redundancy": 5,
    "result_quality": "X_contribution",
    "visual": False,
    "path_save": None,
    "verbose": False,
    # the demo copies these from the preprocessing settings
    "proj": "EPSG:32646",
    "delete_outliers": "vvc_angle",
    "regu": "1accelnotnull",
    "solver": "LSMR_ini",
}

LABEL_MEDIAN = "per-pixel median of training pairs"
LABEL_PLAIN = "xr_itslive plain, lam=10"
LABEL_ROBUST = "xr_itslive robust + weights='error', lam=10"
LABEL_ROBUST4 = "xr_itslive robust + weights='error', 4 iterations"
LABEL_TICOI_SERIES = "TICOI demo, regular series (30 d / 5 d)"
LABEL_TICOI_SPLINE = "TICOI demo, cumulative spline at pair dates"


# --------------------------------------------------------------------------------------------
# TICOI side (runs in the TICOI virtual environment; imports only numpy, pandas, xarray, ticoi)
# --------------------------------------------------------------------------------------------


def _days(dates: np.ndarray) -> np.ndarray:
    """Datetimes as float days since 1970-01-01."""
    return np.asarray(dates, "datetime64[ns]").astype(np.int64) / 86400e9


def series_interval_mean(
    window_start: np.ndarray, velocity: np.ndarray, start: np.ndarray, end: np.ndarray
) -> np.ndarray:
    """Mean of a regular series over each interval [start, end] (float days).

    Each value of the series (a velocity over ``INTERVAL_OUTPUT`` days from ``window_start``)
    is held over the bin centred on its window's centre, bins meeting halfway between
    consecutive centres. NaN values are skipped; NaN where the finite values cover less than
    half of the interval.
    """
    centre = window_start + INTERVAL_OUTPUT / 2
    if centre.size < 2:
        return np.full(start.shape, np.nan)
    half = np.diff(centre) / 2
    edges = np.concatenate([[centre[0] - half[0]], centre[:-1] + half, [centre[-1] + half[-1]]])
    width = np.diff(edges)
    finite = np.isfinite(velocity)
    integral = np.concatenate([[0.0], np.cumsum(np.where(finite, velocity, 0.0) * width)])
    covered = np.concatenate([[0.0], np.cumsum(finite * width)])
    seen = np.interp(end, edges, covered) - np.interp(start, edges, covered)
    total = np.interp(end, edges, integral) - np.interp(start, edges, integral)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / seen
    return np.where(seen >= 0.5 * (end - start), mean, np.nan)


def _ticoi_cube(sample: dict, columns: np.ndarray):
    """A TICOI ``CubeDataClass`` holding ``columns`` of the sample as a 1 × n cube."""
    import xarray as xr
    from ticoi.cube_data_classxr import CubeDataClass

    three_d = ("mid_date", "y", "x")
    ds = xr.Dataset(
        {
            "vx": (three_d, sample["vx"][:, None, columns]),
            "vy": (three_d, sample["vy"][:, None, columns]),
            "date1": ("mid_date", sample["date1"].astype("datetime64[ns]")),
            "date2": ("mid_date", sample["date2"].astype("datetime64[ns]")),
            "errorx": ("mid_date", sample["vx_error"]),
            "errory": ("mid_date", sample["vy_error"]),
        },
        # integer x = column index: TICOI's load_pixel selects the prior by coordinate value
        coords={"mid_date": sample["mid_date"], "x": np.arange(columns.size), "y": [0]},
        attrs={"author": "ITS_LIVE", "source": "ITS_LIVE", "proj4": str(sample["proj4"])},
    )
    cube = CubeDataClass()
    cube.ds = ds.chunk({"mid_date": -1})  # TICOI's filters need dask arrays
    cube.update_dimension()
    cube.standardize_cube_for_processing()
    return cube


def run_ticoi(sample: dict, columns: np.ndarray, jobs: int = 1) -> dict:
    """TICOI's demo pipeline on ``columns`` of the sample; predictions of the hidden pairs."""
    import pandas as pd
    from joblib import Parallel, delayed
    from ticoi.core import interpolation_to_data, process

    timings = {}
    t0 = time.perf_counter()
    cube = _ticoi_cube(sample, columns)
    obs_filt, _ = cube.filter_cube_before_inversion(**TICOI_PREPROCESSING)
    first_date, last_date = cube.prepare_interpolation_date()
    timings["preprocessing"] = time.perf_counter() - t0

    kwargs = dict(TICOI_INVERSION, first_date_interpol=first_date, last_date_interpol=last_date)
    t0 = time.perf_counter()
    results = Parallel(n_jobs=jobs)(
        delayed(process)(
            cube, int(k), 0, obs_filt=obs_filt, returned=["invert", "interp"], **kwargs
        )
        for k in range(columns.size)
    )
    timings["inversion + interpolation"] = time.perf_counter() - t0

    n_pairs = sample["vx"].shape[0]
    series = {v: np.full((n_pairs, columns.size), np.nan) for v in ("vx", "vy")}
    spline = {v: np.full((n_pairs, columns.size), np.nan) for v in ("vx", "vy")}
    start_days, end_days = _days(sample["date1"]), _days(sample["date2"])

    t0 = time.perf_counter()
    for k, (_, regular) in enumerate(results):
        rows = np.flatnonzero(sample["hidden"][:, columns[k]])
        if regular.empty:
            continue
        window_start = _days(regular["date1"].to_numpy())
        for v in ("vx", "vy"):
            series[v][rows, k] = series_interval_mean(
                window_start, regular[v].to_numpy(float), start_days[rows], end_days[rows]
            )
    timings["prediction, regular series"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for k, (inverted, _) in enumerate(results):
        rows = np.flatnonzero(sample["hidden"][:, columns[k]])
        if inverted.empty:
            continue
        # TICOI works at day resolution and predicts only inside its inverted span
        pairs = pd.DataFrame(
            {
                "date1": pd.to_datetime(sample["date1"][rows].astype("datetime64[D]")),
                "date2": pd.to_datetime(sample["date2"][rows].astype("datetime64[D]")),
            }
        )
        pairs["temporal_baseline"] = (pairs["date2"] - pairs["date1"]).dt.days
        inside = (pairs["date1"] > inverted["date2"].min()) & (
            pairs["date2"] < inverted["date2"].max()
        )
        if not inside.any():
            continue
        predicted = interpolation_to_data(inverted, pairs[inside], option_interpol="spline")
        for v in ("vx", "vy"):
            spline[v][rows[inside.to_numpy()], k] = predicted[v].to_numpy(float)
    timings["prediction, cumulative spline"] = time.perf_counter() - t0
    return {"series": series, "spline": spline, "timings": timings}


def ticoi_worker(path_in: str, path_out: str, jobs: int) -> None:
    """Entry point in the TICOI environment: read the sample, run TICOI, write predictions."""
    import warnings

    import ticoi

    warnings.filterwarnings("ignore")  # TICOI's pandas/dask deprecation chatter
    with np.load(path_in, allow_pickle=False) as data:
        sample = {name: data[name] for name in data.files}
    n_pixels = sample["vx"].shape[1]
    run_ticoi(sample, np.arange(min(2, n_pixels)), jobs)  # warm-up: numba compilation
    out = run_ticoi(sample, np.arange(n_pixels), jobs)
    np.savez(
        path_out,
        series_vx=out["series"]["vx"],
        series_vy=out["series"]["vy"],
        spline_vx=out["spline"]["vx"],
        spline_vy=out["spline"]["vy"],
        timings=json.dumps(out["timings"]),
        version=getattr(ticoi, "__version__", _ticoi_version()),
    )


def _ticoi_version() -> str:
    from importlib.metadata import version

    return version("ticoi")


# --------------------------------------------------------------------------------------------
# xr_itslive side and the comparison
# --------------------------------------------------------------------------------------------


def write_sample(training, truth, path: str) -> None:
    """The sample as plain arrays (mid_date, pixel) for the TICOI worker."""
    # this cube's "mapping" has no proj4text; TICOI only copies proj4 into attributes
    proj4 = training.rio.crs.to_proj4()
    np.savez(
        path,
        vx=training["vx"].transpose("mid_date", "pixel").values,
        vy=training["vy"].transpose("mid_date", "pixel").values,
        vx_error=training["vx_error"].values,
        vy_error=training["vy_error"].values,
        date1=training["acquisition_date_img1"].values,
        date2=training["acquisition_date_img2"].values,
        mid_date=training["mid_date"].values,
        hidden=truth["vx"].transpose("mid_date", "pixel").notnull().values,
        proj4=proj4,
    )


def call_ticoi(python: str, sample_path: str, out_path: str, jobs: int) -> dict:
    if not Path(python).exists():
        raise SystemExit(
            f"TICOI interpreter {python!r} not found. Create it with `python3 -m venv "
            f"{Path(python).parents[1]} && {python.replace('python', 'pip')} install "
            "ticoi==0.1.2`, or pass --ticoi-python / set TICOI_PYTHON."
        )
    command = [python, str(Path(__file__).resolve()), "--ticoi-worker", sample_path, out_path]
    command += ["--ticoi-jobs", str(jobs)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"TICOI worker failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    with np.load(out_path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def score(predicted: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> tuple[float, float]:
    error = np.abs(predicted[rows] - truth[rows])
    return float(np.median(error)), float(np.percentile(error, 90))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", default=None, help="default: bench_heldout.DEFAULT_CUBE")
    parser.add_argument("--pixels", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step", type=float, default=12.0)
    parser.add_argument("--ticoi-python", default=DEFAULT_TICOI_PYTHON)
    parser.add_argument(
        "--repeat", type=int, default=3, help="xr_itslive runs per setting (fastest kept)"
    )
    parser.add_argument(
        "--ticoi-jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="joblib jobs for TICOI (default: all cores, as xr_itslive uses them)",
    )
    parser.add_argument("--ticoi-worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ticoi_worker:
        ticoi_worker(*args.ticoi_worker, jobs=args.ticoi_jobs)
        return
    if args.pixels < 2:
        parser.error("--pixels must be at least 2 (TICOI's cube needs two columns)")

    sys.path.insert(0, str(HERE))
    from bench_heldout import DEFAULT_CUBE, END, START, load_sample

    import xr_itslive

    training, truth = load_sample(args.cube or str(DEFAULT_CUBE), args.pixels, args.seed)
    n_pixels = training.sizes["pixel"]
    truth_arrays = {v: truth[v].transpose("mid_date", "pixel").values for v in ("vx", "vy")}
    hidden = np.isfinite(truth_arrays["vx"])
    print(
        f"{n_pixels} pixels, {training.sizes['mid_date']} pairs {START}..{END}, "
        f"{int(hidden.sum())} held-out pairs (seed {args.seed})"
    )

    predictions: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}

    # xr_itslive first: timed right after TICOI's run (joblib worker processes), its runs
    # came out up to 1.5x slower on this 2-core machine.
    t0 = time.perf_counter()
    median = training[["vx", "vy"]].median("mid_date")
    seconds[LABEL_MEDIAN] = time.perf_counter() - t0
    predictions[LABEL_MEDIAN] = {
        v: np.broadcast_to(median[v].values, hidden.shape) for v in ("vx", "vy")
    }

    settings = {
        LABEL_PLAIN: {"lam": 10.0},
        LABEL_ROBUST: {"lam": 10.0, "robust": True, "weights": "error"},
        LABEL_ROBUST4: {"lam": 10.0, "robust": True, "weights": "error", "robust_iterations": 4},
    }
    for kwargs in settings.values():  # numba warm-up: compile (or load) every kernel used
        xr_itslive.invert(training.isel(pixel=slice(0, 2)), step=args.step, **kwargs).compute()
    for label, kwargs in settings.items():
        seconds[label] = float("inf")
        for _ in range(args.repeat):  # the fastest of a few runs (this machine is shared)
            t0 = time.perf_counter()
            result = xr_itslive.invert(training, step=args.step, start=START, end=END, **kwargs)
            predicted = xr_itslive.predict(training, result)
            seconds[label] = min(seconds[label], time.perf_counter() - t0)
        predictions[label] = {
            v: predicted[v].transpose("mid_date", "pixel").values for v in ("vx", "vy")
        }

    with tempfile.TemporaryDirectory() as tmp:
        sample_path, out_path = f"{tmp}/sample.npz", f"{tmp}/ticoi.npz"
        write_sample(training, truth, sample_path)
        ticoi = call_ticoi(args.ticoi_python, sample_path, out_path, args.ticoi_jobs)
    timings = json.loads(str(ticoi["timings"]))
    shared = timings["preprocessing"] + timings["inversion + interpolation"]
    predictions[LABEL_TICOI_SERIES] = {v: ticoi[f"series_{v}"] for v in ("vx", "vy")}
    predictions[LABEL_TICOI_SPLINE] = {v: ticoi[f"spline_{v}"] for v in ("vx", "vy")}
    seconds[LABEL_TICOI_SERIES] = shared + timings["prediction, regular series"]
    seconds[LABEL_TICOI_SPLINE] = shared + timings["prediction, cumulative spline"]

    order = [
        LABEL_MEDIAN, LABEL_PLAIN, LABEL_ROBUST, LABEL_ROBUST4,
        LABEL_TICOI_SERIES, LABEL_TICOI_SPLINE,
    ]  # fmt: skip
    common = hidden.copy()
    for label in order:
        for v in ("vx", "vy"):
            common &= np.isfinite(predictions[label][v])
    header = (
        f"{'setting':46s} {'vx median':>9s} {'vx P90':>7s} {'vy median':>9s} {'vy P90':>7s} "
        f"{'runtime':>8s} {'pixels/s':>9s} {'predicted':>9s}"
    )
    print(
        f"\nScored on the {int(common.sum())} held-out pairs that every setting predicts "
        f"(of {int(hidden.sum())}); |error| in m/yr"
    )
    print(header)
    for label in order:
        p = predictions[label]
        vx, vy = (
            score(p["vx"], truth_arrays["vx"], common),
            score(p["vy"], truth_arrays["vy"], common),
        )
        covered = int((hidden & np.isfinite(p["vx"]) & np.isfinite(p["vy"])).sum())
        print(
            f"{label:46s} {vx[0]:9.2f} {vx[1]:7.1f} {vy[0]:9.2f} {vy[1]:7.1f} "
            f"{seconds[label]:7.2f}s {n_pixels / seconds[label]:9.1f} "
            f"{covered / hidden.sum():9.1%}"
        )
    print("\nEach setting on all the held-out pairs it predicts:")
    for label in order:
        p = predictions[label]
        own = hidden & np.isfinite(p["vx"]) & np.isfinite(p["vy"])
        vx, vy = score(p["vx"], truth_arrays["vx"], own), score(p["vy"], truth_arrays["vy"], own)
        print(
            f"{label:46s} {vx[0]:9.2f} {vx[1]:7.1f} {vy[0]:9.2f} {vy[1]:7.1f} "
            f"({int(own.sum())} pairs)"
        )
    print(
        "\nTICOI "
        + str(ticoi["version"])
        + " time split: "
        + ", ".join(f"{name} {value:.2f}s" for name, value in timings.items())
    )
    for label in (LABEL_ROBUST, LABEL_ROBUST4):
        print(
            f"speed ratio, TICOI (regular series) time / {label} time: "
            f"{seconds[LABEL_TICOI_SERIES] / seconds[label]:.0f}x"
        )


if __name__ == "__main__":
    main()
