"""Nothing silently wrong: data that cannot be trusted is masked (with a warning) or refused,
grids that cannot fit are refused before allocating, and uncertainty from too little data is
NaN rather than a tiny number."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import xarray as xr
from conftest import FIXTURE_3X3, GLACIER_CUBE, raise_if_dask_computes, requires_shared

import xr_itslive
from xr_itslive.errors import (
    EmptySelectionError,
    InvalidParameterError,
    NotAnITSLiveCubeError,
    UnsolvedPixelsWarning,
)
from xr_itslive.synthetic import synthetic_cube


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return synthetic_cube(n_pairs=300, ny=2, nx=3, seed=0, duplicate_fraction=0.0)


def _lazy(cube: xr.Dataset) -> xr.Dataset:
    """``cube`` with dask-backed velocities (its pair dates in memory, as open_cube gives)."""
    return cube.assign({name: cube[name].chunk() for name in ("vx", "vy")})


def _valid_entry(cube: xr.Dataset) -> int:
    return int(np.flatnonzero(np.isfinite(cube["vx"].values[:, 0, 0]))[0])


def test_undecoded_int16_is_refused_by_invert(cube):
    raw = cube.assign(vx=cube["vx"].fillna(-32767).round().astype("int16"))
    with pytest.raises(NotAnITSLiveCubeError, match=r"undecoded integers.*-32767.*open_cube"):
        xr_itslive.invert(raw, step=30)


def test_undecoded_int16_store_is_masked_when_opened(cube, tmp_path):
    # A store without missing_value (or opened with mask_and_scale=False): the fill must not
    # become a velocity of -32767 m/yr.
    encoded = cube[["vx", "vy"]].fillna(-32767).round().astype("int16")
    encoded = encoded.assign_coords(
        {c: cube[c] for c in ("acquisition_date_img1", "acquisition_date_img2")}
    )
    encoded = encoded.reset_coords(["acquisition_date_img1", "acquisition_date_img2"])
    for name in ("vx", "vy"):
        encoded[name].encoding = {}
        encoded[name].attrs.pop("missing_value", None)
    path = tmp_path / "int16.zarr"
    encoded.to_zarr(path, zarr_format=2, consolidated=True)
    with pytest.warns(UserWarning, match=r"undecoded integers.*-32767 fill values are taken"):
        opened = xr_itslive.open_cube(path, variables=["vx", "vy"])
    assert opened["vx"].dtype == np.float32
    values = opened["vx"].values
    assert np.nanmin(values) > -1000  # no fill left as a number
    expected = np.round(cube["vx"].sortby("mid_date").values)
    np.testing.assert_array_equal(np.isnan(values), np.isnan(expected))


def test_infinite_values_count_as_missing(cube):
    row = _valid_entry(cube)
    with_inf, with_nan = cube.copy(deep=True), cube.copy(deep=True)
    with_inf["vx"][row, 0, 0] = np.inf
    with_nan["vx"][row, 0, 0] = np.nan
    with pytest.warns(UserWarning, match=r"'vx': 1 infinite values in 6 pixels are taken as miss"):
        a = xr_itslive.invert(with_inf, variables="vx", step=30)
    b = xr_itslive.invert(with_nan, variables="vx", step=30)
    reference = xr_itslive.invert(cube, variables="vx", step=30)
    assert int(a["n_obs"][0, 0]) == int(reference["n_obs"][0, 0]) - 1
    np.testing.assert_array_equal(a["vx"].values, b["vx"].values)
    assert np.isfinite(a["vx"].values[:, 0, 0]).any()


def test_weights_that_cannot_be_trusted(cube):
    row = _valid_entry(cube)
    ones = np.ones(cube.sizes["mid_date"])
    reference = xr_itslive.invert(cube, variables="vx", step=30)
    for bad in (np.inf, np.nan):
        w = ones.copy()
        w[row] = bad
        with pytest.warns(UserWarning, match=r"1 of the 300 weights of 'vx' are NaN or inf"):
            out = xr_itslive.invert(
                cube, variables="vx", step=30, weights=xr.DataArray(w, dims="mid_date")
            )
        assert int(out["n_obs"][0, 0]) == int(reference["n_obs"][0, 0]) - 1
        assert np.isfinite(out["vx"].values).any()
    w = ones.copy()
    w[3] = -1.0
    with pytest.raises(InvalidParameterError, match=r"weights must be >= 0, found 1 negative"):
        xr_itslive.invert(cube, step=30, weights=xr.DataArray(w, dims="mid_date"))


def test_pairs_repeated_by_assembly_count_once(cube):
    repeated = xr.concat([cube, cube.isel(mid_date=slice(0, 25))], dim="mid_date")
    repeated = repeated.assign_coords(
        pair_id=("mid_date", np.r_[np.arange(cube.sizes["mid_date"]), np.arange(25)])
    )
    once = cube.assign_coords(pair_id=("mid_date", np.arange(cube.sizes["mid_date"])))
    with pytest.warns(UserWarning, match=r"25 pairs appear more than once"):
        got = xr_itslive.invert(repeated, step=30)
    expected = xr_itslive.invert(once, step=30)
    np.testing.assert_array_equal(got["vx"].values, expected["vx"].values)
    np.testing.assert_array_equal(got["n_obs"].values, expected["n_obs"].values)


def test_float_fill_in_memory_is_refused_by_invert_and_composite(cube):
    # int16 cast to float without decoding: -32767 would be a velocity of -32767 m/yr
    leaked = cube.assign(vx=cube["vx"].fillna(-32767.0))
    n_fill = int(cube["vx"].isnull().sum())
    for call in (xr_itslive.invert, xr_itslive.composite):
        with pytest.raises(
            NotAnITSLiveCubeError,
            match=rf"'vx' holds {n_fill:,} values equal to -32767, ITS_LIVE's fill value.*"
            r"ds\['vx'\]\.where\(ds\['vx'\] != -32767\)",
        ):
            call(leaked)


@requires_shared
def test_float_fill_in_a_lazy_real_cube_is_masked_with_a_count():
    # the real 3 x 3 cube, its vx put back to the fill where missing, as vx.astype("float32")
    # of the undecoded store gives: 813,411 m/yr came out before, without a word
    ds = xr_itslive.open_cube(FIXTURE_3X3, variables=["vx"])
    leaked = ds.assign(vx=ds["vx"].fillna(-32767.0))
    n_fill = int(ds["vx"].isnull().sum())
    with raise_if_dask_computes():  # counted where the blocks are read, not up front
        lazy = xr_itslive.invert(leaked, variables="vx", step=30)
    with pytest.warns(
        UserWarning,
        match=rf"'vx': {n_fill:,} values equal to -32767 \(ITS_LIVE's fill value: int16 data "
        r"cast to float without decoding\) in a block of 9 pixels of a lazy cube are taken as "
        r"missing .*xr_itslive\.open_cube",
    ):
        got = lazy.compute()
    expected = xr_itslive.invert(ds, variables="vx", step=30).compute()
    np.testing.assert_array_equal(got["vx"].values, expected["vx"].values)
    np.testing.assert_array_equal(got["n_obs"].values, expected["n_obs"].values)


def test_untrusted_values_of_a_lazy_cube_are_counted_per_block(cube):
    row = _valid_entry(cube)
    with_inf = cube.copy(deep=True)
    with_inf["vx"][row, 0, 0] = -np.inf
    with_inf["vx"][row, 1, 2] = np.inf
    w = xr.DataArray(np.ones(cube.sizes["mid_date"]), dims="mid_date")
    w[row] = np.nan
    valid = int(np.isfinite(cube["vx"].values[row]).sum())  # observations the NaN weight takes
    with raise_if_dask_computes():
        lazy = xr_itslive.invert(_lazy(with_inf), variables="vx", step=30, weights=w.chunk())
    with pytest.warns(
        UserWarning,
        match=rf"'vx': 2 infinite values, {valid - 2} observations whose weight is NaN or inf in "
        r"a block of 6 pixels of a lazy cube are taken as missing",
    ):
        got = lazy.compute()
    eager = with_inf.copy(deep=True)
    eager["vx"][row] = np.nan
    expected = xr_itslive.invert(eager, variables="vx", step=30)
    np.testing.assert_array_equal(got["n_obs"].values, expected["n_obs"].values)


def test_min_obs_above_the_number_of_pairs_is_refused(cube):
    n = cube.sizes["mid_date"]
    with pytest.raises(
        EmptySelectionError, match=rf"min_obs={n + 1} but the cube has {n} pairs.*smaller min_obs"
    ):
        xr_itslive.invert(cube, step=30, min_obs=n + 1)
    assert int(xr_itslive.invert(cube, step=30, min_obs=n)["n_obs"].max()) < n  # allowed


def test_weights_all_zero_are_refused_or_named_not_blamed_on_lam(cube):
    zero = xr.zeros_like(cube["vx"])
    with pytest.raises(InvalidParameterError, match=r"no positive weight.*weights=None"):
        xr_itslive.invert(cube, step=30, weights=zero)
    # lazy weights cannot be read up front: the warning says it is the weights, not lam
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = xr_itslive.invert(_lazy(cube), step=30, weights=zero.chunk()).compute()
    assert int(out["n_obs"].max()) == 0
    kinds = {type(w.message) for w in seen}
    assert UnsolvedPixelsWarning not in kinds, [str(w.message) for w in seen]
    assert any("fewer than min_obs of their pairs have a positive weight" in str(w.message)
               for w in seen)  # fmt: skip


def test_repeats_without_pair_id_are_used_once_in_memory(cube):
    doubled = xr.concat([cube, cube.isel(mid_date=slice(0, 30))], dim="mid_date", data_vars="all")
    assert "pair_id" not in doubled.coords
    with pytest.warns(UserWarning, match=r"30 pairs repeat another pair's acquisition dates and "):
        got = xr_itslive.invert(doubled, step=30)
    expected = xr_itslive.invert(cube, step=30)
    np.testing.assert_array_equal(got["n_obs"].values, expected["n_obs"].values)
    np.testing.assert_array_equal(got["vx"].values, expected["vx"].values)


def test_pairs_sharing_dates_with_other_values_are_distinct(cube):
    # a second pair over the same dates (another sensor), with its own values: both count
    other = cube.isel(mid_date=slice(0, 30)).copy(deep=True)
    other["vx"] = other["vx"] + 1.0
    both = xr.concat([cube, other], dim="mid_date", data_vars="all")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = xr_itslive.invert(both, variables="vx", step=30)
    extra = cube["vx"].isel(mid_date=slice(0, 30)).notnull().sum("mid_date")
    reference = xr_itslive.invert(cube, variables="vx", step=30)
    np.testing.assert_array_equal(out["n_obs"].values, (reference["n_obs"] + extra).values)


def test_repeats_in_a_lazy_cube_without_pair_id_are_warned_about(cube):
    doubled = _lazy(xr.concat([cube, cube], dim="mid_date", data_vars="all"))
    with raise_if_dask_computes():
        with pytest.warns(UserWarning, match=r"600 pairs share both acquisition dates .* no "):
            xr_itslive.invert(doubled, step=30)


@requires_shared
def test_no_repeat_is_found_among_the_real_cubes_pairs_that_share_dates():
    from xr_itslive.workflows.common import drop_duplicated_pairs

    # 33,321 of the 47,892 pairs share both dates with another: at 25 pixels, and at the
    # pixel with the most pairs (7,033), none has the values of another
    ds = xr_itslive.open_cube(GLACIER_CUBE, variables=["vx", "vy"]).drop_vars("pair_id")
    for pixels in ({"y": slice(1, 6), "x": slice(13, 18)}, {"y": [3], "x": [15]}):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _, kept = drop_duplicated_pairs(ds.isel(pixels).load())
        assert kept is None


def test_a_grid_too_fine_is_refused_before_allocating(cube):
    start = time.perf_counter()
    with pytest.raises(
        InvalidParameterError, match=r"step=0.001 days makes .* GiB.*step >= "
    ) as err:
        xr_itslive.invert(cube, step=0.001)
    assert time.perf_counter() - start < 5  # no 10 TiB allocation attempted
    # the step the message names fits under the limit; a finer one does not
    from xr_itslive.geo.design import pair_geometry
    from xr_itslive.workflows.invert import MAX_BAND_BYTES

    suggested = float(str(err.value).split("step >= ")[1].split(" ")[0])
    dates = cube["acquisition_date_img1"].values, cube["acquisition_date_img2"].values

    def band_bytes(step):
        geometry = pair_geometry(*dates, step)
        return geometry.n_cells * (geometry.bandwidth + 1) * 8

    assert band_bytes(suggested) <= MAX_BAND_BYTES < band_bytes(suggested / 3)


def test_std_is_nan_when_the_fit_has_no_residuals_to_estimate_noise_from():
    cube = synthetic_cube(n_pairs=400, ny=1, nx=2, seed=3, gap_fraction=0.0)
    few = cube.copy(deep=True)
    keep = np.zeros(cube.sizes["mid_date"], bool)
    keep[[10, 300]] = True
    # pixel (0, 0): 2 pairs, which a straight line (the curvature penalty's null space) fits
    # exactly: a solution with no residual degree of freedom; pixel (0, 1): all 400 pairs
    few["vx"][~keep, 0, 0] = np.nan
    result = xr_itslive.invert(few, variables="vx", step=60, lam=10.0, min_obs=2, uncertainty=True)
    assert int(result["n_obs"][0, 0]) == 2
    assert np.isfinite(result["vx"].values[:, 0, 0]).all()  # a solution...
    assert np.isnan(result["vx_std"].values[:, 0, 0]).all()  # ... but no noise estimate
    assert np.isfinite(result["vx_std"].values[:, 0, 1]).all()


def test_std_matches_a_monte_carlo_of_the_same_pixel():
    """The reported posterior std against the spread of the estimates over noise draws: one
    pixel's pairs repeated over many pixels, each with its own noise."""
    base = synthetic_cube(n_pairs=250, ny=1, nx=1, seed=5, noise=0.0, gap_fraction=0.0)
    rng = np.random.default_rng(1)
    sigma, draws = 4.0, 200
    clean = base["vx"].values[:, 0, 0]
    noisy = clean[:, None, None] + rng.normal(0, sigma, (clean.size, 1, draws))
    cube = xr.Dataset(
        {"vx": (("mid_date", "y", "x"), noisy.astype("float32"))},
        coords={
            "mid_date": base["mid_date"],
            "acquisition_date_img1": base["acquisition_date_img1"],
            "acquisition_date_img2": base["acquisition_date_img2"],
            "y": [0.0],
            "x": np.arange(draws, dtype=float),
        },
    )
    out = xr_itslive.invert(cube, variables="vx", step=90, lam=1.0, uncertainty=True)
    spread = out["vx"].std("x").values[:, 0]
    claimed = out["vx_std"].mean("x").values[:, 0]
    ratio = np.median(claimed / spread)
    assert 0.8 < ratio < 1.3, ratio


def test_warnings_do_not_fire_on_clean_data(cube):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr_itslive.invert(cube, step=30, uncertainty=True)


@requires_shared
def test_the_store_checks_benchmark_runs(capsys):
    # benchmarks/bench_store_checks.py prints what the missing-chunk check and the input
    # identity cost (docs/reliability.md quotes it); run once so that it cannot break unseen
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_store_checks.py"
    spec = importlib.util.spec_from_file_location("bench_store_checks", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.main(["--cube", str(GLACIER_CUBE), "--repeat", "1"])
    assert set(figures) == {"open", "open_checked", "open_checked_all", "identity"}
    assert all(0 < seconds < 60 for seconds in figures.values())
    assert "input_identity(cube, ['vx', 'vy'])" in capsys.readouterr().out
