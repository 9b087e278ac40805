"""Spatial subsets and pair filters on the real cubes."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import xarray as xr
from conftest import (
    FIXTURE_3X3,
    GLACIER_CUBE,
    ITSLIVE_DATA,
    raise_if_dask_computes,
    requires_shared,
)
from pyproj import Transformer

import xr_itslive
from xr_itslive.errors import (
    EmptySelectionError,
    InvalidParameterError,
    MissingVariableError,
)
from xr_itslive.geo.clip import clip
from xr_itslive.geo.pairs import (
    baseline_days,
    filter_pairs,
    select_baseline,
    select_dates,
    select_platforms,
    select_valid_fraction,
    valid_fraction,
)
from xr_itslive.geo.subset import bbox, point_series, window

pytestmark = requires_shared
OUTLINE = ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson"
LON, LAT = 95.97, 29.915
TO_CUBE = Transformer.from_crs(4326, 32646, always_xy=True)


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return xr_itslive.open_cube(GLACIER_CUBE)


@pytest.fixture(scope="module")
def small() -> xr.Dataset:
    return xr_itslive.open_cube(FIXTURE_3X3)


# --- points, windows, boxes ---


def test_point_series_is_the_nearest_pixel_and_reports_the_offset(cube):
    x, y = TO_CUBE.transform(LON, LAT)
    ix, iy = int(np.abs(cube.x.values - x).argmin()), int(np.abs(cube.y.values - y).argmin())
    with raise_if_dask_computes():
        series = point_series(cube, lon=LON, lat=LAT)
    assert set(series.v.dims) == {"mid_date"}
    assert float(series.x) == cube.x.values[ix] and float(series.y) == cube.y.values[iy]
    expected = np.hypot(cube.x.values[ix] - x, cube.y.values[iy] - y)
    assert series.attrs["offset_m"] == pytest.approx(expected)
    assert series.attrs["offset_m"] <= np.hypot(60, 60)
    assert (series.attrs["point_lon"], series.attrs["point_lat"]) == (LON, LAT)
    some = slice(0, 3000)
    np.testing.assert_array_equal(
        series.v.isel(mid_date=some).values, cube.v.isel(mid_date=some, x=ix, y=iy).values
    )
    # The same point in the cube's CRS, and the accessor
    projected = cube.itslive.point(x=x, y=y)
    assert float(projected.x) == float(series.x) and float(projected.y) == float(series.y)
    at_centre = point_series(cube, x=float(cube.x[5]), y=float(cube.y[7]))
    assert at_centre.attrs["offset_m"] == 0.0


def test_point_errors(cube):
    far_x = float(cube.x.max()) + 1000.0
    with pytest.raises(EmptySelectionError, match=r"is 94\d m outside the cube .*find_cubes"):
        point_series(cube, x=far_x, y=float(cube.y[0]))
    with pytest.raises(InvalidParameterError, match=r"not a mix; got lon=95.97, lat=None, x=1.0"):
        point_series(cube, lon=LON, x=1.0)
    with pytest.raises(EmptySelectionError, match=r"more than max_offset=1.0 m"):
        point_series(cube, lon=LON, lat=LAT, max_offset=1.0)


def test_window(cube):
    centre = point_series(cube, lon=LON, lat=LAT)
    with raise_if_dask_computes():
        win = window(cube, lon=LON, lat=LAT, size=5)
    assert (win.sizes["y"], win.sizes["x"]) == (5, 5)
    assert float(win.x[2]) == float(centre.x) and float(win.y[2]) == float(centre.y)
    assert cube.itslive.window(lon=LON, lat=LAT).sizes["x"] == 3
    corner = {"x": float(cube.x[0]), "y": float(cube.y[0])}
    with pytest.raises(EmptySelectionError, match=r"3×3 window .* reaches past the cube's edge"):
        window(cube, **corner)
    clipped = window(cube, **corner, clip_edges=True)
    assert (clipped.sizes["y"], clipped.sizes["x"]) == (2, 2)
    with pytest.raises(InvalidParameterError, match=r"positive odd number.*size=4"):
        window(cube, lon=LON, lat=LAT, size=4)


def test_bbox_in_lonlat_and_cube_crs(cube):
    lonlat = (95.96, 29.91, 95.98, 29.92)
    with raise_if_dask_computes():
        sub = bbox(cube, lonlat, crs="EPSG:4326")
    xmin, ymin, xmax, ymax = TO_CUBE.transform_bounds(*lonlat, densify_pts=21)
    inside_x = cube.x.values[(cube.x.values >= xmin) & (cube.x.values <= xmax)]
    inside_y = cube.y.values[(cube.y.values >= ymin) & (cube.y.values <= ymax)]
    np.testing.assert_array_equal(sub.x.values, inside_x)
    np.testing.assert_array_equal(sub.y.values, inside_y)
    same = cube.itslive.bbox((xmin, ymin, xmax, ymax))
    np.testing.assert_array_equal(same.x.values, sub.x.values)
    with pytest.raises(EmptySelectionError, match=r"holds no pixel centre of the cube"):
        bbox(cube, (0, 0, 10, 10))
    with pytest.raises(InvalidParameterError, match=r"xmin <= xmax"):
        bbox(cube, (10, 0, 0, 10))


def test_clip_to_outline_masks_only_pixel_variables(cube):
    with raise_if_dask_computes():
        clipped = clip(cube, OUTLINE)
    mask = clipped["glacier_mask"]
    geometry = shapely.from_geojson(OUTLINE.read_text()).geoms[0]
    gx, gy = np.meshgrid(clipped.x.values, clipped.y.values)
    np.testing.assert_array_equal(mask.values, shapely.contains_xy(geometry, gx, gy))
    # cropped to the rows and columns holding glacier pixels
    assert mask.values.any(axis=0).all() and mask.values.any(axis=1).all()
    # per-pair variables keep their dims (not broadcast onto the grid)
    assert clipped["date_dt"].dims == ("mid_date",)
    some = {"mid_date": slice(0, 2000)}
    v = clipped.v.isel(some).values
    original = cube.v.sel(x=clipped.x, y=clipped.y).isel(some).values
    assert np.isnan(v[:, ~mask.values]).all()
    np.testing.assert_array_equal(v[:, mask.values], original[:, mask.values])


# --- pair filters ---


def _platforms(ds, image):
    mission = np.array([str(v) for v in ds[f"mission_img{image}"].values])
    satellite = np.array([str(v) for v in ds[f"satellite_img{image}"].values])
    return np.char.add(mission, satellite)


def test_select_platforms_matches_a_direct_computation(cube):
    p1, p2 = _platforms(cube, 1), _platforms(cube, 2)
    landsat89 = select_platforms(cube, satellites=["L8", "Landsat 9"])
    expected = np.isin(p1, ["L8", "L9"]) & np.isin(p2, ["L8", "L9"])
    np.testing.assert_array_equal(landsat89.pair_id.values, cube.pair_id.values[expected])
    s2 = select_platforms(cube, satellites="S2")  # S2A and S2B
    expected = np.char.startswith(p1, "S2") & np.char.startswith(p2, "S2")
    assert s2.sizes["mid_date"] == expected.sum() > 0
    assert (
        select_platforms(cube, satellites="Sentinel-2A").sizes["mid_date"]
        == ((p1 == "S2A") & (p2 == "S2A")).sum()
    )
    raw = select_platforms(cube, satellites="2A")  # the cube's raw satellite code
    assert raw.sizes["mid_date"] == ((p1 == "S2A") & (p2 == "S2A")).sum()
    either = select_platforms(cube, satellites="L8", images="either")
    assert either.sizes["mid_date"] == ((p1 == "L8") | (p2 == "L8")).sum()
    msi = select_platforms(cube, sensors="MSI")
    s1 = np.array([str(v) for v in cube.sensor_img1.values])
    s2_ = np.array([str(v) for v in cube.sensor_img2.values])
    assert msi.sizes["mid_date"] == ((s1 == "MSI") & (s2_ == "MSI")).sum()
    sentinel = select_platforms(cube, missions="sentinel")
    assert (
        sentinel.sizes["mid_date"]
        == (np.char.startswith(p1, "S") & np.char.startswith(p2, "S")).sum()
    )


@pytest.mark.parametrize("dtype", ["object", "StringDType", "<U3"])
def test_string_dtypes_give_the_same_selection(small, dtype):
    names = ["mission_img1", "mission_img2", "satellite_img1", "satellite_img2"]
    if dtype == "StringDType":
        target = np.dtypes.StringDType()
    else:
        target = np.dtype(dtype)
    converted = small.assign(
        {n: ("mid_date", np.asarray(small[n].values).astype(target)) for n in names}
    )
    assert converted["satellite_img1"].dtype == target
    reference = select_platforms(small, satellites=["L8", "L9"])
    got = select_platforms(converted, satellites=["L8", "L9"])
    np.testing.assert_array_equal(got.pair_id.values, reference.pair_id.values)


def test_platform_errors_name_the_fix(cube):
    vx_only = xr_itslive.open_cube(GLACIER_CUBE, variables=["vx", "vy"])
    with pytest.raises(
        MissingVariableError, match=r"add 'satellite_img1', 'satellite_img2' to variables="
    ):
        select_platforms(vx_only, satellites="L8")
    with pytest.raises(MissingVariableError, match=r"add 'sensor_img1', 'sensor_img2'"):
        select_platforms(vx_only, sensors="MSI")
    with pytest.raises(
        EmptySelectionError, match=r"no pair matches .*satellites='L3'.*'L8', 'L9', 'S1A', 'S2A'"
    ):
        select_platforms(cube, satellites="L3")
    with pytest.raises(InvalidParameterError, match=r"images must be .*images='all'"):
        select_platforms(cube, satellites="L8", images="all")


def test_select_dates(cube):
    sub = select_dates(cube, "2018-01-01", "2018-12-31")
    assert sub.mid_date.values.min() >= np.datetime64("2018-01-01")
    assert sub.mid_date.values.max() <= np.datetime64("2018-12-31")
    inside = (cube.mid_date.values >= np.datetime64("2018-01-01")) & (
        cube.mid_date.values <= np.datetime64("2018-12-31")
    )
    assert sub.sizes["mid_date"] == inside.sum()
    acq = select_dates(cube, "2018-01-01", "2018-12-31", by="acquisition")
    assert (acq.acquisition_date_img1.values >= np.datetime64("2018-01-01")).all()
    assert (acq.acquisition_date_img2.values <= np.datetime64("2018-12-31")).all()
    assert acq.sizes["mid_date"] < sub.sizes["mid_date"]
    with pytest.raises(
        EmptySelectionError, match=r"no pair between start='1950-01-01'.*run from 19"
    ):
        select_dates(cube, "1950-01-01", "1951-01-01")
    with pytest.raises(InvalidParameterError, match=r"start='2019' is after end='2018'"):
        select_dates(cube, "2019", "2018")


def test_baseline(cube):
    days = baseline_days(cube)
    # ITS_LIVE's own date_dt (float32 days) agrees with the pair dates
    np.testing.assert_allclose(days, cube.date_dt.values, atol=0.01)
    sub = select_baseline(cube, 10, 30)
    kept = baseline_days(sub)
    assert kept.min() >= 10 and kept.max() <= 30
    assert sub.sizes["mid_date"] == ((days >= 10) & (days <= 30)).sum()
    with pytest.raises(EmptySelectionError, match=r"baselines run from .* days"):
        select_baseline(cube, 5000, 6000)


def test_valid_fraction(small):
    v = small.v.values
    expected = np.isfinite(v).sum(axis=(1, 2)) / 9
    np.testing.assert_allclose(valid_fraction(small).values, expected)
    kept = select_valid_fraction(small, 0.5)
    np.testing.assert_array_equal(kept.pair_id.values, small.pair_id.values[expected >= 0.5])
    # within: only the counted pixels matter
    within = xr.DataArray(
        np.eye(3, dtype=bool), dims=("y", "x"), coords={"y": small.y, "x": small.x}
    )
    diag = np.isfinite(v[:, [0, 1, 2], [0, 1, 2]]).sum(axis=1) / 3
    np.testing.assert_allclose(valid_fraction(small, mask=within).values, diag)
    # the old spelling within= still works for a release, with a DeprecationWarning
    with pytest.warns(DeprecationWarning, match=r"valid_fraction\(within=.*pass mask="):
        np.testing.assert_allclose(valid_fraction(small, within=within).values, diag)
    # lazy form: nothing computed, failing pairs set to NaN
    with raise_if_dask_computes():
        lazy = select_valid_fraction(small, 0.5, drop=False)
    assert lazy.sizes["mid_date"] == small.sizes["mid_date"]
    assert np.isnan(lazy.v.values[expected < 0.5]).all()
    with pytest.raises(InvalidParameterError, match=r"between 0 and 1, got 50"):
        select_valid_fraction(small, 50)
    with pytest.raises(MissingVariableError, match=r"variable 'speed' not found"):
        select_valid_fraction(small, 0.5, variable="speed")


def test_filter_pairs_combines_the_filters(small):
    combined = small.itslive.filter(
        satellites=["L8", "L9"], start="2016-01-01", max_days=100, min_valid_fraction=0.5
    )
    step = select_platforms(small, satellites=["L8", "L9"])
    step = select_dates(step, "2016-01-01")
    step = select_baseline(step, max_days=100)
    step = select_valid_fraction(step, 0.5)
    np.testing.assert_array_equal(combined.pair_id.values, step.pair_id.values)
    assert filter_pairs(small) is small


@requires_shared
def test_platform_names_work_without_mission_variables():
    """'L8' / 'S2' select the same pairs from satellite_img alone as with mission_img."""
    names = ["vx", "satellite_img1", "satellite_img2"]
    bare = xr_itslive.open_cube(GLACIER_CUBE, variables=names)
    full = xr_itslive.open_cube(GLACIER_CUBE, variables=[*names, "mission_img1", "mission_img2"])
    for wanted in (["L8", "L9"], ["S2"], "Landsat 7"):
        a = bare.itslive.filter(satellites=wanted)
        b = full.itslive.filter(satellites=wanted)
        assert a.sizes["mid_date"] == b.sizes["mid_date"] > 0
        np.testing.assert_array_equal(a["pair_id"].values, b["pair_id"].values)
