"""invert / predict through xarray: correctness, laziness, real data, and clear errors."""

import numpy as np
import pytest
import xarray as xr
from conftest import FIXTURE_3X3, raise_if_dask_computes, requires_shared

import xr_itslive
from xr_itslive.errors import (
    ChunkingError,
    EmptySelectionError,
    InvalidParameterError,
    MissingVariableError,
    NotAnITSLiveCubeError,
)
from xr_itslive.geo import design
from xr_itslive.synthetic import synthetic_cube, true_cell_means


@pytest.fixture(params=["numpy", "dask"])
def cube(request):
    chunks = {"y": 2, "x": 3} if request.param == "dask" else None
    return synthetic_cube(n_pairs=800, ny=3, nx=4, years=4, seed=3, empty_pixels=1, chunks=chunks)


def dense_solution(cube, name, step, lam, derivative, min_obs=5):
    """The reference formulation: dense A, one np.linalg.solve per pixel."""
    dm = xr_itslive.design_matrix(cube, step=step, derivative=derivative)
    a = dm.matrix.toarray()
    reg = lam**2 * (dm.regularization.T @ dm.regularization).toarray()
    values = cube[name].values[dm.kept]
    out = np.full((a.shape[1],) + values.shape[1:], np.nan)
    for iy in range(values.shape[1]):
        for ix in range(values.shape[2]):
            y = values[:, iy, ix].astype(float)
            valid = ~np.isnan(y)
            if valid.sum() >= min_obs:
                av = a[valid]
                out[:, iy, ix] = np.linalg.solve(av.T @ av + reg, av.T @ y[valid])
    return out


@pytest.mark.parametrize(("step", "lam", "derivative"), [(12, 10.0, 2), (30, 2.0, 1), (7, 50.0, 2)])
def test_invert_equals_dense_least_squares(cube, step, lam, derivative):
    result = cube.itslive.invert(step=step, lam=lam, derivative=derivative).compute()
    for name in ("vx", "vy"):
        expected = dense_solution(cube, name, step, lam, derivative)
        got = result[name].values
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        # float32 output of a float64 solve: agreement to float32 round-off
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-4)
    np.testing.assert_allclose(result["v"], np.hypot(result["vx"], result["vy"]), rtol=1e-6)


def test_result_layout_and_attrs(cube):
    result = xr_itslive.invert(cube, step=12, lam=10.0, start="2015-02-01", end="2018-06-01")
    assert result["vx"].dims == ("time", "y", "x")
    assert result["n_obs"].dims == ("y", "x")
    bounds = result["time_bounds"].values
    assert bounds[0, 0] == np.datetime64("2015-02-01")
    np.testing.assert_array_equal(bounds[1:, 0], bounds[:-1, 1])
    assert np.all(result["time"].values > bounds[:, 0]) and np.all(
        result["time"].values < bounds[:, 1]
    )
    for key, value in {"step_days": 12.0, "lam": 10.0, "derivative": 2, "min_obs": 5}.items():
        assert result.attrs[key] == value
    assert result.attrs["requested_start"] == "2015-02-01"
    assert result.attrs["n_pairs_used"] + result.attrs["n_pairs_dropped"] == cube.sizes["mid_date"]
    np.testing.assert_array_equal(result["x"], cube["x"])


def test_known_truth_is_recovered_from_int16_zarr(tmp_path):
    """Noise, gaps, unsorted and duplicated mid_date, int16 with missing_value, on disk."""
    cube = synthetic_cube(n_pairs=6000, ny=3, nx=3, years=6, noise=8.0, seed=11, dtype="int16")
    assert not np.all(np.diff(cube["mid_date"].values) >= np.timedelta64(0))  # unsorted
    assert cube.indexes["mid_date"].has_duplicates
    encoding = {
        v: {"dtype": "int16", "missing_value": -32767, "_FillValue": None} for v in ("vx", "vy")
    }
    cube.to_zarr(tmp_path / "cube.zarr", encoding=encoding, zarr_format=2, consolidated=True)
    stored = xr.open_zarr(tmp_path / "cube.zarr", mask_and_scale=False)
    assert stored["vx"].dtype == np.int16 and (stored["vx"] == -32767).any()
    opened = xr_itslive.open_cube(tmp_path / "cube.zarr")
    assert opened["vx"].dtype == np.float32 and opened["vx"].isnull().any()
    result = opened.itslive.invert(step=12, lam=10.0).compute()
    for name in ("vx", "vy"):
        truth = true_cell_means(cube, result, name)
        inner = slice(8, -8)  # the ends of a series have few pairs
        error = (result[name] - truth).isel(time=inner)
        rmse = float(np.sqrt((error**2).mean()))
        assert rmse < 0.5 * cube.attrs["synthetic_noise"], rmse  # 12-day cells from 8 m/yr pairs
        # the seasonal cycle (5..40 m/yr) is recovered, not smoothed away
        anomaly = (result[name] - result[name].mean("time")).isel(time=inner)
        true_anomaly = (truth - truth.mean("time")).isel(time=inner)
        assert np.corrcoef(anomaly.values.ravel(), true_anomaly.values.ravel())[0, 1] > 0.95


def test_dask_equals_numpy_and_stays_lazy():
    numpy_cube = synthetic_cube(n_pairs=600, ny=4, nx=5, seed=5)
    dask_cube = synthetic_cube(n_pairs=600, ny=4, nx=5, seed=5, chunks={"y": 2, "x": 2})
    with raise_if_dask_computes():
        lazy = xr_itslive.invert(dask_cube, step=15, lam=5.0)
        predicted = xr_itslive.predict(dask_cube, lazy)
    assert lazy["vx"].chunks == ((lazy.sizes["time"],), (2, 2), (2, 2, 1))
    assert isinstance(lazy["vx"].data._meta, np.ndarray)
    eager = xr_itslive.invert(numpy_cube, step=15, lam=5.0)
    computed = lazy.compute()
    assert type(computed["vx"].data) is type(lazy["vx"].data._meta)  # noqa: E721
    xr.testing.assert_identical(computed, eager)
    xr.testing.assert_allclose(predicted.compute(), xr_itslive.predict(numpy_cube, eager))


def test_engines_agree(cube):
    numba = xr_itslive.invert(cube, step=12, engine="numba").compute()
    array = xr_itslive.invert(cube, step=12, engine="array").compute()
    xr.testing.assert_allclose(numba, array.assign_attrs(engine="numba"), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("per_pixel_weights", [False, True])
def test_compiled_engine_reads_a_chunks_kept_pixels_in_place(per_pixel_weights):
    # One chunk of 48 pixels (3 blocks of 16) in the (mid_date, y, x) layout dask hands over,
    # some pixels empty or under min_obs: the compiled engine solves the others where they
    # are (full blocks of neighbours as vectors, blocks with gaps pixel by pixel), the array
    # engine from a copy of their rows. Both must give the same numbers.
    cube = synthetic_cube(n_pairs=500, ny=6, nx=8, years=4, seed=11, outlier_fraction=0.05)
    sparse = np.zeros((6, 8), bool)
    sparse.flat[[3, 40, 41, 47]] = True  # blocks: a gap; 17..32 (whole, shifted); partial
    first_pairs = xr.DataArray(np.arange(cube.sizes["mid_date"]) < 4, dims="mid_date")
    vx = cube["vx"].where(~xr.DataArray(sparse, dims=("y", "x")) | first_pairs)
    cube = cube.assign(vx=vx).chunk({"mid_date": -1, "y": 6, "x": 8})
    rng = np.random.default_rng(0)
    weights = (
        xr.DataArray(rng.uniform(0.2, 2.0, cube["vx"].shape), dims=cube["vx"].dims)
        if per_pixel_weights
        else "error"
    )
    kwargs = dict(step=12, robust="tukey", return_outliers=True, weights=weights, min_obs=5)
    numba = xr_itslive.invert(cube, engine="numba", **kwargs).compute()
    array = xr_itslive.invert(cube, engine="array", **kwargs).compute()
    assert int((numba["n_obs"] < 5).sum()) == 4
    assert np.isnan(numba["vx"].values[:, sparse]).all()
    assert np.isfinite(numba["vx"].values[:, ~sparse]).all()
    xr.testing.assert_allclose(numba, array.assign_attrs(engine="numba"), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("uncertainty", [False, True])
def test_large_inversions_run_the_compiled_steps_with_the_same_numbers(monkeypatch, uncertainty):
    # An inversion of at least COMPILED_STEPS_MIN_PIXELS pixel-variables runs the numba
    # engine's steps as one compiled kernel per task (a whole cube's case); a smaller one
    # calls the same kernels from Python. The threshold is lowered here so that a small cube
    # crosses it; the kernel is watched to know which way each run went.
    from xr_itslive.kernels import compiled
    from xr_itslive.workflows import invert as workflow

    cube = synthetic_cube(n_pairs=400, ny=5, nx=7, years=4, seed=5, outlier_fraction=0.05)
    cube = cube.chunk({"mid_date": -1, "y": 3, "x": 4})
    kwargs = dict(step=12, robust="tukey", weights="error", uncertainty=uncertainty)
    calls = []
    kernel = compiled._solve_range
    monkeypatch.setattr(compiled, "_solve_range", lambda *a: calls.append(1) or kernel(*a))
    small = xr_itslive.invert(cube, **kwargs).compute()
    assert not calls  # 70 pixel-variables: the pipeline from Python
    monkeypatch.setattr(workflow, "COMPILED_STEPS_MIN_PIXELS", 2 * 5 * 7)
    large = xr_itslive.invert(cube, **kwargs).compute()
    assert len(calls) == 2 * 2 * 2  # every chunk of both variables
    assert np.isfinite(large["vx"]).mean() > 0.9
    xr.testing.assert_identical(large, small)


def test_predict_reproduces_the_forward_model(cube):
    result = xr_itslive.invert(cube, step=12, lam=1.0)
    predicted = cube.itslive.predict(result).compute()
    dm = xr_itslive.design_matrix(cube, step=12)
    x = result["vx"].values.reshape(result.sizes["time"], -1)
    expected = (dm.matrix @ np.nan_to_num(x)).reshape((-1,) + result["vx"].shape[1:])
    got = predicted["vx"].values[dm.kept]
    finite = np.isfinite(result["vx"].values[0])
    np.testing.assert_allclose(got[:, finite], expected[:, finite], rtol=1e-5, atol=1e-3)
    residual = (cube["vx"] - predicted["vx"]).values[:, finite]
    noise = cube.attrs["synthetic_noise"]
    assert 0.7 * noise < np.nanstd(residual) < 1.3 * noise


def test_all_nan_pixels_and_min_obs(cube):
    result = xr_itslive.invert(cube, step=12, min_obs=50).compute()
    assert np.isnan(result["vx"].values[:, 0, 0]).all()  # the empty pixel
    assert int(result["n_obs"][0, 0]) == 0
    assert np.isfinite(result["vx"].values[:, 1, 1]).all()
    few = cube.copy()
    few["vx"] = few["vx"].where(
        xr.DataArray(np.arange(few.sizes["mid_date"]) < 30, dims="mid_date")
    )
    sparse_result = xr_itslive.invert(few, variables="vx", step=12, min_obs=31).compute()
    assert np.isnan(sparse_result["vx"]).all()


def test_mask_solves_only_masked_pixels(cube):
    mask = xr.DataArray(np.zeros((3, 4), bool), dims=("y", "x"), coords={"y": cube.y, "x": cube.x})
    mask[1:, 2:] = True
    full = xr_itslive.invert(cube, step=12).compute()
    masked = xr_itslive.invert(cube, step=12, mask=mask).compute()
    xr.testing.assert_identical(masked["vx"].where(mask), masked["vx"])
    xr.testing.assert_allclose(
        masked["vx"].where(mask, drop=True), full["vx"].where(mask, drop=True)
    )
    assert int(masked["n_obs"].where(~mask).sum()) == 0


@requires_shared
def test_real_3x3_fixture_inverts_to_plausible_values():
    names = ["vx", "vy", "v", "vx_error", "vy_error"]
    cube = xr_itslive.open_cube(FIXTURE_3X3, variables=names)
    window = {"start": "2014-01-01", "end": "2024-01-01"}
    plain = cube.itslive.invert(step=12, lam=10.0, **window).compute()
    n_cells = int(
        np.ceil((np.datetime64("2024-01-01") - np.datetime64("2014-01-01")).astype(int) / 12)
    )
    assert plain.sizes["time"] == n_cells
    assert np.isfinite(plain["v"]).all()
    assert (plain["n_obs"] > 500).all()
    assert plain.rio.crs.to_epsg() == 32646
    # Slow ice (~4 m/yr) where 6..30-day pairs scatter by ~100 m/yr: weighting by the pairs'
    # errors gives a series that sits where the precise long pairs do, without their scatter.
    weighted = cube.itslive.invert(step=12, lam=100.0, weights="error", **window).compute()
    raw = cube.sel(mid_date=slice("2014-01-01", "2023-06-01")).compute()
    baseline = (raw["acquisition_date_img2"] - raw["acquisition_date_img1"]).dt.days
    for name in ("vx", "vy"):
        long_pairs = raw[name].where(baseline >= 200)
        reference = long_pairs.median("mid_date")
        inverted = weighted[name].median("time")
        assert float(np.abs(inverted - reference).max()) < 3.0
        spread = weighted[name].quantile(0.9, "time") - weighted[name].quantile(0.1, "time")
        plain_spread = plain[name].quantile(0.9, "time") - plain[name].quantile(0.1, "time")
        assert (spread < 0.5 * plain_spread).all()
    assert weighted.attrs["weights"] == "error"


def test_error_weights_match_dense_weighted_solve():
    cube = synthetic_cube(n_pairs=500, ny=2, nx=2, seed=4)
    result = xr_itslive.invert(cube, variables="vx", step=20, lam=5.0, weights="error").compute()
    dm = xr_itslive.design_matrix(cube, step=20)
    a = dm.matrix.toarray()
    w = 1.0 / cube["vx_error"].values.astype(float) ** 2
    reg = 25.0 * (dm.regularization.T @ dm.regularization).toarray()
    y = cube["vx"].values[:, 1, 1].astype(float)
    valid = ~np.isnan(y)
    av = a[valid]
    expected = np.linalg.solve(av.T @ (w[valid, None] * av) + reg, av.T @ (w[valid] * y[valid]))
    np.testing.assert_allclose(result["vx"].values[:, 1, 1], expected, rtol=2e-6, atol=1e-4)


def test_weights_errors(cube):
    with pytest.raises(MissingVariableError, match="weights='error' needs 'v_error' for 'v'"):
        xr_itslive.invert(cube.assign(v=cube["vx"]), variables="v", weights="error")
    with pytest.raises(
        InvalidParameterError,
        match="weights must be None, 'error' or a DataArray, got weights='inverse'",
    ):
        xr_itslive.invert(cube, weights="inverse")


# --- bad input -----------------------------------------------------------------------------


def test_missing_variable(cube):
    with pytest.raises(MissingVariableError, match=r"variable 'vz' not found; the cube has \["):
        xr_itslive.invert(cube, variables=("vx", "vz"))


def test_not_an_itslive_dataset():
    plain = xr.Dataset({"vx": (("time", "y"), np.zeros((3, 2)))})
    with pytest.raises(NotAnITSLiveCubeError, match=r"no .mid_date. dimension .*open_cube"):
        xr_itslive.invert(plain)
    with pytest.raises(NotAnITSLiveCubeError, match="expected an xarray.Dataset .* got DataArray"):
        xr_itslive.invert(plain["vx"])
    no_dates = xr.Dataset({"vx": (("mid_date", "y"), np.zeros((3, 2)))})
    with pytest.raises(NotAnITSLiveCubeError, match="'acquisition_date_img1' not found"):
        xr_itslive.invert(no_dates, variables="vx")


def test_variable_without_mid_date(cube):
    with pytest.raises(
        NotAnITSLiveCubeError, match="'vx_true_base' has dims .* without 'mid_date'"
    ):
        xr_itslive.invert(cube, variables="vx_true_base")


def test_mid_date_split_across_chunks():
    split = synthetic_cube(n_pairs=100, ny=2, nx=2).chunk({"mid_date": 40})
    with pytest.raises(
        ChunkingError, match=r"split into 3 chunks along 'mid_date'.*\.chunk\(\{'mid_date': -1\}\)"
    ):
        xr_itslive.invert(split)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"step": 0}, InvalidParameterError, "step must be a positive number of days, got step=0"),
        ({"lam": -2.0}, InvalidParameterError, "lam must be a finite number >= 0, got lam=-2.0"),
        ({"derivative": 0}, InvalidParameterError, "derivative must be 1 .* got derivative=0"),
        (
            {"start": "2020-01-01", "end": "2019-01-01"},
            InvalidParameterError,
            "start must be before end",
        ),
        (
            {"start": "2040-01-01", "end": "2041-01-01"},
            EmptySelectionError,
            "no image pair lies inside 2040-01-01",
        ),
        (
            {"min_obs": 0},
            InvalidParameterError,
            "min_obs must be a positive integer, got min_obs=0",
        ),
        ({"engine": "cuda"}, InvalidParameterError, r"engine must be one of \['numba', 'array'\]"),
        (
            {"robust": True, "robust_iterations": 0},
            InvalidParameterError,
            r"robust_iterations must be a positive integer, got 0; pass 1 or more, or None",
        ),
    ],
)
def test_bad_parameters(cube, kwargs, error, match):
    with pytest.raises(error, match=match):
        xr_itslive.invert(cube, **kwargs)


def test_robust_iterations_default_depends_on_weights(cube):
    """2 reweightings with error weights, 4 without (see invert's docstring); recorded."""
    weights = xr.ones_like(cube["vx"].isel(y=0, x=0, drop=True))
    weighted = xr_itslive.invert(cube, step=30, robust=True, weights=weights)
    plain = xr_itslive.invert(cube, step=30, robust=True)
    assert (weighted.attrs["robust_iterations"], plain.attrs["robust_iterations"]) == (2, 4)
    explicit = xr_itslive.invert(cube, step=30, robust=True, robust_iterations=4)
    xr.testing.assert_identical(explicit["vx"], plain["vx"])


def test_reversed_pairs_warn_and_are_dropped():
    cube = synthetic_cube(n_pairs=200, ny=2, nx=2, seed=2)
    img2 = cube["acquisition_date_img2"].values.copy()
    img2[:4] = cube["acquisition_date_img1"].values[:4] - np.timedelta64(1, "D")
    bad = cube.assign_coords(acquisition_date_img2=("mid_date", img2))
    with pytest.warns(
        UserWarning, match="4 pairs have acquisition_date_img2 <= acquisition_date_img1"
    ):
        result = xr_itslive.invert(bad, step=12)
    assert result.attrs["n_pairs_dropped"] == 4
    reference = xr_itslive.invert(cube.isel(mid_date=slice(4, None)), step=12)
    xr.testing.assert_allclose(result["vx"], reference["vx"])


def test_bad_mask(cube):
    with pytest.raises(InvalidParameterError, match="mask must be a boolean .* got dtype int64"):
        xr_itslive.invert(cube, mask=xr.DataArray(np.ones((3, 4), int), dims=("y", "x")))


def test_design_matrix_accessor(cube):
    dm = cube.itslive.design_matrix(step=12)
    assert dm.matrix.shape == (cube.sizes["mid_date"], dm.centers.size)
    np.testing.assert_allclose(dm.matrix.sum(axis=1), 1.0)
    geometry = design.pair_geometry(
        cube.acquisition_date_img1.values, cube.acquisition_date_img2.values, 12
    )
    assert dm.bandwidth == geometry.bandwidth
    normal = dm.normal_matrix(lam=10.0).toarray()
    assert np.all(np.abs(np.triu(normal, dm.bandwidth + 1)) == 0)  # banded


def test_predict_without_numpy_matches_the_compiled_kernel():
    """predict's array-API path (CuPy chunks on a GPU) gives the host kernel's numbers."""
    xps = pytest.importorskip("array_api_strict")
    import sys

    invert_module = sys.modules["xr_itslive.workflows.invert"]
    cube = synthetic_cube(n_pairs=120, ny=2, nx=3, seed=4)
    result = xr_itslive.invert(cube, step=12.0)
    solution = result["vx"].transpose(..., "time").values
    geometry = design.pair_geometry(
        cube["acquisition_date_img1"].values, cube["acquisition_date_img2"].values, 12.0,
        np.datetime64(result.attrs["start"]), np.datetime64(result.attrs["end"]),
    )  # fmt: skip
    rows = np.flatnonzero(geometry.kept)
    holder = np.empty((), dtype=object)
    holder[()] = (rows, geometry.arrays, cube.sizes["mid_date"])
    host = invert_module._predict_block(solution, holder)
    generic = invert_module._predict_block(xps.asarray(solution), holder)
    assert type(generic).__module__.startswith("array_api_strict")
    np.testing.assert_allclose(np.asarray(generic), host, rtol=1e-6, atol=1e-4)
    assert np.isnan(host).any() == (rows.size < cube.sizes["mid_date"])
