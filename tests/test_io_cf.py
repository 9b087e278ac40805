"""Results that open anywhere (``xr_itslive/io/cf.py``).

Every result (invert with uncertainty, robust weights and outliers; invert with GCV; a mosaic
of two cubes; GP regressions, of a component and of the speed; the composite, its equivalent
from an inversion and the composite mosaic) is written with each installed netCDF writer
(scipy's netCDF-3, netCDF4, h5netcdf) and to zarr, read back with the same values, and passes
the IOOS compliance checker's CF-1.8 suite without an error; it holds one grid-mapping variable,
referenced by every data variable. ``xr-itslive invert --out x.nc`` writes such a file.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import raise_if_dask_computes

import xr_itslive
from xr_itslive.cli import main
from xr_itslive.io.cf import GRID_MAPPING, read_list_attribute, to_cf

WRITERS = {"scipy": "scipy", "netcdf4": "netCDF4", "h5netcdf": "h5netcdf"}
ENGINES = [
    pytest.param(
        engine,
        marks=pytest.mark.skipif(
            importlib.util.find_spec(module) is None, reason=f"{module} not installed"
        ),
    )
    for engine, module in WRITERS.items()
]
requires_checker = pytest.mark.skipif(
    importlib.util.find_spec("compliance_checker") is None,
    reason="compliance-checker not installed (the 'test' extra)",
)
DEMO_VARIABLES = ["vx", "vy", "vx_error", "vy_error"]
ONE_MICROSECOND = 1_000  # ns: the float64 days of a date hold it to a fraction of this


def cf_findings(path: Path) -> dict[str, list[str]]:
    """The failed checks of the compliance checker's CF-1.8 suite, by priority."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite.load_all_available_checkers()
    report_path = path.with_name(path.name + ".cf.json")
    ComplianceChecker.run_checker(
        str(path),
        ["cf:1.8"],
        0,
        "normal",
        output_filename=str(report_path),
        output_format="json",
    )
    report = json.loads(report_path.read_text())["cf:1.8"]
    findings = {}
    for level in ("high", "medium", "low"):
        findings[level] = [
            f"{item['name']}: {message}"
            for item in report[f"{level}_priorities"]
            if item["value"][0] < item["value"][1]
            for message in (item["msgs"] or ["(no message)"])
        ]
    return findings


def assert_same_values(back: xr.Dataset, expected: xr.Dataset) -> None:
    """Every variable of ``expected`` is in ``back`` with its dims and values (dates to 1 µs)."""
    assert set(map(str, back.variables)) == set(map(str, expected.variables))
    for name, var in expected.variables.items():
        got = back[name].variable
        assert got.dims == var.dims, name
        if var.dtype.kind == "M":
            a = got.values.astype("datetime64[ns]").astype(np.int64)
            b = var.values.astype("datetime64[ns]").astype(np.int64)
            assert np.abs(a - b).max(initial=0) <= ONE_MICROSECOND, name
        elif var.dtype.kind == "b":
            np.testing.assert_array_equal(got.values.astype(bool), var.values, err_msg=name)
        elif var.dtype.kind in "iu":
            np.testing.assert_array_equal(got.values, var.values, err_msg=name)
        else:
            np.testing.assert_allclose(got.values, var.values, rtol=1e-6, err_msg=name)
    for name in ("time", "time_bounds"):
        if name in expected.variables:  # the grid's cells exactly
            np.testing.assert_array_equal(back[name].values, expected[name].values)


def assert_one_grid_mapping(ds: xr.Dataset, located: bool = True) -> None:
    """One grid-mapping variable (``mapping``), referenced by every data variable."""
    mappings = [str(n) for n, v in ds.variables.items() if "grid_mapping_name" in v.attrs]
    if not located:
        assert mappings == []
        return
    assert mappings == [GRID_MAPPING]
    assert "spatial_ref" not in ds.variables
    attrs = ds[GRID_MAPPING].attrs
    assert attrs["crs_wkt"] and attrs["spatial_ref"] and int(attrs["spatial_epsg"]) > 0
    bounds = {v.attrs["bounds"] for v in ds.variables.values() if "bounds" in v.attrs}
    for name, var in ds.data_vars.items():
        if name not in bounds and name != GRID_MAPPING:
            assert var.attrs.get("grid_mapping") == GRID_MAPPING, name


@pytest.fixture(scope="module")
def demo_cube() -> xr.Dataset:
    return xr_itslive.open_cube(xr_itslive.demo_cube_path(), variables=DEMO_VARIABLES)


def _point_series() -> xr.Dataset:
    """A point series without a place (no x, y, CRS): as a CSV export gives it."""
    rng = np.random.default_rng(8)
    start = np.datetime64("2019-01-01", "ns")
    t1 = start + (rng.uniform(0, 500, 200) * 86400e9).astype("timedelta64[ns]")
    t2 = t1 + (rng.uniform(10, 60, 200) * 86400e9).astype("timedelta64[ns]")
    return xr.Dataset(
        {"v": ("mid_date", 30 + rng.normal(0, 2, 200), {"units": "m/yr"})},
        coords={
            "mid_date": t1 + (t2 - t1) / 2,
            "acquisition_date_img1": ("mid_date", t1),
            "acquisition_date_img2": ("mid_date", t2),
        },
    )


def _make(kind: str, demo_cube: xr.Dataset) -> xr.Dataset:
    """A result of each kind, lazy where the workflow makes it lazy."""
    if kind == "invert":
        return xr_itslive.invert(
            demo_cube, step=30, lam=10, weights="error", robust=True, uncertainty=True,
            return_outliers=True,
        )  # fmt: skip
    if kind == "invert_gcv":  # lam chosen per pixel; a cube recording its CRS in attrs only
        cube = xr_itslive.synthetic_cube(n_pairs=300, ny=2, nx=3, seed=3)
        return xr_itslive.invert(cube, step=60, lam="auto")
    if kind == "mosaic":  # a cube in two halves, the right one first (as two cubes would be)
        # (not the 3x3 demo cube: a half one pixel wide is resampled, and odc-geo can't place
        # a one-pixel grid)
        cube = xr_itslive.synthetic_cube(n_pairs=300, ny=4, nx=6, seed=5, chunks={"y": 2, "x": 3})
        right, left = cube.isel(x=slice(3, None)), cube.isel(x=slice(0, 3))
        return xr_itslive.invert_mosaic(
            [right, left], step=30, lam=10, weights="error", uncertainty=True
        )
    if kind == "gp_pixel":  # one pixel of the demo cube: scalar x, y and the cube's CRS
        pixel = demo_cube.isel(x=1, y=1)
        recent = pixel.isel(
            mid_date=np.flatnonzero(
                pixel["acquisition_date_img1"].values >= np.datetime64("2022-01-01")
            )
        ).compute()
        return xr_itslive.gp_regress(recent, "vx", freq="30D", likelihood="gaussian")
    if kind == "gp_series":
        return xr_itslive.gp_regress(_point_series(), "v", freq="10D", likelihood="gaussian")
    if kind == "gp_speed":  # the speed from the components: v_significant, v_debiased
        pixel = demo_cube.isel(x=1, y=1)
        recent = pixel.isel(
            mid_date=np.flatnonzero(
                pixel["acquisition_date_img1"].values >= np.datetime64("2023-01-01")
            )
        ).compute()
        return xr_itslive.gp_regress(recent, "v", freq="30D", likelihood="gaussian",
                                     image_errors=False)  # fmt: skip
    if kind == "composite":  # the demo cube: 39 years, its first one NaN, int flags
        return xr_itslive.composite(demo_cube)
    if kind == "seasonal":  # the composite's variables from an inversion
        cube = xr_itslive.synthetic_cube(n_pairs=600, ny=2, nx=2, years=6, start="2014-01-01",
                                         chunks={"y": 2, "x": 2})  # fmt: skip
        inverted = xr_itslive.invert(cube, step=30, uncertainty=True)
        return xr_itslive.seasonal(inverted, climatology=(2015, 2018))
    if kind == "composite_mosaic":  # two halves of a cube, with the per-pixel source flag
        cube = xr_itslive.synthetic_cube(n_pairs=600, ny=4, nx=6, years=6, start="2014-01-01",
                                         seed=5, chunks={"y": 2, "x": 3})  # fmt: skip
        right, left = cube.isel(x=slice(3, None)), cube.isel(x=slice(0, 3))
        return xr_itslive.composite_mosaic([right, left], climatology=(2015, 2018))
    raise AssertionError(kind)


KINDS = ["invert", "invert_gcv", "mosaic", "gp_pixel", "gp_series", "gp_speed", "composite",
         "seasonal", "composite_mosaic"]  # fmt: skip
COMPOSITES = ("composite", "seasonal", "composite_mosaic")


@pytest.fixture(scope="module")
def results(demo_cube) -> dict[str, xr.Dataset]:
    return {}


@pytest.fixture(params=KINDS)
def result(request, results, demo_cube) -> tuple[str, xr.Dataset]:
    kind = request.param
    if kind not in results:
        results[kind] = _make(kind, demo_cube)
    return kind, results[kind]


@requires_checker
@pytest.mark.parametrize("engine", ENGINES)
def test_netcdf_round_trip_and_cf_compliance(result, engine, tmp_path):
    kind, lazy = result
    path = tmp_path / f"{kind}_{engine}.nc"
    lazy.to_netcdf(path, engine=engine)  # lazily: the result as a workflow returns it
    expected = lazy.compute()
    with xr.open_dataset(path, engine=engine) as opened:
        back = opened.load()
    assert_same_values(back, expected)
    assert_one_grid_mapping(back, located=kind != "gp_series")
    assert back.attrs["Conventions"] == "CF-1.8"
    assert back.attrs["history"].startswith("xr_itslive.")
    if kind.startswith("invert") or kind == "mosaic" or kind in COMPOSITES:
        assert back["time"].attrs["bounds"] == "time_bounds"
        assert back["time_bounds"].dims == ("time", "bnds")
        listed = "composite_variables" if kind in COMPOSITES else "inverted_variables"
        assert read_list_attribute(back.attrs, listed) == ["vx", "vy"]
    if kind in COMPOSITES:  # the flag and the stds of the annual means travel too
        assert list(back["v_significant"].attrs["flag_values"]) == [0, 1]
        assert {"vx_std", "vy_std", "v_std", "v_debiased"} <= set(back.data_vars)
    if kind == "gp_speed":
        assert {"v_significant", "v_debiased"} <= set(back.data_vars)
    findings = cf_findings(path)
    assert findings["high"] == [], findings  # errors
    assert findings["medium"] == [], findings  # warnings: none today, so none tomorrow


@pytest.mark.parametrize("kind", ["invert", "mosaic", "gp_pixel", "composite"])
def test_zarr_round_trip(kind, results, demo_cube, tmp_path):
    if kind not in results:
        results[kind] = _make(kind, demo_cube)
    lazy = results[kind]
    lazy.to_zarr(tmp_path / "result.zarr")
    back = xr.open_zarr(tmp_path / "result.zarr").load()
    assert_same_values(back, lazy.compute())
    assert_one_grid_mapping(back)
    if kind != "gp_pixel":
        assert back.rio.crs.to_epsg() == 32646


def test_to_cf_computes_nothing_and_is_idempotent(demo_cube):
    with raise_if_dask_computes():
        result = xr_itslive.invert(demo_cube, step=60, uncertainty=True)
        again = to_cf(result, history="xr_itslive.invert")
    assert result["vx"].chunks is not None
    xr.testing.assert_identical(again, result)
    assert again.attrs["history"].count("xr_itslive.invert") == 1


def test_attributes_netcdf_cannot_store_are_encoded(tmp_path):
    ds = xr.Dataset(
        {
            "speed": (("y", "x"), np.ones((2, 2), "float32"), {"standard_name": "ice_speed",
                                                               "data": 1, "units": "m/y"}),
            "count": (("y", "x"), np.full((2, 2), 3, "int64"), {"flag_values": [1, 3]}),
            "big": (("y", "x"), np.full((2, 2), 2**40, "int64")),
            "flagged": (("y", "x"), np.zeros((2, 2), bool)),
        },
        coords={"x": [0.0, 120.0], "y": [120.0, 0.0]},
        attrs={
            "variables": ["speed"], "none": None, "yes": True, "nested": {"a": [1, 2]},
            "empty": [], "numbers": [1.0, 10.0], "names": ["a", "b"], "dims": "shadowed",
        },
    )  # fmt: skip
    assert GRID_MAPPING not in to_cf(ds).variables  # no CRS recorded: no grid mapping made up
    cf = to_cf(ds, crs="EPSG:32646")
    assert ds.attrs["variables"] == ["speed"] and ds["speed"].attrs["units"] == "m/y"  # a copy
    assert ds["count"].encoding == {}
    attrs = cf.attrs
    # names of Dataset members and of scipy's writer objects are renamed, not lost
    assert "variables" not in attrs and json.loads(attrs["variables_attribute"]) == ["speed"]
    assert "dims" not in attrs and attrs["dims_attribute"] == "shadowed"
    assert "data" not in cf["speed"].attrs and cf["speed"].attrs["data_attribute"] == 1
    assert (
        attrs["none"] == "" and attrs["yes"] == 1 and json.loads(attrs["nested"]) == {"a": [1, 2]}
    )
    assert attrs["empty"] == "[]" and list(attrs["numbers"]) == [1.0, 10.0]
    assert read_list_attribute(attrs, "names") == ["a", "b"]
    # a standard name the CF table lacks becomes a long name; a unit UDUNITS can't parse, fixed
    assert "standard_name" not in cf["speed"].attrs
    assert cf["speed"].attrs["long_name"] == "ice speed" and cf["speed"].attrs["units"] == "m/year"
    # CF types: flags of the variable's (written) type; int64 as int32, or float64 if too big
    assert cf["count"].encoding["dtype"] == np.int32
    assert cf["count"].attrs["flag_values"].dtype == np.int32
    assert cf["big"].encoding["dtype"] == np.float64
    assert list(cf["flagged"].attrs["flag_values"]) == [0, 1]
    path = tmp_path / "attrs.nc"
    cf.to_netcdf(path, engine="scipy")
    back = xr.open_dataset(path, engine="scipy").load()
    assert int(back["big"].max()) == 2**40 and back["flagged"].dtype == bool
    assert_one_grid_mapping(back)


def test_predict_reads_new_and_old_results(demo_cube, tmp_path):
    cube = demo_cube.isel(x=slice(0, 2), y=slice(0, 1))
    result = xr_itslive.invert(cube, step=60).compute()
    expected = xr_itslive.predict(cube, result)
    assert set(expected.data_vars) == {"vx", "vy"}
    result.to_netcdf(tmp_path / "new.nc", engine="scipy")
    written = xr.open_dataset(tmp_path / "new.nc", engine="scipy").load()
    xr.testing.assert_allclose(xr_itslive.predict(cube, written), expected)
    # a result written before the rename: a list under 'variables' (zarr stores held that)
    old = result.copy()
    old.attrs = {k: v for k, v in result.attrs.items() if k != "inverted_variables"}
    old.attrs["variables"] = ["vx", "vy"]
    xr.testing.assert_allclose(xr_itslive.predict(cube, old), expected)


def test_resumable_store_resumes_with_cf_attributes(tmp_path):
    cube = xr_itslive.synthetic_cube(n_pairs=200, ny=4, nx=4, chunks={"y": 2, "x": 2})
    store = tmp_path / "out.zarr"
    first = xr_itslive.invert_to_zarr(cube, store, step=60, progress=False)
    assert first.n_written == 4
    done = sorted((store / "_xr_itslive" / "done").iterdir())
    for marker in done[:2]:
        marker.unlink()  # as if killed after two chunks
    again = xr_itslive.invert_to_zarr(cube, store, step=60, progress=False)
    assert (again.n_written, again.n_skipped) == (2, 2)
    back = xr.open_zarr(store)
    assert_one_grid_mapping(back)
    assert back.attrs["Conventions"] == "CF-1.8"


@requires_checker
def test_cli_writes_netcdf(tmp_path, capsys):
    source = str(xr_itslive.demo_cube_path())
    out = tmp_path / "result.nc"
    args = ["invert", source, "--out", str(out), "--step", "60", "--uncertainty", "--no-progress"]
    assert main(args) == 0
    assert "not resumable" in capsys.readouterr().out
    assert out.exists() and not Path(f"{out}.partial").exists()
    cube = xr_itslive.open_cube(source, variables=["vx", "vy"])
    expected = xr_itslive.invert(cube, step=60, uncertainty=True).compute()
    with xr.open_dataset(out) as opened:
        back = opened.load()
    assert_same_values(back, expected)
    assert_one_grid_mapping(back)
    findings = cf_findings(out)
    assert findings["high"] == [], findings
    # written whole, not resumed: an existing file needs --overwrite
    assert main(args) == 1
    assert "exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert main(["invert", source, "--out", "s3://bucket/result.nc"]) == 1
    assert "local file" in capsys.readouterr().err
