"""Nothing silently wrong: data that cannot be trusted is masked (with a warning) or refused,
grids that cannot fit are refused before allocating, and uncertainty from too little data is
NaN rather than a tiny number."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import xarray as xr

import xr_itslive
from xr_itslive.errors import InvalidParameterError, NotAnITSLiveCubeError
from xr_itslive.synthetic import synthetic_cube


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return synthetic_cube(n_pairs=300, ny=2, nx=3, seed=0, duplicate_fraction=0.0)


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
