"""GP regression of point series: exactness against a dense GP, known truth, real data."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.stats as st
import xarray as xr
from conftest import FIXTURE_3X3, ITSLIVE_DATA, REPO, requires_shared

import xr_itslive
from xr_itslive.errors import (
    EmptySelectionError,
    InvalidParameterError,
    MissingVariableError,
    NotAnITSLiveCubeError,
)
from xr_itslive.kernels import series
from xr_itslive.kernels.gp import MIN_LENGTH_SCALE

POINT_CSV = ITSLIVE_DATA / "point_series_lat34.3963_lon85.9067.csv"
FIXED = dict(
    signal_std=8.0,
    length_scale=60.0,
    seasonal_std=2.0,
    noise_floor=2.0,
    error_scale=0.01,
    image_error_std=0.5,
)


def _dense_rows(u1, u2, n_cells, images):
    """Dense date-span rows (and image-error rows) in cell units."""
    edges = np.arange(n_cells + 1)
    overlap = np.clip(
        np.minimum(u2[:, None], edges[None, 1:]) - np.maximum(u1[:, None], edges[None, :-1]),
        0,
        None,
    )
    spans = overlap / (u2 - u1)[:, None]
    errors = np.zeros_like(spans)
    if images:
        j0 = np.minimum(np.floor(u1).astype(int), n_cells - 1)
        j1 = np.maximum(np.minimum(np.ceil(u2).astype(int) - 1, n_cells - 1), j0)
        rows = np.arange(u1.size)
        return spans, errors, j0, j1, rows
    return spans, errors, None, None, None


def _banded_to_dense(lower):
    n = lower.shape[1]
    dense = np.zeros((n, n))
    for k in range(lower.shape[0]):
        idx = np.arange(n - k)
        dense[idx + k, idx] = lower[k, : n - k]
        dense[idx, idx + k] = lower[k, : n - k]
    return dense


def test_selected_inverse_matches_dense():
    rng = np.random.default_rng(0)
    n, bw = 30, 4
    lower = rng.normal(size=(bw + 1, n)) * 0.3
    lower[0] = 5.0 + rng.uniform(size=n)
    dense = _banded_to_dense(lower)
    factor = sla.cholesky_banded(lower, lower=True)
    inverse = np.linalg.inv(dense)
    for width in (bw, 9):
        band = series.banded_selected_inverse(factor, width)
        for d in range(width + 1):
            np.testing.assert_allclose(band[: n - d, d], np.diag(inverse, d), atol=1e-12)


@pytest.mark.parametrize("image_errors", [False, True])
def test_matches_dense_gp(image_errors):
    """Log marginal likelihood, pair and point predictions equal a dense GP's."""
    rng = np.random.default_rng(2)
    m, step = 80, 3.0
    t1 = np.sort(rng.uniform(0, 400, m))
    t2 = t1 + rng.uniform(1, 90, m)
    y = 50 + 10 * np.sin(t1 / 50) + rng.normal(0, 3, m)
    fit = xr_itslive.gp_fit(
        t1, t2, y, likelihood="gaussian", step=step, fixed=FIXED, image_errors=image_errors
    )
    n = fit._problem.n_cells

    def rows(a1, a2):
        u1, u2 = (a1 - fit._start_day) / step, (a2 - fit._start_day) / step
        spans, errors, j0, j1, idx = _dense_rows(u1, u2, n, image_errors)
        if image_errors:
            scale = np.where(j1 > j0, 365.25 / (a2 - a1), 0.0)
            np.add.at(errors, (idx, j1), scale)
            np.add.at(errors, (idx, j0), -scale)
        return np.hstack([spans, errors, series.harmonic_columns(a1, a2, 1)])

    band, _ = series.matern_precision(n, step, FIXED["signal_std"], FIXED["length_scale"])
    prior = np.zeros((2 * n + 3, 2 * n + 3))
    prior[:n, :n] = np.linalg.inv(_banded_to_dense(band))
    prior[n : 2 * n, n : 2 * n] = FIXED["image_error_std"] ** 2 * np.eye(n)
    prior[2 * n :, 2 * n :] = np.diag(
        [fit._problem.mean_prior_std**2, FIXED["seasonal_std"] ** 2, FIXED["seasonal_std"] ** 2]
    )
    design = rows(t1, t2)
    noise = FIXED["noise_floor"] ** 2 + (FIXED["error_scale"] * 365.25 / (t2 - t1)) ** 2
    cov = design @ prior @ design.T + np.diag(noise)
    centred = y - fit._center
    expected = st.multivariate_normal(np.zeros(m), cov).logpdf(centred)
    assert fit.log_marginal_likelihood == pytest.approx(expected, rel=1e-9)

    q1, q2 = np.array([100.0, 200.0, 50.3]), np.array([130.0, 390.0, 52.0])
    query = rows(q1, q2)
    cross = design @ prior @ query.T
    mean = cross.T @ np.linalg.solve(cov, centred) + fit._center
    var = np.diag(query @ prior @ query.T - cross.T @ np.linalg.solve(cov, cross))
    got_mean, got_std = fit.predict_pairs(q1, q2, noise=False)
    np.testing.assert_allclose(got_mean, mean, atol=1e-7)
    np.testing.assert_allclose(got_std, np.sqrt(var), atol=1e-7)

    times = np.array([10.0, 205.5, 400.0])
    pos = (times - fit._start_day) / step - 0.5
    j = np.floor(pos).astype(int)
    point = np.zeros((3, 2 * n + 3))
    point[np.arange(3), j] = 1 - (pos - j)
    point[np.arange(3), j + 1] = pos - j
    point[:, 2 * n :] = series.harmonic_columns(times, times, 1)
    cross = design @ prior @ point.T
    mean = cross.T @ np.linalg.solve(cov, centred) + fit._center
    var = np.diag(point @ prior @ point.T - cross.T @ np.linalg.solve(cov, cross))
    got_mean, got_std = fit.predict(times)
    np.testing.assert_allclose(got_mean, mean, atol=1e-7)
    np.testing.assert_allclose(got_std, np.sqrt(var), atol=1e-7)


def _synthetic(rng, n_pairs, outliers=0.0):
    """A smooth seasonal truth observed as interval averages with 1/dt noise."""

    def truth(t):
        return 100 + 15 * np.sin(2 * np.pi * t / 365.25) + 20 * np.tanh((t - 700) / 150)

    def average(a, b):
        grid = np.linspace(0, 1, 201)
        return truth(a[:, None] + (b - a)[:, None] * grid).mean(axis=1)

    t1 = rng.uniform(0, 1400, n_pairs)
    dt = rng.choice([12.0, 24.0, 48.0, 96.0, 180.0], n_pairs) + rng.uniform(-3, 3, n_pairs)
    t2 = t1 + dt
    sigma = np.sqrt(3.0**2 + (2.0 * 365.25 / dt) ** 2)
    v = average(t1, t2) + rng.normal(0, sigma)
    bad = rng.uniform(size=n_pairs) < outliers
    v[bad] += rng.choice([-1, 1], bad.sum()) * rng.uniform(150, 300, bad.sum())
    return t1, t2, v, truth, average, bad


def test_synthetic_truth_recovered_and_band_calibrated():
    rng = np.random.default_rng(5)
    t1, t2, v, truth, average, _ = _synthetic(rng, 1500)
    train = np.arange(1500) < 1200
    fit = xr_itslive.gp_fit(
        t1[train], t2[train], v[train], likelihood="gaussian", image_errors=False
    )
    # the 1/dt noise is recovered (2 m of displacement, 3 m/yr floor)
    assert fit.params["error_scale"] == pytest.approx(2.0, rel=0.25)
    times = np.linspace(100, 1300, 200)
    mean, std = fit.predict(times)
    assert np.median(np.abs(mean - truth(times))) < 2.0
    assert np.mean(np.abs(mean - truth(times)) <= 1.96 * std) > 0.85
    lower, upper = fit.pair_interval(t1[~train], t2[~train], level=0.95)
    coverage = np.mean((v[~train] >= lower) & (v[~train] <= upper))
    assert 0.91 <= coverage <= 0.99
    mean_pairs, _ = fit.predict_pairs(t1[~train], t2[~train], noise=False)
    assert np.median(np.abs(mean_pairs - average(t1[~train], t2[~train]))) < 2.0


def test_robust_fit_downweights_outliers():
    rng = np.random.default_rng(6)
    t1, t2, v, truth, _, bad = _synthetic(rng, 1200, outliers=0.05)
    robust = xr_itslive.gp_fit(t1, t2, v, image_errors=False)
    plain = xr_itslive.gp_fit(t1, t2, v, likelihood="gaussian", image_errors=False)
    assert np.median(robust.outlier_weights[bad]) < 0.2 < np.median(robust.outlier_weights[~bad])
    times = np.linspace(100, 1300, 200)
    robust_error = np.abs(robust.predict(times)[0] - truth(times)).mean()
    plain_error = np.abs(plain.predict(times)[0] - truth(times)).mean()
    assert robust_error < plain_error
    assert robust.params["dof"] == 4.0 and np.isinf(plain.params["dof"])
    assert "student-t" in repr(robust) and "length_scale" in repr(robust)


def test_dates_and_errors():
    rng = np.random.default_rng(7)
    start = np.datetime64("2018-01-01", "ns")
    t1 = start + (rng.uniform(0, 700, 300) * 86400e9).astype("timedelta64[ns]")
    dt = rng.uniform(10, 100, 300)
    t2 = t1 + (dt * 86400e9).astype("timedelta64[ns]")
    error = 200.0 / dt
    v = 50 + rng.normal(0, error)
    fit = xr_itslive.gp_fit(t1, t2, v, error, likelihood="gaussian")
    assert fit.uses_errors and "× error" in repr(fit)
    mean, std = fit.predict(np.array(["2018-06-01", "2019-01-01"], dtype="datetime64[ns]"))
    assert np.all(np.abs(mean - 50) < 3 * std + 1)
    with pytest.raises(InvalidParameterError, match="needs them: pass error="):
        fit.pair_interval(t1[:3], t2[:3])
    lower, upper = fit.pair_interval(t1[:3], t2[:3], error[:3])
    assert np.all(upper > lower)
    with pytest.raises(InvalidParameterError, match="numbers .* the fit was made on dates"):
        fit.predict(np.array([10.0]))


def test_bad_inputs():
    t1 = np.arange(20.0)
    t2 = t1 + 10
    v = np.ones(20)
    with pytest.raises(InvalidParameterError, match=r"one length, got shapes .*\(19,\)"):
        xr_itslive.gp_fit(t1, t2, v[:19])
    reversed_t2 = t2.copy()
    reversed_t2[3] = t1[3]
    with pytest.raises(InvalidParameterError, match="1 pair.*img2 <= img1.*index 3"):
        xr_itslive.gp_fit(t1, reversed_t2, v)
    with pytest.raises(EmptySelectionError, match="at least 10 pairs.*got 5"):
        xr_itslive.gp_fit(t1[:5], t2[:5], v[:5])
    nan_v = v.copy()
    nan_v[:15] = np.nan
    with pytest.raises(EmptySelectionError, match="got 5 \\(of 20\\)"):
        xr_itslive.gp_fit(t1, t2, nan_v)
    with pytest.raises(InvalidParameterError, match="step must be a positive.*step=0"):
        xr_itslive.gp_fit(t1, t2, v, step=0)
    with pytest.raises(InvalidParameterError, match="error must be > 0"):
        xr_itslive.gp_fit(t1, t2, v, np.zeros(20))
    with pytest.raises(InvalidParameterError, match=r"unknown hyperparameter.*\['lengthscale'\]"):
        xr_itslive.gp_fit(t1, t2, v, fixed={"lengthscale": 3.0})
    with pytest.raises(InvalidParameterError, match="dof must be > 2"):
        xr_itslive.gp_fit(t1, t2, v, dof=1.0)
    fit = xr_itslive.gp_fit(t1, t2, v + np.sin(t1), likelihood="gaussian")
    with pytest.raises(InvalidParameterError, match="outside the fitted grid"):
        fit.predict(np.array([1000.0]))
    with pytest.raises(InvalidParameterError, match="img2 <= img1"):
        fit.predict_pairs(np.array([5.0]), np.array([5.0]))


def _series_dataset(t1, t2, v, error=None):
    mid = t1 + (t2 - t1) / 2
    ds = xr.Dataset(
        {"v": ("mid_date", v, {"units": "m/yr"})},
        coords={
            "mid_date": mid,
            "acquisition_date_img1": ("mid_date", t1),
            "acquisition_date_img2": ("mid_date", t2),
        },
    )
    if error is not None:
        ds["v_error"] = ("mid_date", error)
    return ds


def test_xarray_layer_and_accessor():
    rng = np.random.default_rng(8)
    start = np.datetime64("2019-01-01", "ns")
    t1 = start + (rng.uniform(0, 500, 200) * 86400e9).astype("timedelta64[ns]")
    t2 = t1 + (rng.uniform(10, 60, 200) * 86400e9).astype("timedelta64[ns]")
    ds = _series_dataset(t1, t2, 30 + rng.normal(0, 2, 200), np.full(200, 2.0))
    result = ds.itslive.gp("v", freq="10D", likelihood="gaussian")
    assert set(result.data_vars) == {"v", "v_std", "v_lower", "v_upper"}
    assert result.attrs["gp_nonnegative"] == 1 and result.attrs["gp_level"] == 0.95
    assert result["v"].attrs["units"] == "m/yr"
    assert result.attrs["gp_uses_errors"] == 1 and result.attrs["gp_n_pairs"] == 200
    assert abs(float(result["v"].median()) - 30) < 2
    assert np.all(result["v_std"] > 0)
    fit = ds.itslive.gp_fit("v", weights=None, likelihood="gaussian")
    assert not fit.uses_errors
    with pytest.raises(MissingVariableError, match="variable 'vx' not found.*\\['v', 'v_error'\\]"):
        ds.itslive.gp("vx")
    with pytest.raises(MissingVariableError, match="error variable 'vx_error' not found"):
        ds.itslive.gp("v", weights="vx_error")
    cube = ds.expand_dims(x=[1.0, 2.0])
    with pytest.raises(NotAnITSLiveCubeError, match="select a pixel first"):
        xr_itslive.gp_regress(cube, "v")
    with pytest.raises(InvalidParameterError, match="freq='every week' is not a pandas"):
        xr_itslive.gp_regress(ds, "v", freq="every week", likelihood="gaussian")


@requires_shared
def test_real_point_series_subset():
    # the benchmark script itself, run once on a tenth of the pairs
    spec = importlib.util.spec_from_file_location("bench_gp", REPO / "benchmarks" / "bench_gp.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.run(POINT_CSV, fraction=0.1, seed=1, step=8.0)
    assert figures["n_train"] + figures["n_hidden"] == pytest.approx(1849, abs=1)
    assert figures["median_abs_error"] < 22.0
    assert 0.85 <= figures["coverage"] <= 1.0
    fit = figures["fit"]
    assert np.isfinite(fit.log_marginal_likelihood)
    # physically plausible: no faster than the bound, no more variable than the data
    assert fit.params["length_scale"] >= MIN_LENGTH_SCALE * (1 - 1e-6)
    assert fit.params["signal_std"] <= fit.bounds["signal_std"][1] * (1 + 1e-6)


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_gp", REPO / "benchmarks" / "bench_gp.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


@requires_shared
def test_series_against_a_synthetic_truth_of_known_smoothness():
    """The check next to the held-out pairs: known smooth truths on the real pairs' dates,
    scored day by day. With velocity jitter of a few days that pairs cannot resolve, the
    unbounded fit of earlier releases chases it; the bounded fit stays near the truth."""
    bench = _bench_module()
    kwargs = dict(fraction=0.1, seed=1, step=8.0)
    smooth = bench.synthetic_truth_check(**kwargs)
    assert 45.0 <= smooth["length_scale"] <= 200.0  # truth 90 days
    assert smooth["rmse"] < 16.0 and smooth["coverage"] >= 0.9
    bounded = bench.synthetic_truth_check(jitter=60.0, **kwargs)
    free = bench.synthetic_truth_check(
        jitter=60.0, bounds={"length_scale": (16.0, None), "signal_std": (None, 1e4)}, **kwargs
    )
    assert free["length_scale"] < 30.0
    assert bounded["length_scale"] == pytest.approx(MIN_LENGTH_SCALE)
    assert bounded["rmse"] < 0.75 * free["rmse"]
    assert bounded["daily_roughness"] < 0.5 * free["daily_roughness"]


def test_length_scale_bounds_are_reported_and_checked():
    rng = np.random.default_rng(3)
    t1 = np.sort(rng.uniform(0, 900, 300))
    t2 = t1 + rng.choice([4.0, 6.0, 8.0], 300)
    # a 60-day wiggle seen by short pairs: the likelihood wants a length scale below 60 days
    v = 80 + 30 * np.sin(2 * np.pi * (t1 + t2) / 2 / 60.0) + rng.normal(0, 2, 300)
    fit = xr_itslive.gp_fit(t1, t2, v, likelihood="gaussian", image_errors=False)
    assert fit.bounds["length_scale"][0] == MIN_LENGTH_SCALE
    assert fit.params["length_scale"] == pytest.approx(MIN_LENGTH_SCALE)
    low, high = np.percentile(v, [1, 99])
    assert fit.bounds["signal_std"][1] == pytest.approx(high - low)
    assert fit.at_bounds()["length_scale"] == "lower"
    assert "length_scale  60 d, at its lower bound" in repr(fit)
    wider = xr_itslive.gp_fit(
        t1, t2, v, likelihood="gaussian", image_errors=False, bounds={"length_scale": (10, None)}
    )
    assert wider.bounds["length_scale"] == (10.0, fit.bounds["length_scale"][1])
    with pytest.raises(InvalidParameterError, match=r"bounds has unknown.*\['length'\]"):
        xr_itslive.gp_fit(t1, t2, v, bounds={"length": (1, 2)})
    with pytest.raises(InvalidParameterError, match=r"bounds\['signal_std'\] must be a"):
        xr_itslive.gp_fit(t1, t2, v, bounds={"signal_std": 5.0})
    with pytest.raises(InvalidParameterError, match=r"0 < lower < upper.*\(5.0, 1.0\)"):
        xr_itslive.gp_fit(t1, t2, v, bounds={"signal_std": (5.0, 1.0)})
    with pytest.raises(InvalidParameterError, match="below two cells .8 days at step=4"):
        xr_itslive.gp_fit(t1, t2, v, bounds={"length_scale": (5.0, None)})


def _component_series(rng, n_pairs=500, vx=1.5, vy=-1.0, displacement_error=2.0):
    """Slow ice (|v| = 1.8 m/yr) seen through pairs whose components carry 1/dt noise; each
    pair's v is the magnitude of its noisy components, as ITS_LIVE computes it."""
    start = np.datetime64("2018-01-01", "ns")
    days = rng.uniform(0, 1000, n_pairs)
    dt = rng.choice([12.0, 24.0, 48.0, 96.0, 200.0, 365.0], n_pairs)
    t1 = start + (days * 86400e9).astype("timedelta64[ns]")
    t2 = t1 + (dt * 86400e9).astype("timedelta64[ns]")
    sigma = displacement_error * 365.25 / dt
    obs_x = vx + rng.normal(0, sigma)
    obs_y = vy + rng.normal(0, sigma)
    ds = _series_dataset(t1, t2, np.hypot(obs_x, obs_y))
    ds["vx"] = ("mid_date", obs_x, {"units": "m/yr"})
    ds["vy"] = ("mid_date", obs_y, {"units": "m/yr"})
    ds["vx_error"] = ("mid_date", sigma)
    ds["vy_error"] = ("mid_date", sigma)
    return ds


def test_speed_from_the_components_never_below_zero():
    rng = np.random.default_rng(12)
    ds = _component_series(rng)
    result = xr_itslive.gp_regress(ds, "v", likelihood="gaussian", image_errors=False)
    assert {"vx", "vx_std", "vy", "vy_std", "v", "v_std", "v_lower", "v_upper", "v_debiased",
            "v_significant"} == set(result.data_vars)  # fmt: skip
    assert result.attrs["gp_components"] == "vx vy"
    assert result.attrs["gp_vx_n_pairs"] == 500 and "gp_vy_length_scale" in result.attrs
    days = np.diff(result["time"].values) / np.timedelta64(1, "D")
    assert np.all(days == 1.0)  # daily by default
    v, lower, upper = (result[n].values for n in ("v", "v_lower", "v_upper"))
    assert np.all(lower >= 0) and np.all(lower <= v) and np.all(v <= upper)
    np.testing.assert_allclose(v, np.hypot(result["vx"], result["vy"]))
    true = np.hypot(1.5, -1.0)
    assert abs(float(np.median(v)) - true) < 1.0
    assert np.mean((lower <= true) & (true <= upper)) > 0.9
    # the pairs' own v: magnitudes of noisy components, biased high; a GP of them inherits it
    direct = xr_itslive.gp_regress(
        ds, "v", components=None, likelihood="gaussian", image_errors=False
    )
    biased = float(np.median(direct["v"]))
    assert biased > 2 * true and abs(biased - true) > 2 * abs(float(np.median(v)) - true)
    assert np.all(direct["v"] >= 0) and np.all(direct["v_lower"] >= 0)
    with pytest.raises(MissingVariableError, match=r"components \['u'\] not found"):
        xr_itslive.gp_regress(ds, "v", components=("u", "vy"))
    with pytest.raises(InvalidParameterError, match="components must be 'auto', None or two"):
        xr_itslive.gp_regress(ds, "v", components="both")
    with pytest.raises(InvalidParameterError, match="level must be in"):
        xr_itslive.gp_regress(ds, "v", level=1.5)


def test_the_speed_from_components_says_where_it_is_significant_and_its_bias():
    """v_significant and v_debiased as every speed of the package has them (the inversion's,
    the composite's: xr_itslive.speed on the result gives the same values and attributes);
    the significance is exactly where the band leaves zero."""
    rng = np.random.default_rng(21)
    still = _component_series(rng, vx=0.0, vy=0.0)
    fast = _component_series(rng, vx=40.0, vy=-30.0)
    kwargs = dict(likelihood="gaussian", image_errors=False, freq="5D")
    results = {name: xr_itslive.gp_regress(ds, "v", **kwargs) for name, ds in
               (("still", still), ("fast", fast))}  # fmt: skip
    for result in results.values():
        again = xr_itslive.speed(result)  # from vx_std, vy_std: the posterior stds
        for name in ("v_debiased", "v_significant"):
            xr.testing.assert_identical(result[name].drop_vars(list(result.coords)),
                                        again[name].drop_vars(list(again.coords)))  # fmt: skip
        assert result["v_significant"].dtype == bool
        assert result["v_significant"].attrs["flag_meanings"] == "not_significant significant"
        np.testing.assert_array_equal(result["v_significant"], result["v_lower"] > 0)
        expected = np.sqrt(np.maximum(result["v"] ** 2 - result["vx_std"] ** 2
                                      - result["vy_std"] ** 2, 0))  # fmt: skip
        np.testing.assert_allclose(result["v_debiased"], expected, rtol=1e-12)
        assert bool((result["v_debiased"] <= result["v"]).all())
    # still ice: the magnitude of the GP means is noise, and says so
    assert float(results["still"]["v_significant"].mean()) < 0.2
    assert float(results["still"]["v_debiased"].mean()) < float(results["still"]["v"].mean())
    assert bool(results["fast"]["v_significant"].all())
    # a directly fitted v has no components to test: no such fields
    direct = xr_itslive.gp_regress(still, "v", components=None, **kwargs)
    assert "v_significant" not in direct and "v_debiased" not in direct


def test_undecoded_integers_are_refused_as_invert_refuses_them():
    """A cube opened with mask_and_scale=False keeps ITS_LIVE's int16 and its -32767 fills:
    the GP would fit them as velocities (a mean of -96 m/yr on a pixel moving at -0.3)."""
    import warnings

    raw = xr.open_dataset(xr_itslive.demo_cube_path(), mask_and_scale=False)
    pixel = raw.isel(x=1, y=1)
    assert pixel["vx"].dtype == np.int16 and int((pixel["vx"] == -32767).sum()) > 0
    message = r"variable 'vx' holds undecoded integers \(int16\).*xr_itslive.open_cube"
    with pytest.raises(NotAnITSLiveCubeError, match=message):
        xr_itslive.gp_fit_series(pixel, "vx")
    with pytest.raises(NotAnITSLiveCubeError, match=message):
        xr_itslive.gp_regress(pixel, "v")  # through its components
    with pytest.raises(NotAnITSLiveCubeError, match=r"variable 'v' holds undecoded"):
        xr_itslive.gp_regress(pixel, "v", components=None)
    # the same message as invert's, split along mid_date or not
    with pytest.raises(NotAnITSLiveCubeError, match=message):
        xr_itslive.gp_fit_series(pixel.chunk({"mid_date": 1000}), "vx")
    with pytest.raises(NotAnITSLiveCubeError, match=message):
        xr_itslive.invert(raw, variables=["vx"])
    # decoded, the same pixel fits, and a split series is fine
    decoded = xr_itslive.open_cube(xr_itslive.demo_cube_path(), variables=["vx", "vx_error"])
    recent = decoded.isel(x=1, y=1).sel(mid_date=slice("2022-01-01", None))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = xr_itslive.gp_fit_series(recent.chunk({"mid_date": 100}), "vx",
                                       likelihood="gaussian", image_errors=False)  # fmt: skip
    assert abs(fit.params["mean"]) < 20


def test_a_speed_fitted_directly_is_conditioned_on_being_non_negative():
    """v alone (a point CSV): the posterior given v >= 0, so that slow ice near zero never
    gets a negative mean or band, while fast ice is untouched."""
    rng = np.random.default_rng(13)
    t1 = np.sort(rng.uniform(0, 800, 300))
    t2 = t1 + rng.uniform(6, 60, 300)
    mid = (t1 + t2) / 2
    slow = np.maximum(3.0 * np.sin(2 * np.pi * mid / 365.25), 0.0) + rng.normal(0, 4, 300)
    start = np.datetime64("2019-01-01", "ns")
    dates = [start + (t * 86400e9).astype("timedelta64[ns]") for t in (t1, t2)]
    ds = _series_dataset(*dates, slow)
    plain = xr_itslive.gp_regress(ds, "v", nonnegative=False, likelihood="gaussian")
    kept = xr_itslive.gp_regress(ds, "v", likelihood="gaussian")
    assert plain["v"].min() < 0 or plain["v_lower"].min() < 0  # the Gaussian posterior does
    assert kept["v"].min() > 0 and kept["v_lower"].min() >= 0
    assert np.all(kept["v"] >= plain["v"] - 1e-9)
    fast = _series_dataset(*dates, slow + 200.0)
    a = xr_itslive.gp_regress(fast, "v", likelihood="gaussian")
    b = xr_itslive.gp_regress(fast, "v", nonnegative=False, likelihood="gaussian")
    np.testing.assert_allclose(a["v"], b["v"], rtol=1e-12)


@requires_shared
def test_real_cube_pixel():
    cube = xr_itslive.open_cube(FIXTURE_3X3, variables=["v", "v_error"])
    pixel = cube.isel(x=1, y=1)
    recent = pixel.where(pixel.acquisition_date_img1 >= np.datetime64("2019-01-01"), drop=True)
    recent = recent.compute()
    result = recent.itslive.gp("v", step=8.0, em_rounds=2)
    values = recent["v"].values
    assert result.attrs["gp_n_pairs"] == int(np.isfinite(values).sum())
    assert np.all(np.isfinite(result["v"])) and np.all(result["v_std"] > 0)
    # a slow pixel: the GP mean sits inside the bulk of the pairs
    low, high = np.nanpercentile(values, [10, 90])
    assert low <= float(result["v"].median()) <= high
    assert float(result["v"].min()) > 0 and float(result["v_lower"].min()) >= 0


@requires_shared
def test_real_cube_pixel_speed_from_its_components():
    cube = xr_itslive.open_cube(FIXTURE_3X3, variables=["vx", "vy", "vx_error", "vy_error"])
    pixel = cube.isel(x=1, y=1)
    recent = pixel.where(pixel.acquisition_date_img1 >= np.datetime64("2021-01-01"), drop=True)
    result = recent.compute().itslive.gp("v", step=8.0, em_rounds=1)
    assert result.attrs["gp_components"] == "vx vy"
    for name in ("vx", "vy"):
        assert result.attrs[f"gp_{name}_length_scale"] >= MIN_LENGTH_SCALE * (1 - 1e-6)
    v, lower, upper = (result[n].values for n in ("v", "v_lower", "v_upper"))
    assert np.all(np.isfinite(v)) and np.all(lower >= 0) and np.all((lower <= v) & (v <= upper))
    # slow ice near the margin: a few m/yr, with a band that says how well it is known
    assert 0 < np.median(v) < 30 and np.median(upper - lower) > 1.0


def test_old_spellings_still_work_with_a_deprecation_warning():
    """robust= (now likelihood=), v_error= (now error=) and error= (now weights=) keep their
    meaning for one release, each with a DeprecationWarning naming the new spelling."""
    rng = np.random.default_rng(7)
    t1 = np.sort(rng.uniform(0, 600, 120))
    t2 = t1 + rng.uniform(6, 90, 120)
    v = 50 + 0.02 * (t1 + t2) + rng.normal(0, 2, 120)
    error = np.full(120, 2.0)
    new = xr_itslive.gp_fit(t1, t2, v, error, likelihood="gaussian", image_errors=False)
    with pytest.warns(DeprecationWarning, match=r"robust=.*pass likelihood='gaussian'"):
        old = xr_itslive.gp_fit(t1, t2, v, v_error=error, robust=False, image_errors=False)
    assert old.params == new.params
    with pytest.warns(DeprecationWarning, match=r"v_error=.*pass error="):
        mean_old, _ = new.predict_pairs(t1[:5], t2[:5], v_error=error[:5])
    np.testing.assert_array_equal(mean_old, new.predict_pairs(t1[:5], t2[:5], error[:5])[0])
    ds = _series_dataset(t1, t2, v, error)
    with pytest.warns(DeprecationWarning, match=r"gp_fit_series\(error=.*pass weights="):
        via_error = ds.itslive.gp_fit("v", error=None, likelihood="gaussian")
    assert via_error.params == ds.itslive.gp_fit("v", weights=None, likelihood="gaussian").params
    with pytest.raises(InvalidParameterError, match="got both weights= and its old spelling"):
        xr_itslive.gp_regress(ds, "v", error=None, weights=None)
    with pytest.raises(InvalidParameterError, match="likelihood must be one of"):
        xr_itslive.gp_fit(t1, t2, v, likelihood="laplace")


def test_start_end_is_a_time_window_as_in_invert():
    """start/end mean what they mean in invert(): pairs reaching outside are dropped."""
    rng = np.random.default_rng(11)
    t1 = np.sort(rng.uniform(0, 900, 150))
    t2 = t1 + rng.uniform(6, 60, 150)
    v = 80 + 5 * np.sin(2 * np.pi * (t1 + t2) / 2 / 365.25) + rng.normal(0, 1, 150)
    inside = (t1 >= 200) & (t2 <= 700)
    kwargs = dict(likelihood="gaussian", image_errors=False, start=200.0, end=700.0)
    window = xr_itslive.gp_fit(t1, t2, v, **kwargs)
    subset = xr_itslive.gp_fit(t1[inside], t2[inside], v[inside], **kwargs)
    assert window.n_pairs == subset.n_pairs == int(inside.sum()) < t1.size
    assert window.params == subset.params
    with pytest.raises(EmptySelectionError, match="no pair lies inside start..end"):
        xr_itslive.gp_fit(t1, t2, v, start=2000.0, end=2100.0)


def test_a_speed_fit_never_predicts_a_mean_below_zero():
    """The GP of ``v`` alone is conditioned on ``v >= 0``: on slow ice whose observed speeds
    scatter around zero, the raw Gaussian mean dips below zero and the speed fit's does not."""
    cube = xr_itslive.synthetic_cube(n_pairs=300, ny=1, nx=1, seed=4).isel(y=0, x=0)
    rng = np.random.default_rng(0)
    days = (cube.mid_date.values - cube.mid_date.values.min()) / np.timedelta64(1, "D")
    # a seasonal swing larger than the mean: the observations cross zero every year
    v = 1.0 + 6.0 * np.sin(2 * np.pi * days / 365.25) + rng.standard_normal(days.size)
    series = cube.drop_vars(["vx", "vy"]).assign(
        v=("mid_date", v.astype("float32"), {"units": "m/yr"})
    )
    times = np.arange(
        np.datetime64(str(series.acquisition_date_img1.min().values)[:10]) + 30,
        np.datetime64(str(series.acquisition_date_img2.max().values)[:10]) - 30,
    ).astype("datetime64[ns]")
    speed_fit = xr_itslive.gp_fit_series(series, "v", weights=None)
    raw_fit = xr_itslive.gp_fit_series(series, "v", weights=None, nonnegative=False)
    assert speed_fit.nonnegative and not raw_fit.nonnegative
    raw_mean, _ = raw_fit.predict(times)
    mean, std = speed_fit.predict(times)
    assert (raw_mean < 0).any()  # the case the conditioning exists for
    assert (mean > 0).all() and (std > 0).all()
    regressed = xr_itslive.gp_regress(series, "v", weights=None, times=times)
    np.testing.assert_allclose(regressed["v"].values, mean, rtol=1e-6)
