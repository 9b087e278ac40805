"""ITS_LIVE-shaped synthetic cubes with a known truth, for tests, benchmarks and the demo.

The true velocity of each pixel is ``base + amplitude · sin(2π t / year + phase) + trend · t``
(t in days since ``start``); each pair observes its exact mean over [img1, img2] plus noise,
like ITS_LIVE: unsorted pairs, duplicated ``mid_date``, gaps, baselines of 5 to 546 days.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from .kernels.units import DAYS_PER_YEAR, NS_PER_DAY


def _mean_sine(t1: np.ndarray, t2: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Mean of sin(2π t / year + phase) over [t1, t2] (days), broadcasting."""
    omega = 2 * np.pi / DAYS_PER_YEAR
    return (np.cos(omega * t1 + phase) - np.cos(omega * t2 + phase)) / (omega * (t2 - t1))


def true_interval_mean(cube: xr.Dataset, component: str, t1, t2) -> xr.DataArray:
    """The exact mean of the synthetic truth of ``component`` over [t1, t2] (datetime64).

    Parameters
    ----------
    cube : xarray.Dataset
        A cube from :func:`synthetic_cube` (its ``*_true_*`` variables and start date).
    component : str
        ``"vx"`` or ``"vy"``.
    t1, t2 : array-like of datetime64
        Starts and ends of the intervals, one pair per entry of the new ``time`` dimension.

    Returns
    -------
    xarray.DataArray
        The mean per pixel and interval, dims ``(y, x, time)``.
    """
    start = np.datetime64(cube.attrs["synthetic_start"], "ns")
    d1 = (np.asarray(t1, dtype="datetime64[ns]") - start).astype("int64") / NS_PER_DAY
    d2 = (np.asarray(t2, dtype="datetime64[ns]") - start).astype("int64") / NS_PER_DAY
    d1 = xr.DataArray(d1, dims="time")
    d2 = xr.DataArray(d2, dims="time")
    base = cube[f"{component}_true_base"]
    amplitude = cube[f"{component}_true_amplitude"]
    phase = cube["true_phase"]
    trend = cube[f"{component}_true_trend"]
    return base + amplitude * _mean_sine(d1, d2, phase) + trend * (d1 + d2) / 2


def true_cell_means(cube: xr.Dataset, result: xr.Dataset, component: str) -> xr.DataArray:
    """The truth averaged over each cell of an :func:`xr_itslive.invert` result.

    Parameters
    ----------
    cube : xarray.Dataset
        The :func:`synthetic_cube` that was inverted.
    result : xarray.Dataset
        The inversion's result, with ``time`` and ``time_bounds``.
    component : str
        ``"vx"`` or ``"vy"``.

    Returns
    -------
    xarray.DataArray
        Dims ``(time, y, x)``, on the result's ``time``.
    """
    bounds = result["time_bounds"].values
    truth = true_interval_mean(cube, component, bounds[:, 0], bounds[:, 1])
    return truth.assign_coords(time=result["time"]).transpose("time", ...)


def synthetic_cube(
    n_pairs: int = 2000,
    ny: int = 4,
    nx: int = 5,
    years: float = 8.0,
    start: str = "2015-01-01",
    noise: float = 5.0,
    gap_fraction: float = 0.2,
    duplicate_fraction: float = 0.1,
    outlier_fraction: float = 0.0,
    empty_pixels: int = 0,
    seed: int = 0,
    chunks: dict | None = None,
    dtype: str = "float32",
) -> xr.Dataset:
    """An ITS_LIVE-shaped cube with a known truth.

    Parameters
    ----------
    n_pairs
        Number of image pairs (``mid_date`` length).
    ny, nx
        Pixels.
    years
        Time span covered by the pairs, in years.
    start
        Date of the span's start (any ``numpy.datetime64`` text), the origin of the truth's
        time; recorded as ``attrs["synthetic_start"]``.
    noise
        Standard deviation of the observation noise (m/yr).
    gap_fraction
        Fraction of (pair, pixel) observations missing at random.
    duplicate_fraction
        Fraction of pairs sharing their ``mid_date`` with another pair.
    outlier_fraction
        Fraction of observations replaced by gross outliers (±50..300 m/yr).
    empty_pixels
        Number of pixels (in the first row) with no valid observation at all.
    seed
        Seed of the random generator: the same seed (and settings) gives the same cube.
    chunks
        Dask chunks (``mid_date`` stays whole); None for numpy-backed variables.
    dtype
        ``"float32"`` (decoded), or ``"int16"`` to return values rounded as ITS_LIVE stores them.

    Returns
    -------
    xarray.Dataset
        ``vx``, ``vy`` (mid_date, y, x) with pair dates, ``satellite_img1``, errors, and the
        truth's parameters (``*_true_*``); attrs record the synthetic settings.
    """
    rng = np.random.default_rng(seed)
    span = years * DAYS_PER_YEAR
    baseline = np.exp(rng.uniform(np.log(5.0), np.log(546.0), n_pairs))
    baseline = np.minimum(baseline, span * 0.9)
    t1 = rng.uniform(0.0, span - baseline)
    n_dup = int(duplicate_fraction * n_pairs) // 2
    if n_dup:
        # give pair b the same mid date as pair a, with another baseline
        a = rng.choice(n_pairs, n_dup, replace=False)
        b = rng.choice(np.setdiff1d(np.arange(n_pairs), a), n_dup, replace=False)
        mid_a = t1[a] + baseline[a] / 2
        half = np.minimum(baseline[b] / 2, np.minimum(mid_a, span - mid_a) - 1e-3)
        baseline[b] = 2 * half
        t1[b] = mid_a - half
    t2 = t1 + baseline
    start64 = np.datetime64(start, "ns")

    def to_date(days):
        return start64 + np.round(days * NS_PER_DAY).astype("timedelta64[ns]")

    img1, img2 = to_date(t1), to_date(t2)
    mid = img1 + (img2 - img1) // 2

    y = 3_315_847.5 - 120.0 * np.arange(ny)
    x = 784_252.5 + 120.0 * np.arange(nx)
    base_x = rng.uniform(-150, 150, (ny, nx))
    base_y = rng.uniform(-150, 150, (ny, nx))
    amp_x = rng.uniform(5, 40, (ny, nx))
    amp_y = rng.uniform(5, 40, (ny, nx))
    trend_x = rng.uniform(-0.01, 0.01, (ny, nx))
    trend_y = rng.uniform(-0.01, 0.01, (ny, nx))
    phase = rng.uniform(0, 2 * np.pi, (ny, nx))

    def observe(base, amp, trend):
        mean_sine = _mean_sine(t1[:, None, None], t2[:, None, None], phase[None])
        truth = base[None] + amp[None] * mean_sine + trend[None] * ((t1 + t2) / 2)[:, None, None]
        obs = truth + rng.normal(0.0, noise, truth.shape)
        if outlier_fraction:
            hit = rng.uniform(size=obs.shape) < outlier_fraction
            obs[hit] += rng.choice([-1, 1], hit.sum()) * rng.uniform(50, 300, hit.sum())
        return obs

    vx = observe(base_x, amp_x, trend_x)
    vy = observe(base_y, amp_y, trend_y)
    missing = rng.uniform(size=vx.shape) < gap_fraction
    if empty_pixels:
        missing[:, 0, : min(empty_pixels, nx)] = True
    vx[missing] = np.nan
    vy[missing] = np.nan
    if dtype == "int16":
        vx, vy = np.round(vx), np.round(vy)
    order = rng.permutation(n_pairs)  # unsorted, as on S3
    satellites = np.array(["1A", "2A", "2B", "8", "9", "7"])[rng.integers(0, 6, n_pairs)]
    pair_error = rng.uniform(2.0, 30.0, n_pairs).astype(np.float32)
    ds = xr.Dataset(
        {
            "vx": (("mid_date", "y", "x"), vx[order].astype(np.float32), {"units": "meter/year"}),
            "vy": (("mid_date", "y", "x"), vy[order].astype(np.float32), {"units": "meter/year"}),
            "vx_error": ("mid_date", pair_error[order], {"units": "meter/year"}),
            "vy_error": ("mid_date", pair_error[order], {"units": "meter/year"}),
            "satellite_img1": ("mid_date", satellites[order]),
            "date_dt": ("mid_date", (baseline[order] * NS_PER_DAY).astype("timedelta64[ns]")),
            "vx_true_base": (("y", "x"), base_x),
            "vy_true_base": (("y", "x"), base_y),
            "vx_true_amplitude": (("y", "x"), amp_x),
            "vy_true_amplitude": (("y", "x"), amp_y),
            "vx_true_trend": (("y", "x"), trend_x),
            "vy_true_trend": (("y", "x"), trend_y),
            "true_phase": (("y", "x"), phase),
        },
        coords={
            "mid_date": ("mid_date", mid[order]),
            "acquisition_date_img1": ("mid_date", img1[order]),
            "acquisition_date_img2": ("mid_date", img2[order]),
            "y": ("y", y, {"units": "m"}),
            "x": ("x", x, {"units": "m"}),
        },
        attrs={
            "title": "synthetic ITS_LIVE-shaped cube (xr_itslive.synthetic)",
            "projection": "32646",
            "synthetic_start": str(start64),
            "synthetic_noise": noise,
            "synthetic_seed": seed,
        },
    )
    if chunks is not None:
        per_pair = ["vx", "vy"]
        ds = ds.assign({v: ds[v].chunk({"mid_date": -1, **chunks}) for v in per_pair})
    return ds
