"""Speed from components: the magnitude, its first-order std, the Rice bias and its handling.

The noise bias of a magnitude: on slow synthetic ice of known speed, ``v`` of the inversion is
mostly noise; ``v_debiased`` and ``v_significant`` say so.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import raise_if_dask_computes

import xr_itslive
from xr_itslive.errors import InvalidParameterError, MissingVariableError
from xr_itslive.kernels.speed import (
    chi2_2_quantile,
    nonnegative_summary,
    speed_band,
    speed_from_components,
)
from xr_itslive.synthetic import true_interval_mean

# --------------------------------------------------------------------------- the kernel


def test_kernel_values_and_limits():
    out = speed_from_components(
        np.array([3.0, 0.5, 0.0, np.nan]), np.array([4.0, 0.5, 0.0, 1.0]),
        np.array([1.0, 1.0, 1.0, 1.0]), np.array([1.0, 1.0, 2.0, 1.0]),
    )  # fmt: skip
    np.testing.assert_allclose(out["v"][:3], [5.0, np.sqrt(0.5), 0.0])
    # first order: (3·1, 4·1)/5 → 1; at zero the direction-averaged sqrt((1 + 4) / 2)
    np.testing.assert_allclose(out["v_std"][[0, 2]], [1.0, np.sqrt(2.5)])
    np.testing.assert_allclose(out["v_debiased"][:3], [np.sqrt(23.0), 0.0, 0.0])
    assert out["v_significant"].tolist() == [True, False, False, False]
    assert np.isnan(out["v"][3]) and np.isnan(out["v_debiased"][3])
    assert set(speed_from_components(np.ones(2), np.ones(2))) == {"v"}
    assert chi2_2_quantile(0.95) == pytest.approx(5.991, abs=1e-3)
    with pytest.raises(InvalidParameterError, match="level must be in .0, 1., got level=95"):
        speed_from_components(np.ones(1), np.ones(1), np.ones(1), np.ones(1), level=95)


def test_kernel_against_monte_carlo():
    """E[v̂²] = v² + σx² + σy²: v_debiased² is unbiased for v²; v_std is the spread of v̂ at
    high signal-to-noise; the test's false-positive rate is 1 - level."""
    rng = np.random.default_rng(0)
    n, sx, sy = 200_000, 2.0, 3.0
    for true_x, true_y in ((0.0, 0.0), (2.0, 1.0), (30.0, 40.0)):
        vx = true_x + rng.normal(0, sx, n)
        vy = true_y + rng.normal(0, sy, n)
        out = speed_from_components(vx, vy, np.full(n, sx), np.full(n, sy))
        true = np.hypot(true_x, true_y)
        assert np.mean(out["v"] ** 2) == pytest.approx(true**2 + sx**2 + sy**2, rel=0.01)
        if true == 0:
            assert np.mean(out["v_significant"]) == pytest.approx(0.05, abs=0.003)
        if true == 50:
            assert np.mean(out["v_debiased"] ** 2) == pytest.approx(true**2, rel=0.005)
            assert np.std(out["v"]) == pytest.approx(np.median(out["v_std"]), rel=0.02)
            assert np.mean(out["v_significant"]) == 1.0


def test_speed_band_is_calibrated_and_never_negative():
    rng = np.random.default_rng(1)
    mx = np.array([20.0, 3.0, 0.5, 0.0, np.nan])
    my = np.array([0.0, 2.0, 0.0, 0.0, 1.0])
    s = np.ones(5)
    lower, upper = speed_band(mx, my, s, 2 * s, draws=20_000)
    assert np.all(lower[:4] >= 0) and np.isnan(lower[4]) and np.isnan(upper[4])
    magnitude = np.hypot(mx, my)
    assert np.all((lower[:4] <= magnitude[:4]) & (magnitude[:4] <= upper[:4]))
    # significant vectors: an equal-tailed 95% band of |v|
    draws = np.hypot(mx[0] + rng.normal(0, 1, 100_000), my[0] + rng.normal(0, 2, 100_000))
    assert np.mean((draws >= lower[0]) & (draws <= upper[0])) == pytest.approx(0.95, abs=0.01)
    # not significant (origin inside the ellipse): one-sided from zero
    assert lower[2] == lower[3] == 0.0 and upper[3] == pytest.approx(
        np.quantile(np.hypot(rng.normal(0, 1, 100_000), rng.normal(0, 2, 100_000)), 0.95),
        rel=0.03,
    )


def test_nonnegative_summary_is_the_truncated_normal():
    import scipy.stats as st

    mean = np.array([50.0, 1.0, 0.0, -2.0, -200.0])
    std = np.array([2.0, 1.0, 3.0, 1.0, 1.0])
    out_mean, out_std, lower, upper = nonnegative_summary(mean, std, level=0.9)
    for i in range(4):
        dist = st.truncnorm(-mean[i] / std[i], np.inf, loc=mean[i], scale=std[i])
        assert out_mean[i] == pytest.approx(dist.mean(), rel=1e-9)
        assert out_std[i] == pytest.approx(dist.std(), rel=1e-6)
        np.testing.assert_allclose([lower[i], upper[i]], dist.ppf([0.05, 0.95]), rtol=1e-6)
    # far below zero: the exponential limit, still positive
    assert out_mean[4] == pytest.approx(1 / 200)
    assert 0 < lower[4] < out_mean[4] < upper[4]


# --------------------------------------------------------------------------- slow synthetic ice


def _slow_cube(vx0, vy0, noise=5.0, seed=0, **kwargs):
    """A synthetic cube whose true velocity is the constant (vx0, vy0) per pixel."""
    cube = xr_itslive.synthetic_cube(noise=noise, seed=seed, **kwargs)
    t1, t2 = cube.acquisition_date_img1.values, cube.acquisition_date_img2.values
    for name, value in (("vx", vx0), ("vy", vy0)):
        truth = true_interval_mean(cube, name, t1, t2).rename(time="mid_date")
        noise_only = cube[name] - truth.transpose("mid_date", ...).values
        cube[name] = (noise_only + value).astype("float32").assign_attrs(cube[name].attrs)
    return cube


# true speeds 0, 1, 3, 10, 30 m/yr along x (and a little along y in the lower rows)
TRUE_VX = np.array([[0.0, 1.0, 3.0, 10.0, 30.0]]) * np.ones((2, 1))
TRUE_VY = np.array([[0.0], [0.4]]) * np.ones((1, 5))


@pytest.fixture(scope="module")
def slow_result():
    cube = _slow_cube(TRUE_VX, TRUE_VY, n_pairs=3000, ny=2, nx=5)
    return cube, xr_itslive.invert(cube, step=12, lam=10, uncertainty=True).compute()


def test_slow_ice_raw_speed_is_noise_and_the_correction_and_flag_say_so(slow_result):
    """Known truth 0..30 m/yr under ~3.5 m/yr of noise per cell and component."""
    _, result = slow_result
    true = np.hypot(TRUE_VX, TRUE_VY)
    sigma = float(np.sqrt((result["vx_std"] ** 2 + result["vy_std"] ** 2).mean() / 2))
    assert 2.5 < sigma < 5.0
    raw = result["v"].mean("time").values
    debiased = result["v_debiased"].mean("time").values
    significant = result["v_significant"].mean("time").values
    slow = true < 4
    # the magnitude of noisy components: a Rayleigh-like floor of ~1.25 σ where v = 0
    assert np.all(raw[true == 0] > 1.0 * sigma)
    assert np.all(raw[slow] - true[slow] > 2.0)
    # the bias-corrected speed: much closer to the truth on slow ice, within 1 σ elsewhere
    assert np.all(np.abs(debiased[slow] - true[slow]) < 0.5 * (raw[slow] - true[slow]))
    assert np.all(np.abs(debiased - true) < sigma)
    # the flag: ~5% false positives on still ice, every cell on ice moving at ~9 σ
    assert np.all(significant[true == 0] < 0.1)
    assert np.all(significant[true == 30] > 0.97)
    # the best speed of steady slow ice is the magnitude of the mean vector
    vector = np.hypot(result["vx"].mean("time"), result["vy"].mean("time")).values
    assert np.all(np.abs(vector - true) < 1.0)


def test_speed_is_the_magnitude_and_components_are_unchanged(slow_result):
    cube, result = slow_result
    np.testing.assert_array_equal(result["v"].values, np.hypot(result["vx"], result["vy"]).values)
    plain = xr_itslive.invert(cube, step=12, lam=10).compute()
    assert "v_std" not in plain and "v_significant" not in plain
    np.testing.assert_array_equal(plain["vx"].values, result["vx"].values)
    np.testing.assert_array_equal(plain["v"].values, result["v"].values)
    assert result["v_significant"].dtype == bool
    assert result["v_std"].attrs["units"] == result["vx"].attrs["units"]
    assert "first-order" in result["v_std"].attrs["long_name"]


def test_speed_of_a_dataset_lazy_and_with_composite_names():
    cube = _slow_cube(TRUE_VX, TRUE_VY, n_pairs=800, ny=2, nx=5)
    cube = cube.assign({name: cube[name].chunk({"x": 2}) for name in ("vx", "vy")})
    with raise_if_dask_computes():
        lazy = xr_itslive.invert(cube, step=30, lam=10, uncertainty=True)
        derived = xr_itslive.speed(lazy)
    assert set(derived.data_vars) == {"v", "v_std", "v_debiased", "v_significant"}
    computed = lazy.compute()
    xr.testing.assert_identical(derived.compute()["v_debiased"], computed["v_debiased"])
    # a Dataset with *_error only (ITS_LIVE's own composites): those are taken
    composite = xr.Dataset(
        {
            "vx": ("time", [3.0, 0.1]),
            "vy": ("time", [4.0, 0.1]),
            "vx_error": ("time", [1.0, 1.0]),
            "vy_error": ("time", [1.0, 1.0]),
        }
    )
    out = xr_itslive.speed(composite)
    assert out["v_significant"].values.tolist() == [True, False]
    assert set(xr_itslive.speed(composite, errors=None).data_vars) == {"v"}
    with pytest.raises(MissingVariableError, match=r"components \['u', 'w'\].*\['u', 'w'\]"):
        xr_itslive.speed(composite, components=("u", "w"))
    with pytest.raises(MissingVariableError, match=r"error variable\(s\) \['sx'\] not found"):
        xr_itslive.speed(composite, errors=("sx", "vy_error"))
    with pytest.raises(InvalidParameterError, match="errors must be 'auto', None or two"):
        xr_itslive.speed(composite, errors="vx_error")


def test_flow_and_noise_of_steady_slow_ice(slow_result):
    """The mean vector is the signal, the scatter across it the noise of a cell."""
    _, result = slow_result
    out = xr_itslive.workflows.speed.flow_and_noise(result)
    true = np.hypot(TRUE_VX, TRUE_VY)
    np.testing.assert_allclose(out["mean_speed"].values, true, atol=1.0)
    cell_std = float(np.sqrt((result["vx_std"] ** 2 + result["vy_std"] ** 2).mean() / 2))
    # across the flow: the cells' own scatter, close to their posterior std here (the
    # synthetic noise is what the inversion assumes; real noise is not: see the demo)
    np.testing.assert_allclose(out["across_std"].values, cell_std, rtol=0.35)
    assert np.all(out["upstream_fraction"].values[true >= 30] < 0.01)
    assert np.all(out["upstream_fraction"].values[true <= 1.1] > 0.25)
    assert out["annual_speed"].dims == ("year", "y", "x")
    with pytest.raises(MissingVariableError, match="needs an inversion of vx and vy"):
        xr_itslive.workflows.speed.flow_and_noise(result[["vx"]])


def test_kernel_runs_on_the_array_api():
    xp = pytest.importorskip("array_api_strict")
    out = speed_from_components(
        xp.asarray([3.0, 0.0]), xp.asarray([4.0, 0.0]), xp.asarray([1.0, 1.0]),
        xp.asarray([1.0, 1.0]),
    )  # fmt: skip
    assert [float(v) for v in out["v"]] == [5.0, 0.0]
    assert [bool(v) for v in out["v_significant"]] == [True, False]


def test_composite_annual_speed_of_slow_ice_is_flagged_and_debiased(slow_result):
    """The composites' annual v goes through the same primitive: on still ice (true speed 0)
    the raw annual v is noise, the corrected one is smaller and the flag mostly says so. Both
    use the least-squares stds of the annual means (vx_std), not ITS_LIVE's vx_error, so that
    xr_itslive.speed of the composite says the same."""
    cube, _ = slow_result
    out = xr_itslive.composite(cube, climatology=(2015, 2022), min_obs=30).compute()
    still, fast = out.isel(y=0, x=0), out.isel(y=0, x=4)  # true 0 and 30 m/yr
    assert bool((out.v_debiased <= out.v + 1e-4).all())
    expected = np.sqrt(np.clip(out.v**2 - out.vx_std**2 - out.vy_std**2, 0, None))
    np.testing.assert_allclose(out.v_debiased, expected, rtol=1e-4, atol=1e-4)
    again = xr_itslive.speed(out)  # errors="auto": vx_std, vy_std
    np.testing.assert_array_equal(again["v_significant"].values, out.v_significant.values == 1)
    np.testing.assert_allclose(again["v_std"], out.v_std, rtol=1e-5)
    assert float(still.v_significant.mean()) < 0.3 < float(fast.v_significant.mean())
    assert float(still.v_debiased.mean()) < float(still.v.mean())
    assert abs(float(fast.v.mean()) - 30.0) < 2.0
