"""Annual composites (xr_itslive.composite) and their equivalent from an inversion (seasonal).

The truth is the model itself (``benchmarks/bench_composite.py:exact_cube``: annual means on
a line and one sinusoid per component, each pair observing their exact mean plus noise), so
that the fit can be checked against a dense ``np.linalg.lstsq`` of the same problem, the two
engines against each other, and known amplitudes, phases and trends recovered.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import warnings

import numpy as np
import pytest
import xarray as xr
from conftest import FIXTURE_3X3, GLACIER_CUBE, REPO, raise_if_dask_computes, requires_shared

import xr_itslive
from xr_itslive.errors import (
    ChunkingError,
    EmptySelectionError,
    InvalidParameterError,
    MissingVariableError,
    NotAnITSLiveCubeError,
    OptionalDependencyError,
)
from xr_itslive.kernels import composite as kc
from xr_itslive.kernels.namespace import KERNEL_NAMES, cupy_namespace
from xr_itslive.kernels.speed import speed_from_components
from xr_itslive.workflows import composite as wc

_spec = importlib.util.spec_from_file_location("bench_composite", REPO / "benchmarks" /
                                               "bench_composite.py")  # fmt: skip
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)
exact_cube = bench.exact_cube

WINDOW = (2014, 2023)  # inside exact_cube's default years, 2013-2024


@pytest.fixture(scope="module")
def truth():
    return exact_cube(n_pairs=1500, ny=3, nx=4, noise=3.0, seed=0)


def _raw_inputs(cube, name="vx", min_year_obs=1, robust=None, weights=True):
    setup = wc._setup(cube, None, None, WINDOW, None)
    kept = cube.isel(mid_date=np.flatnonzero(setup.kept))
    values = np.asarray(kept[name].values, dtype=np.float64)
    flat = values.reshape(values.shape[0], -1).T  # (pixels, pairs)
    w = None
    if weights:
        w = (1.0 / np.asarray(kept[f"{name}_error"].values, dtype=np.float64) ** 2)[None, :]
    options = kc.CompositeOptions(min_year_obs=min_year_obs, robust=robust, iterations=2)
    return setup, kept, flat, w, options


def _dense_std(v, error, t1, t2, first_year, n_years):
    """The least-squares std of each annual mean from the dense inverse normal matrix,
    ``max(σ̂, 1) sqrt((N⁻¹)_kk)`` (no year pruning, no reweighting, as bench.lstsq_pixel)."""
    ok = np.isfinite(v)
    v, error, t1, t2 = v[ok], error[ok], t1[ok], t2[ok]
    years = first_year + np.arange(n_years)
    fractions = np.clip(np.minimum(t2[:, None], years + 1) - np.maximum(t1[:, None], years), 0,
                        None) / (t2 - t1)[:, None]  # fmt: skip
    cols = fractions.sum(axis=0) > 0
    two_pi = 2 * np.pi
    sin_mean = (np.cos(two_pi * t1) - np.cos(two_pi * t2)) / (two_pi * (t2 - t1))
    cos_mean = (np.sin(two_pi * t2) - np.sin(two_pi * t1)) / (two_pi * (t2 - t1))
    rows = np.column_stack([fractions[:, cols], sin_mean, cos_mean]) / error[:, None]
    x = np.linalg.lstsq(rows, v / error, rcond=None)[0]
    sigma = np.sqrt(np.sum((rows @ x - v / error) ** 2) / (v.size - rows.shape[1]))
    std = np.full(n_years, np.nan)
    std[cols] = max(sigma, 1.0) * np.sqrt(np.diag(np.linalg.inv(rows.T @ rows))[: cols.sum()])
    return std


# --------------------------------------------------------------------------- the least squares


def test_kernels_match_a_dense_lstsq_of_the_same_model_to_round_off():
    cube = exact_cube(n_pairs=700, ny=2, nx=3, noise=4.0, gap_fraction=0.3, seed=3)
    setup, kept, flat, w, options = _raw_inputs(cube)
    t1 = wc.decimal_years(kept["acquisition_date_img1"].values)
    t2 = wc.decimal_years(kept["acquisition_date_img2"].values)
    design = setup.design
    engines = {
        "numba": kc.composite_pixels_compiled(flat, w, design, options),
        "array": kc.composite_pixels(flat.T, w.T, design, options),
    }
    center = 0.5 * (WINDOW[0] + WINDOW[1] + 1)
    error = np.asarray(kept["vx_error"].values, dtype=np.float64)
    years = setup.first_year + np.arange(design.n_years)
    in_window = (years >= WINDOW[0]) & (years <= WINDOW[1])
    for p in range(flat.shape[0]):
        ref = bench.lstsq_pixel(flat[p], error, t1, t2, setup.first_year, design.n_years,
                                WINDOW, center)  # fmt: skip
        std = _dense_std(flat[p], error, t1, t2, setup.first_year, design.n_years)
        # the line through the annual means, weighted by 1 / std² (not ITS_LIVE's error)
        line = np.polynomial.polynomial.polyfit(years[in_window] + 0.5 - center,
                                                ref["mean"][in_window], 1,
                                                w=1.0 / std[in_window])  # fmt: skip
        for raw in engines.values():
            final = kc.finish_composite(raw, design)
            np.testing.assert_allclose(raw["mean"][p], ref["mean"], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(raw["error"][p], ref["error"], rtol=1e-9)
            np.testing.assert_allclose(raw["std"][p], std, rtol=1e-8)
            np.testing.assert_allclose([raw["sin"][p], raw["cos"][p]], [ref["sin"], ref["cos"]],
                                       rtol=1e-9, atol=1e-9)  # fmt: skip
            cov = [[raw["cov_ss"][p], raw["cov_sc"][p]], [raw["cov_sc"][p], raw["cov_cc"][p]]]
            np.testing.assert_allclose(cov, ref["cov"], rtol=1e-7)
            np.testing.assert_allclose([final["offset"][p], final["slope"][p]], line, rtol=1e-9)
            assert raw["count0"][p] == ref["count0"]
    # the xarray layer: the same numbers, as float32
    result = xr_itslive.composite(cube, climatology=WINDOW, robust=False, min_year_obs=1)
    ref = bench.lstsq_pixel(flat[4], error, t1, t2, setup.first_year, design.n_years, WINDOW,
                            center)  # fmt: skip
    np.testing.assert_allclose(result["vx"].values[:, 1, 1], ref["mean"], rtol=1e-6, atol=1e-4)
    amp, phase = bench.amp_phase(ref["sin"], ref["cos"])
    np.testing.assert_allclose(float(result["vx_amp"][1, 1]), amp, rtol=1e-6)
    np.testing.assert_allclose(float(result["vx_phase"][1, 1]), phase, rtol=1e-6)


@pytest.mark.parametrize("robust", [None, "tukey", "huber"])
def test_engines_agree_numba_numpy_and_strict_array_api(robust):
    xps = pytest.importorskip("array_api_strict")
    cube = exact_cube(n_pairs=600, ny=2, nx=4, outlier_fraction=0.05, gap_fraction=0.3, seed=5)
    setup, _, flat, w, options = _raw_inputs(cube, min_year_obs=3, robust=robust)
    per_pixel = np.repeat(w, flat.shape[0], axis=0) * np.linspace(0.5, 2, flat.shape[0])[:, None]
    for weights in (w, per_pixel, None):
        numba = kc.composite_pixels_compiled(flat, weights, setup.design, options)
        array = kc.composite_pixels(flat.T, None if weights is None else weights.T,
                                    setup.design, options)  # fmt: skip
        strict = kc.composite_pixels(
            xps.asarray(flat.T), None if weights is None else xps.asarray(weights.T),
            setup.design, options,
        )  # fmt: skip
        for name in kc.RAW_NAMES:
            np.testing.assert_allclose(array[name], numba[name], rtol=1e-8, atol=1e-9,
                                       err_msg=name)  # fmt: skip
            np.testing.assert_allclose(np.asarray(strict[name]), numba[name], rtol=1e-8,
                                       atol=1e-9, err_msg=name)  # fmt: skip
    assert np.isfinite(numba["sin"]).all()
    if robust == "tukey":
        assert (numba["rejected"] > 0).all()


def test_numba_reads_a_pairs_outer_view_like_a_copy():
    cube = exact_cube(n_pairs=500, ny=3, nx=3, seed=6)
    setup, kept, flat, w, options = _raw_inputs(cube, robust="tukey")
    view = np.asarray(kept["vx"].values, dtype=np.float32).reshape(flat.shape[1], -1).T
    assert view.strides[0] < view.strides[1]
    a = kc.composite_pixels_compiled(view, w, setup.design, options, threads=2)
    b = kc.composite_pixels_compiled(np.ascontiguousarray(view), w, setup.design, options)
    for name in kc.RAW_NAMES:
        np.testing.assert_array_equal(a[name], b[name])


def test_engine_option_gives_the_same_dataset(truth):
    a = xr_itslive.composite(truth, climatology=WINDOW, engine="numba").compute()
    b = xr_itslive.composite(truth, climatology=WINDOW, engine="array").compute()
    xr.testing.assert_allclose(a.drop_attrs(), b.drop_attrs(), rtol=1e-5, atol=1e-4)
    with pytest.raises(InvalidParameterError, match="engine must be one of"):
        xr_itslive.composite(truth, engine="gpu")


# --------------------------------------------------------------------------- a known truth


def test_recovers_amplitude_phase_trend_and_annual_means(truth):
    result = xr_itslive.composite(truth, climatology=WINDOW).compute()
    errors = bench.recovery(result, truth, "vx")
    assert errors["amp"] < 0.6 and errors["phase_days"] < 3.0, errors
    assert errors["trend"] < 0.15 and errors["v0"] < 0.6 and errors["annual"] < 1.2, errors
    # the errors say how far off the means are: about 95% within 2 sigma
    annual = result["vx"].values
    true = truth["vx_true_annual"].sel(year=result["time"].dt.year.values).values
    z = np.abs(annual - true) / result["vx_error"].values
    assert 0.85 < np.nanmean(z < 2) <= 1.0
    amp_z = np.abs(result["vx_amp"] - truth["vx_true_amp"]) / result["vx_amp_error"]
    assert float((amp_z < 3).mean()) > 0.8


def test_the_annual_std_is_calibrated_and_the_its_live_error_is_not(truth):
    """On the model's own truth the least-squares std is the spread of the annual means
    (about 95% within 2 std); ITS_LIVE's error, ``1/sqrt(Σ M_ik/σ²)``, is about twice it."""
    result = xr_itslive.composite(truth, climatology=WINDOW).compute()
    true = truth["vx_true_annual"].sel(year=result["time"].dt.year.values).values
    z = (result["vx"].values - true) / result["vx_std"].values
    assert 0.85 < float(np.sqrt(np.nanmean(z**2))) < 1.15
    assert 0.9 < float(np.nanmean(np.abs(z) < 2)) < 0.98
    assert 1.5 < float(np.nanmedian(result["vx_error"] / result["vx_std"])) < 2.5
    for name in ("vx_std", "vy_std", "v_std"):
        assert result[name].dims == ("time", "y", "x") and result[name].attrs["units"]
    assert "standard deviation" in result["vx_std"].attrs["long_name"]
    assert "ITS_LIVE" in result["vx_error"].attrs["long_name"]


def _still_ice(img1, img2, error, n_pixels, seed):
    """A cube of ice that does not move (vx = vy = 0): pure Gaussian noise of ``error``."""
    rng = np.random.default_rng(seed)
    data = {}
    for c in ("vx", "vy"):
        noise = rng.normal(size=(img1.size, 1, n_pixels)) * error[:, None, None]
        data[c] = (("mid_date", "y", "x"), noise.astype(np.float32), {"units": "meter/year"})
        data[f"{c}_error"] = ("mid_date", error.astype(np.float32), {"units": "meter/year"})
    return xr.Dataset(
        data,
        coords={
            "mid_date": img1 + (img2 - img1) // 2,
            "acquisition_date_img1": ("mid_date", img1),
            "acquisition_date_img2": ("mid_date", img2),
            "y": [3_315_847.5],
            "x": 784_252.5 + 120.0 * np.arange(n_pixels),
        },
    )


def test_a_year_seen_through_long_pairs_is_not_significant_on_still_ice():
    """The demo cube's 1986: a year seen only through long pairs reaching into it has an
    annual mean far noisier than ITS_LIVE's error says. On still ice, v_significant must be
    a 5% test there too (by the error it would flag about a quarter of the pixels)."""
    rng = np.random.default_rng(11)
    day = np.timedelta64(86400, "s")
    starts, lengths = [], []
    for year in (2013, 2014, 2015, 2017, 2018, 2019):  # short pairs inside these years
        first = np.datetime64(f"{year}-01-01", "s")
        length = rng.uniform(5, 60, 60)
        starts.append(first + (rng.uniform(0, 365 - length) * 86400).astype("timedelta64[s]"))
        lengths.append(length)
    # 2016 only inside pairs of about 18 months that start in mid-2015
    starts.append(np.datetime64("2015-04-01", "s") + (rng.uniform(0, 180, 40) * day).astype(
        "timedelta64[s]"))  # fmt: skip
    lengths.append(rng.uniform(500, 560, 40))
    img1 = np.concatenate(starts).astype("datetime64[ns]")
    img2 = img1 + (np.concatenate(lengths) * 86400e9).astype("timedelta64[ns]")
    error = rng.uniform(2.0, 6.0, img1.size)
    cube = _still_ice(img1, img2, error, 600, seed=12)
    result = xr_itslive.composite(cube, climatology=(2013, 2019), robust=False).compute()
    year = result.sel(time="2016")
    assert (year["count"] == 40).all()
    assert float((year["vx_std"] / year["vx_error"]).median()) > 1.3
    z = np.concatenate([year["vx"] / year["vx_std"], year["vy"] / year["vy_std"]], axis=None)
    assert 0.85 < float(np.sqrt(np.mean(z**2))) < 1.15
    assert float(year["v_significant"].mean()) < 0.09  # 5% expected; 600 pixels: sd 0.9%
    by_error = speed_from_components(
        year["vx"].values, year["vy"].values, year["vx_error"].values, year["vy_error"].values
    )  # the flag as ITS_LIVE's error would set it
    assert float(np.mean(by_error["v_significant"])) > 0.15
    # v_debiased² (before its clip at zero) is unbiased for v² = 0 with the honest std
    excess = year["v"] ** 2 - year["vx_std"] ** 2 - year["vy_std"] ** 2
    assert abs(float(excess.mean())) < 0.15 * float((year["vx_std"] ** 2).mean() * 2)
    # the years of short pairs: a 5% test as well
    short = result.where(result["time"].dt.year != 2016, drop=True)
    assert float(short["v_significant"].mean()) < 0.08


def test_a_year_its_pairs_span_for_weeks_only_is_nan_with_its_count():
    """A record that starts on October 29 (the demo cube's 1986): its first year is seen for
    two months, through the small parts of long pairs; it is NaN, with its count, and the
    other years are what they were."""
    cube = exact_cube(n_pairs=1500, ny=2, nx=3, noise=3.0, seed=13)
    late = cube["acquisition_date_img1"].values >= np.datetime64("2013-10-29")
    cube = cube.isel(mid_date=np.flatnonzero(late))
    result = xr_itslive.composite(cube, climatology=WINDOW).compute()
    first = result.isel(time=0)
    assert int(first["time"].dt.year) == 2013
    for name in ("vx", "vx_error", "vx_std", "v", "v_std", "v_debiased"):
        assert np.isnan(first[name]).all(), name
    assert (first["v_significant"] == 0).all()
    assert (first["count"] >= 3).all()  # enough pairs: the rule is the span, not the count
    assert np.isfinite(result["vx"].isel(time=slice(1, None))).all()
    # the rule masks the year and changes nothing else: the kernel without it
    setup, kept, flat, w, options = _raw_inputs(cube, min_year_obs=3, robust="tukey")
    assert options.min_year_coverage == kc.MIN_YEAR_COVERAGE == 0.5
    everything = kc.CompositeOptions(min_year_obs=3, robust="tukey", min_year_coverage=0.0)
    for engine in (kc.composite_pixels_compiled, lambda f, w, d, o: kc.composite_pixels(
            f.T, w.T, d, o)):  # fmt: skip
        masked = engine(flat, w, setup.design, options)
        full = engine(flat, w, setup.design, everything)
        assert np.isnan(masked["mean"][:, 0]).all() and np.isfinite(full["mean"][:, 0]).all()
        for name in kc.RAW_NAMES:
            later = (slice(None), slice(1, None)) if masked[name].ndim == 2 else ...
            np.testing.assert_array_equal(masked[name][later], full[name][later], err_msg=name)
    # seen from May on (two thirds of it): reported
    may = exact_cube(n_pairs=1500, ny=1, nx=2, noise=3.0, seed=13)
    may = may.isel(mid_date=np.flatnonzero(may["acquisition_date_img1"].values
                                           >= np.datetime64("2013-05-01")))  # fmt: skip
    assert np.isfinite(xr_itslive.composite(may, climatology=WINDOW)["vx"].isel(time=0)).all()


def test_phase_is_the_day_of_the_maximum():
    """A noise-free cos wave peaking on day 100 (April 10): vx_phase = 100."""
    cube = exact_cube(n_pairs=600, ny=1, nx=1, noise=1e-6, gap_fraction=0.0, seed=7)
    t1 = wc.decimal_years(cube["acquisition_date_img1"].values)
    t2 = wc.decimal_years(cube["acquisition_date_img2"].values)
    day, amp = 100.0, 12.0
    mean_cos = np.sin(2 * np.pi * (t2 - day / 365.25)) - np.sin(2 * np.pi * (t1 - day / 365.25))
    mean_cos /= 2 * np.pi * (t2 - t1)
    cube["vx"][:] = (50.0 + amp * mean_cos)[:, None, None].astype(np.float32)
    result = xr_itslive.composite(cube, climatology=WINDOW, variables="vx", robust=False)
    assert float(result["vx_phase"][0, 0]) == pytest.approx(day, abs=0.02)
    assert float(result["vx_amp"][0, 0]) == pytest.approx(amp, abs=1e-3)
    # the fitted curve itself is highest on that day
    fit = bench.lstsq_pixel(cube["vx"].values[:, 0, 0].astype(float), np.ones(t1.size), t1, t2,
                            2013, 12, WINDOW, 2019.0)  # fmt: skip
    days = np.arange(0, 365.25, 0.01)
    curve = fit["sin"] * np.sin(2 * np.pi * days / 365.25) + fit["cos"] * np.cos(
        2 * np.pi * days / 365.25
    )
    assert days[np.argmax(curve)] == pytest.approx(day, abs=0.02)


def test_speed_is_projected_onto_the_mean_flow(truth):
    """vy = 4/3 vx everywhere (flow along (3, 4)): the speed's fits are 5/3 of vx's."""
    cube = truth.copy()
    cube["vy"] = cube["vx"] * (4 / 3)
    cube["vy_error"] = cube["vx_error"] * (4 / 3)
    result = xr_itslive.composite(cube, climatology=WINDOW).compute()
    sign = np.sign(result["vx0"])
    # (not the errors: they are propagated as if the components' errors were independent)
    for name in ("0", "_amp"):
        np.testing.assert_allclose(result[f"v{name}"], 5 / 3 * np.abs(result[f"vx{name}"]),
                                   rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(result["dv_dt"], 5 / 3 * sign * result["dvx_dt"], rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    phase_x = np.where(sign > 0, result["vx_phase"], (result["vx_phase"] + 182.625) % 365.25)
    np.testing.assert_allclose(result["v_phase"], phase_x, atol=1e-3)
    np.testing.assert_allclose(result["v"], 5 / 3 * np.abs(result["vx"]), rtol=1e-5)


def test_robust_fit_resists_outliers_and_counts_them():
    cube = exact_cube(n_pairs=2000, ny=2, nx=3, noise=3.0, outlier_fraction=0.05, seed=8)
    robust = xr_itslive.composite(cube, climatology=WINDOW).compute()
    plain = xr_itslive.composite(cube, climatology=WINDOW, robust=False).compute()
    good, bad = bench.recovery(robust, cube), bench.recovery(plain, cube)
    assert good["amp"] < 0.5 * bad["amp"] and good["annual"] < 0.5 * bad["annual"]
    assert good["amp"] < 1.0 and good["phase_days"] < 4.0
    # 5% of the observations were shifted by 50-300 m/yr: about that share is rejected
    assert 4.0 < float(robust["outlier_percent"].median()) < 8.0
    assert float(plain["outlier_percent"].max()) == 0.0
    assert (robust["count0"] < plain["count0"]).all()


# --------------------------------------------------------------------------- dask


def test_building_the_graph_computes_nothing(truth):
    lazy = truth.copy()
    for name in ("vx", "vy", "vx_error", "vy_error"):
        lazy[name] = lazy[name].chunk({"mid_date": -1} | ({"y": 2, "x": 2} if lazy[name].ndim
                                                          > 1 else {}))  # fmt: skip
    with raise_if_dask_computes():
        result = xr_itslive.composite(lazy, climatology=WINDOW)
        assert result["vx"].chunks is not None and result["vx0"].chunks is not None
        result.itslive  # noqa: B018  (the accessor on the result computes nothing either)
    computed = result.compute()
    assert type(result["vx_amp"].data._meta) is type(computed["vx_amp"].data)
    xr.testing.assert_identical(computed, xr_itslive.composite(truth, climatology=WINDOW))


def test_mid_date_in_several_chunks_is_refused(truth):
    split = truth.copy()
    split["vx"] = split["vx"].chunk({"mid_date": 500})
    with pytest.raises(ChunkingError, match=r"mid_date.*chunk\(\{'mid_date': -1\}\)"):
        xr_itslive.composite(split, variables="vx")


def test_float_fill_and_inf_in_a_lazy_cube_are_masked_with_a_count(truth):
    # vx as ``raw.vx.astype("float32")`` of a store opened with mask_and_scale=False gives it,
    # kept lazy: check_cube cannot see the fill without computing, so each block masks its own
    # (as the inversion's blocks do) and one warning per block counts what it took out
    finite = np.isfinite(truth["vx"].values)
    row = int(np.flatnonzero(finite[:, 0, 1] & finite[:, 2, 3])[0])
    n_fill = int((~finite[:, 0, 0]).sum())
    assert n_fill > 0
    leaked = truth.copy(deep=True)
    leaked["vx"][:, 0, 0] = leaked["vx"][:, 0, 0].fillna(-32767.0)
    leaked["vx"][row, 0, 1] = np.inf
    leaked["vx"][row, 2, 3] = np.inf
    as_nan = truth.copy(deep=True)
    as_nan["vx"][row, 0, 1] = np.nan
    as_nan["vx"][row, 2, 3] = np.nan
    lazy = leaked.copy()
    for name in ("vx", "vy", "vx_error", "vy_error"):
        lazy[name] = lazy[name].chunk({"mid_date": -1} | ({"y": 2, "x": 2} if lazy[name].ndim
                                                          > 1 else {}))  # fmt: skip
    with raise_if_dask_computes():  # counted where the blocks are read, not up front
        result = xr_itslive.composite(lazy, climatology=WINDOW)
    with pytest.warns(UserWarning) as record:
        computed = result.compute()
    untrusted = sorted(str(w.message) for w in record if str(w.message).startswith("'vx': "))
    tail = " are taken as missing (not counted in count or count0). To silence this, "
    assert untrusted == [
        f"'vx': 1 infinite values in a block of 2 pixels of a lazy cube{tail}set them to NaN "
        "yourself: ds['vx'].where(np.isfinite(ds['vx']))",
        f"'vx': {n_fill:,} values equal to -32767 (ITS_LIVE's fill value: int16 data cast to "
        f"float without decoding), 1 infinite values in a block of 4 pixels of a lazy cube{tail}"
        "open the cube with xr_itslive.open_cube (which decodes it) or mask the fill: "
        "ds['vx'].where(ds['vx'] != -32767); set them to NaN yourself: "
        "ds['vx'].where(np.isfinite(ds['vx']))",
    ]
    expected = xr_itslive.composite(as_nan, climatology=WINDOW)
    xr.testing.assert_identical(computed, expected)
    assert np.isfinite(computed["vx0"].values).all()


def test_untrusted_weights_are_left_out_as_the_inversion_does(truth):
    rows = np.flatnonzero(np.isfinite(truth["vx"].values).all(axis=(1, 2)))[[3, 10]]
    dropped = truth.copy(deep=True)
    dropped["vx"][rows] = np.nan
    # weights="error": an infinite or NaN error gives its pair weight 0, which drops it by
    # definition (resolve_weights, shared with the inversion, which is silent about it too)
    bad_error = truth.copy(deep=True)
    bad_error["vx_error"][rows[0]] = np.inf
    bad_error["vx_error"][rows[1]] = np.nan
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="'vx': ")
        got = xr_itslive.composite(bad_error, climatology=WINDOW, variables="vx")
    expected = xr_itslive.composite(dropped, climatology=WINDOW, variables="vx")
    xr.testing.assert_identical(got, expected)
    # weights the user gives: NaN or inf cannot be trusted: left out, and counted
    weights = 1.0 / truth["vx_error"].astype("float64") ** 2
    bad = weights.copy()
    bad[rows[0]] = np.inf
    bad[rows[1]] = np.nan
    n_obs = truth["vx"].isel(mid_date=rows).size  # every pixel's observation of both pairs
    with pytest.warns(
        UserWarning,
        match=rf"'vx': {n_obs} observations whose weight is NaN or inf in 12 pixels are taken "
        r"as missing \(not counted in count or count0\).*weights\.fillna\(0\)",
    ):
        got = xr_itslive.composite(truth, climatology=WINDOW, variables="vx", weights=bad)
    expected = xr_itslive.composite(dropped, climatology=WINDOW, variables="vx", weights=weights)
    xr.testing.assert_identical(got, expected)
    with pytest.warns(UserWarning, match=r"2 of the 1,500 weights of 'vx' are NaN or inf"):
        xr_itslive.invert(truth, variables="vx", weights=bad)  # the same pairs, also counted


# --------------------------------------------------------------------------- bad inputs


def test_a_climatology_window_without_pairs_names_the_data_years(truth):
    with pytest.raises(EmptySelectionError, match=r"climatology years 2030-2032.*climatology=\("):
        xr_itslive.composite(truth, climatology=(2030, 2032))


@pytest.mark.parametrize(
    ("climatology", "match"),
    [((2020, 2014), "first <= last"), ((2014,), "first_year, last_year"), ("2014", "climatology")],
)
def test_bad_climatology_is_refused(truth, climatology, match):
    with pytest.raises(InvalidParameterError, match=match):
        xr_itslive.composite(truth, climatology=climatology)


def test_center_date_outside_the_window_or_the_data(truth):
    with pytest.raises(
        InvalidParameterError, match=r"center_date='2012-06-01'.*climatology window"
    ):
        xr_itslive.composite(truth, climatology=WINDOW, center_date="2012-06-01")
    with pytest.raises(InvalidParameterError, match=r"outside the data \(2013-.*center_date=None"):
        xr_itslive.composite(truth, climatology=(2020, 2030), center_date="2028-01-01")
    with pytest.raises(InvalidParameterError, match="could not read center_date='soon'"):
        xr_itslive.composite(truth, climatology=WINDOW, center_date="soon")


def test_unknown_variables_and_missing_errors_name_the_fix(truth):
    with pytest.raises(MissingVariableError, match=r"variable 'vz' not found.*Pass variables="):
        xr_itslive.composite(truth, variables=("vx", "vz"))
    with pytest.raises(MissingVariableError, match=r"weights='error' needs 'vx_error'"):
        xr_itslive.composite(truth.drop_vars("vx_error"), variables="vx")
    with pytest.raises(InvalidParameterError, match=r"'v' with 'vx' and 'vy'.*Drop 'v'"):
        xr_itslive.composite(truth.assign(v=truth["vx"]), variables=("vx", "vy", "v"))
    # a cube without 'v' (the usual case: open_cube(..., ["vx", "vy", ...])) says the same,
    # not "'v' not found"
    assert "v" not in truth.variables
    with pytest.raises(InvalidParameterError, match=r"'v' with 'vx' and 'vy'.*Drop 'v'"):
        xr_itslive.composite(truth, variables=("vx", "vy", "v"))
    with pytest.raises(InvalidParameterError, match="robust must be False, True"):
        xr_itslive.composite(truth, robust="median")
    with pytest.raises(InvalidParameterError, match="min_year_obs must be a positive integer"):
        xr_itslive.composite(truth, min_year_obs=0)
    with pytest.raises(InvalidParameterError, match="weights must be None, 'error' or"):
        xr_itslive.composite(truth, weights="std")
    undecoded = truth.assign(vx=truth["vx"].fillna(-32767).astype("int16"))
    with pytest.raises(NotAnITSLiveCubeError, match="undecoded integers"):
        xr_itslive.composite(undecoded)


def test_fewer_pairs_than_a_fit_needs(truth):
    few = truth.isel(mid_date=slice(0, 20))
    with pytest.raises(EmptySelectionError, match=r"20 pairs.*min_obs=30.*smaller min_obs"):
        xr_itslive.composite(few, climatology=WINDOW)
    with pytest.raises(EmptySelectionError, match=r"no image pair lies inside"):
        xr_itslive.composite(truth, start="1990-01-01", end="1990-06-01")


def test_sparse_pixels_and_years_are_nan_with_their_count():
    cube = exact_cube(n_pairs=900, ny=1, nx=3, gap_fraction=0.0, seed=9)
    t1 = wc.decimal_years(cube["acquisition_date_img1"].values)
    t2 = wc.decimal_years(cube["acquisition_date_img2"].values)
    vx = cube["vx"].values.copy()
    # pixel 0: 25 pairs (fewer than min_obs=30); pixel 1: 2 pairs reach into 2013, the others
    # start in 2014 or later
    vx[25:, 0, 0] = np.nan
    touches_2013 = np.flatnonzero(t1 < 2014)
    vx[touches_2013[2:], 0, 1] = np.nan
    # pixel 2: 11 pairs, fewer than its unknowns (12 years + 2), with min_obs lowered
    cube["vx"][:] = vx
    result = xr_itslive.composite(cube, climatology=WINDOW, variables="vx", robust=False)
    assert np.isnan(result["vx"][:, 0, 0]).all() and np.isnan(result["vx0"][0, 0])
    assert int(result["count"][:, 0, 0].sum()) >= 25  # the pairs are counted (overlaps)
    year_2013 = result["time"].dt.year.values == 2013
    assert np.isnan(result["vx"].values[year_2013, 0, 1]).all()
    assert int(result["count"].values[year_2013, 0, 1][0]) == 2  # < min_year_obs = 3
    assert np.isfinite(result["vx"].values[~year_2013, 0, 1]).all()
    assert float(result["vx_amp"][0, 1]) > 0

    spread = np.argsort(0.5 * (t1 + t2))[:: 900 // 11][:11]  # 11 pairs across the years
    only = np.full(vx.shape[0], np.nan, dtype=np.float32)
    only[spread] = vx[spread, 0, 2]
    cube["vx"][:, 0, 2] = only
    lowered = xr_itslive.composite(cube, climatology=WINDOW, variables="vx", robust=False,
                                   min_obs=5, min_year_obs=1)  # fmt: skip
    assert np.isnan(lowered["vx"][:, 0, 2]).all() and int(lowered["count0"][0, 2]) == 0
    assert int(lowered["count"][:, 0, 2].max()) >= 1


# --------------------------------------------------------------------------- outputs


def test_every_variable_has_units_and_a_long_name_and_no_attribute_shadows(truth):
    result = xr_itslive.composite(truth, climatology=WINDOW)
    expected = {"vx", "vy", "v", "count", "count0", "outlier_percent"}
    for stem in ("0", "_amp", "_phase"):
        expected |= {f"{c}{stem}" for c in ("vx", "vy", "v")}
    expected |= {"dvx_dt", "dvy_dt", "dv_dt"}
    expected |= {f"{n}_error" for n in list(expected) if n not in
                 ("count", "count0", "outlier_percent")}  # fmt: skip
    assert expected <= set(result.data_vars)
    for name, var in result.data_vars.items():
        if name == "time_bounds":
            continue
        assert var.attrs.get("units") and var.attrs.get("long_name"), name
    assert result["vx_phase"].attrs["units"] == "days"  # after January 1
    assert "day of the seasonal maximum" in result["vx_phase"].attrs["long_name"]
    assert result["dvx_dt"].attrs["units"] == "meter/year^2"
    assert result["vx"].attrs["units"] == truth["vx"].attrs["units"]
    for key in result.attrs:
        assert key not in result.variables and not hasattr(xr.Dataset, key), key
    assert result["time"].dt.month.values.tolist() == [7] * result.sizes["time"]
    bounds = result["time_bounds"].values
    assert (bounds[:, 0].astype("datetime64[Y]").astype(int) + 1970 == result["time"].dt.year).all()


def test_the_result_writes_to_netcdf_and_zarr_and_reads_back(truth, tmp_path):
    result = xr_itslive.composite(truth.isel(x=slice(0, 2)), climatology=WINDOW).compute()
    assert result.attrs["Conventions"].startswith("CF-")
    result.to_netcdf(tmp_path / "c.nc", engine="scipy")  # netCDF-3: the strictest writer
    back = xr.open_dataset(tmp_path / "c.nc").load()
    np.testing.assert_array_equal(back["vx_amp"], result["vx_amp"])
    np.testing.assert_array_equal(back["time"], result["time"])
    result.to_zarr(tmp_path / "c.zarr")
    xr.testing.assert_identical(xr.open_zarr(tmp_path / "c.zarr").load(), result)


def test_the_accessor_is_the_function(truth):
    a = truth.itslive.composite(climatology=WINDOW, robust="huber")
    b = xr_itslive.composite(truth, climatology=WINDOW, robust="huber")
    xr.testing.assert_identical(a, b)
    assert "climatology" in str(type(truth.itslive).composite.__signature__)


# --------------------------------------------------------------------------- seasonal


def test_seasonal_of_an_inversion_agrees_with_the_composite():
    """Within 0.5 m/yr (amplitude), 1.5 days (phase), 0.6 m/yr (annual means), 0.2 m/yr
    (vx0) and 0.05 m/yr/yr (trend) on 2 m/yr noise: measured 0.25, 0.5, 0.3, 0.1, 0.02."""
    cube = exact_cube(n_pairs=3000, ny=2, nx=3, noise=2.0, seed=4, max_days=120)
    comp = xr_itslive.composite(cube, climatology=WINDOW, robust=False).compute()
    inverted = xr_itslive.invert(cube, step=12, lam=10, weights="error", uncertainty=True)
    fitted = inverted.itslive.seasonal(climatology=WINDOW).compute()
    assert fitted.attrs["weights"] == "std"
    tolerance = {"vx_amp": 0.5, "vy_amp": 0.5, "v_amp": 0.5, "vx_phase": 1.5, "vx0": 0.2,
                 "dvx_dt": 0.05, "vx": 0.6, "v": 0.6}  # fmt: skip
    for name, tol in tolerance.items():
        assert float(np.nanmax(np.abs(fitted[name] - comp[name]))) < tol, name
    plain = xr_itslive.seasonal(inverted.drop_vars(["vx_std", "vy_std"]), climatology=WINDOW)
    assert plain.attrs["weights"] == "none"
    with pytest.raises(InvalidParameterError, match="inversion result"):
        xr_itslive.seasonal(cube)
    with pytest.raises(MissingVariableError, match=r"\['vz'\] not found"):
        xr_itslive.seasonal(inverted, variables="vz")


# --------------------------------------------------------------------------- real data


@requires_shared
def test_real_cube_subset():
    cube = xr_itslive.open_cube(GLACIER_CUBE, variables=["vx", "vy", "vx_error", "vy_error"])
    cube = cube.isel(y=slice(16, 20), x=slice(18, 22))
    result = xr_itslive.composite(cube).compute()
    solved = result["count0"] > 0
    assert int(solved.sum()) >= 8
    assert float(np.abs(result["v0"].where(solved)).max()) < 500
    assert float(result["v_amp"].where(solved).median()) < 50
    assert float(result["outlier_percent"].where(solved).max()) < 20
    assert result["time"].dt.year.values[0] <= 1990 and result["time"].dt.year.values[-1] == 2024
    assert result.rio.crs is not None
    array = xr_itslive.composite(cube, engine="array").compute()
    xr.testing.assert_allclose(result.drop_attrs(), array.drop_attrs(), rtol=1e-4, atol=1e-3)


@requires_shared
def test_cli_round_trip_and_resume(tmp_path, capsys):
    from xr_itslive.cli import main
    from xr_itslive.workflows.store import MARKER_GROUP, store_status

    out = tmp_path / "composite.zarr"
    args = ["composite", str(FIXTURE_3X3), "--out", str(out), "--chunks", "2", "--no-progress"]
    assert main(args) == 0
    assert "wrote 4 of 4 chunks" in capsys.readouterr().out
    cube = xr_itslive.open_cube(FIXTURE_3X3, variables=["vx", "vy", "vx_error", "vy_error"],
                                chunks={"mid_date": -1, "y": 2, "x": 2})  # fmt: skip
    expected = xr_itslive.composite(cube).compute()
    written = xr.open_zarr(out).load()
    xr.testing.assert_identical(written.drop_attrs(), expected.drop_attrs())
    assert written.attrs["climatology_years"] == [2014, 2024]

    assert main(args) == 0
    assert "already complete (4 chunks); nothing to do" in capsys.readouterr().out
    for marker in sorted((out / MARKER_GROUP / "done").iterdir())[:3]:
        marker.unlink()  # as if killed after one chunk
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "wrote 3 of 4 chunks" in said and "1 were done before" in said
    assert store_status(out).complete
    xr.testing.assert_identical(xr.open_zarr(out).load().drop_attrs(), expected.drop_attrs())

    assert main([*args, "--climatology", "2015", "2024"]) == 1
    assert "holds a run with other settings" in capsys.readouterr().err
    assert main([*args, "--climatology", "2015", "2024", "--overwrite"]) == 0


def test_cli_defaults_are_the_library_defaults():
    import inspect

    from xr_itslive.cli import build_parser

    args = build_parser().parse_args(["composite", "c.zarr", "--out", "o.zarr"])
    signature = inspect.signature(xr_itslive.composite).parameters
    for name in ("min_obs", "min_year_obs", "center_date", "start", "end"):
        assert getattr(args, name) == signature[name].default
    assert tuple(args.climatology) == tuple(signature["climatology"].default)
    assert tuple(args.variables) == tuple(signature["variables"].default)
    assert args.weights == signature["weights"].default and args.robust == "tukey"
    flags = set(vars(args))
    assert set(signature) - {"ds"} <= flags, set(signature) - flags


def test_composite_to_zarr_on_a_gpu_without_cupy_names_the_extra(truth, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    cupy_namespace.cache_clear()
    try:
        with pytest.raises(OptionalDependencyError, match=r"xr_itslive\[gpu\]"):
            xr_itslive.composite_to_zarr(truth, tmp_path / "x.zarr", gpu=True)
        with pytest.raises(InvalidParameterError, match="GPU runs the 'array' engine"):
            xr_itslive.composite_to_zarr(truth, tmp_path / "x.zarr", gpu=True, engine="numba")
    finally:
        cupy_namespace.cache_clear()
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.gpu  # run by benchmarks/gpu_check.sh where a GPU is lent
def test_composite_on_cupy_chunks_matches_the_cpu(truth):
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # CuPy without a visible device
        pytest.skip("no CUDA device")
    from xr_itslive.workflows.device import to_device, to_host

    lazy = truth.chunk({"mid_date": -1, "y": 2, "x": 2})
    on_gpu = xr_itslive.composite(to_device(lazy), climatology=WINDOW)
    assert "cupy" in type(on_gpu["vx"].data._meta).__module__
    xr.testing.assert_allclose(
        to_host(on_gpu).compute().drop_attrs(),
        xr_itslive.composite(truth, climatology=WINDOW).drop_attrs().compute(),
        rtol=1e-5, atol=1e-4,
    )  # fmt: skip


# --------------------------------------------------------------------------- house rules


def test_kernel_names_cover_what_the_composite_kernels_call():
    import inspect

    sources = [inspect.getsource(kc)]
    sources += [inspect.getsource(f) for f in (wc.composite_block, wc._composite_array,
                                               wc._outputs)]  # fmt: skip
    called = set(re.findall(r"\bxp\.([a-z_0-9]+)\b", "\n".join(sources)))
    assert {"matmul", "atan2", "stack"} <= called
    assert called <= set(KERNEL_NAMES), called - set(KERNEL_NAMES)


def test_the_benchmark_runs_on_a_tiny_cube(capsys):
    report = bench.main(["--tiny", "--repeat", "1", "--loop-pixels", "3"])
    said = capsys.readouterr().out
    assert "x read" in said and "per-pixel np.linalg.lstsq loop" in said
    assert "production filter" in said and report["composite"] > 0


# --------------------------------------------------------------------------- several cubes


def test_mosaic_of_two_halves_is_the_composite_of_the_whole(truth, tmp_path, capsys):
    import rioxarray  # noqa: F401  (registers .rio)

    from xr_itslive.cli import main

    whole = truth.rio.write_crs("EPSG:32646")
    west, east = whole.isel(x=slice(0, 3)), whole.isel(x=slice(2, None))  # column 2 in both
    mosaic = xr_itslive.composite_mosaic([east, west], climatology=WINDOW).compute()
    expected = xr_itslive.composite(whole, climatology=WINDOW).compute()
    for name in expected.data_vars:
        got, want = (r[name].drop_vars("spatial_ref", errors="ignore") for r in (mosaic, expected))
        xr.testing.assert_identical(got, want)
    assert mosaic["source"].values.tolist() == [[1, 1, 0, 0]] * 3  # ties: the first given
    import json

    # lists of strings are JSON text in a CF result (netCDF cannot store them)
    assert json.loads(mosaic.attrs["mosaic_cubes"]) == ["cube_0", "cube_1"]
    assert mosaic.rio.crs is not None

    # a later year in one cube only: the other's years are NaN, count 0
    late = west.assign_coords(
        acquisition_date_img1=west["acquisition_date_img1"] + np.timedelta64(365 * 2, "D"),
        acquisition_date_img2=west["acquisition_date_img2"] + np.timedelta64(365 * 2, "D"),
    )
    shifted = xr_itslive.composite_mosaic([east, late], climatology=WINDOW)
    assert shifted.sizes["time"] == expected.sizes["time"] + 2
    assert int(shifted["count"].isel(time=-1, x=-1).max()) == 0

    with pytest.raises(InvalidParameterError, match="different CRSs"):
        xr_itslive.composite_mosaic([east, west.rio.write_crs("EPSG:32645")])
    with pytest.raises(InvalidParameterError, match="pixel lattice"):
        xr_itslive.composite_mosaic([east, west.assign_coords(x=west["x"] + 7.0)])
    with pytest.raises(InvalidParameterError, match="a sequence of cubes"):
        xr_itslive.composite_mosaic(whole)

    paths = []
    for name, part in (("west", west), ("east", east)):
        path = tmp_path / f"{name}.zarr"
        part[["vx", "vy", "vx_error", "vy_error"]].chunk({"mid_date": -1, "y": 2, "x": 2}).to_zarr(
            path, zarr_format=2, consolidated=True
        )
        paths.append(str(path))
    out = tmp_path / "mosaic.zarr"
    args = ["composite", *paths, "--out", str(out), "--climatology", "2014", "2023",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "chunks to" in capsys.readouterr().out
    written = xr.open_zarr(out).load()
    np.testing.assert_allclose(written["vx_amp"], expected["vx_amp"], rtol=1e-6)
    assert main(args) == 0
    assert "already complete" in capsys.readouterr().out


def test_user_weights_follow_the_pairs_kept(truth):
    weights = 1.0 / truth["vx_error"] ** 2
    a = xr_itslive.composite(truth, climatology=WINDOW, variables="vx", weights=weights,
                             start="2013-06-01")  # fmt: skip
    b = xr_itslive.composite(truth, climatology=WINDOW, variables="vx", start="2013-06-01")
    xr.testing.assert_allclose(a.drop_attrs(), b.drop_attrs())
    assert a.attrs["weights"] == "user"
    with pytest.raises(InvalidParameterError, match="weights has 10 pairs"):
        xr_itslive.composite(truth, variables="vx", weights=weights.isel(mid_date=slice(0, 10)))
