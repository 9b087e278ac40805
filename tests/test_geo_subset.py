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
    with pytest.raises(  # MSI is Sentinel-2: the satellite says it
        MissingVariableError, match=r"sensors='MSI' needs .*add 'satellite_img1', 'satellite_img2'"
    ):
        select_platforms(vx_only, sensors="MSI")
    with pytest.raises(  # Landsat 8/9's 'C' or 'O' is only in the sensor variables
        MissingVariableError,
        match=r"add 'satellite_img1', 'satellite_img2', 'sensor_img1', 'sensor_img2'",
    ):
        select_platforms(vx_only, sensors="OLI-TIRS")
    with pytest.raises(
        EmptySelectionError, match=r"no pair matches .*satellites='L4'.*'L8', 'L9', 'S1A', 'S2A'"
    ):
        select_platforms(cube, satellites="L4")  # Landsat 4 pairs all have a Landsat 5 image
    with pytest.raises(InvalidParameterError, match=r"satellites='L3' is not a name"):
        select_platforms(cube, satellites="L3")  # no Landsat 3 in ITS_LIVE
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
        EmptySelectionError, match=r"no pair between pairs_start='1950-01-01'.*run from 19"
    ):
        select_dates(cube, "1950-01-01", "1951-01-01")
    with pytest.raises(
        InvalidParameterError, match=r"pairs_start='2019' is after pairs_end='2018'"
    ):
        select_dates(cube, "2019", "2018")


def test_date_filters_take_pairs_start_and_pairs_end(cube):
    # start=/end= name an inversion's window (whose grid drops pairs reaching outside it);
    # the pair filters' bounds are pairs_start=/pairs_end=, the old names deprecated
    new = filter_pairs(cube, pairs_start="2018-01-01", pairs_end="2018-12-31")
    with pytest.warns(DeprecationWarning) as record:
        old = filter_pairs(cube, start="2018-01-01", end="2018-12-31")
    assert sorted(str(w.message).split(" is ")[0] for w in record) == [
        "filter_pairs(end=...)",
        "filter_pairs(start=...)",
    ]
    xr.testing.assert_identical(old, new)
    with pytest.warns(DeprecationWarning, match=r"select_dates\(end=...\).*pairs_end="):
        xr.testing.assert_identical(
            select_dates(cube, end="2018-12-31"), select_dates(cube, None, "2018-12-31")
        )
    by_images = filter_pairs(
        cube, pairs_start="2018-01-01", pairs_end="2018-12-31", by="acquisition"
    )
    xr.testing.assert_identical(
        by_images, select_dates(cube, "2018-01-01", "2018-12-31", by="acquisition")
    )
    assert by_images.sizes["mid_date"] < new.sizes["mid_date"]


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
        satellites=["L8", "L9"], pairs_start="2016-01-01", max_days=100, min_valid_fraction=0.5
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


# --- the vocabulary of missions, satellites and sensors (issue item 5) ---

SENTINEL1 = {"1A", "1B", "1C"}
SENTINEL2 = {"2A", "2B", "2C"}
LANDSAT = {"4", "5", "7", "8", "9"}
BUNDLED = xr_itslive.demo_cube_path()


def _raw(ds, name):
    """A per-pair string variable as plain str, whatever the writer stored (bytes, <U, object)."""
    return np.array(
        [v.decode() if isinstance(v, bytes) else str(v) for v in ds[name].values.tolist()]
    )


def _both_in(ds, satellites, sensors=None, images="both"):
    """Which pairs' images come from ``satellites`` (and, if given, carry these sensor codes)."""
    hits = []
    for i in (1, 2) if images != "first" else (1,):
        hit = np.isin(_raw(ds, f"satellite_img{i}"), list(satellites))
        if sensors is not None:
            hit &= np.isin(_raw(ds, f"sensor_img{i}"), list(sensors))
        hits.append(hit)
    if images == "first":
        return hits[0]
    return hits[0] | hits[1] if images == "either" else hits[0] & hits[1]


def test_the_three_reported_defects(cube):
    """missions='S1' gave Sentinel-1 and -2 (38,387 pairs), sensors='SAR' gave mostly Landsat
    8/9 (2,598), sensors='OLI' gave nothing; on the real cube they are 362, 362 and 2,286."""
    s1 = select_platforms(cube, missions="S1")
    assert set(_raw(s1, "satellite_img1")) | set(_raw(s1, "satellite_img2")) == {"1A"}
    assert s1.sizes["mid_date"] == 362
    sar = select_platforms(cube, sensors="SAR")
    assert set(_raw(sar, "satellite_img1")) | set(_raw(sar, "satellite_img2")) == {"1A"}
    assert sar.sizes["mid_date"] == 362
    oli = select_platforms(cube, sensors="OLI")
    assert set(_raw(oli, "satellite_img1")) | set(_raw(oli, "satellite_img2")) == {"8", "9"}
    assert oli.sizes["mid_date"] == 2286


SPELLINGS = [
    # (parameter, spelling, satellites it means)
    ("missions", "S1", SENTINEL1),
    ("missions", "s1", SENTINEL1),
    ("missions", "Sentinel-1", SENTINEL1),
    ("missions", "sentinel1", SENTINEL1),
    ("missions", "SENTINEL_1", SENTINEL1),
    ("missions", "S2", SENTINEL2),
    ("missions", "Sentinel 2", SENTINEL2),
    ("missions", "L", LANDSAT),
    ("missions", "landsat", LANDSAT),
    ("missions", "Landsat", LANDSAT),
    ("missions", "S", SENTINEL1 | SENTINEL2),  # ITS_LIVE's own mission_img value
    ("missions", "sentinel", SENTINEL1 | SENTINEL2),
    ("missions", ["S1", "L"], SENTINEL1 | LANDSAT),
    ("missions", b"S1", SENTINEL1),
    ("satellites", "L8", {"8"}),
    ("satellites", "Landsat 8", {"8"}),
    ("satellites", "landsat8", {"8"}),
    ("satellites", "8", {"8"}),  # the cube's raw value
    ("satellites", "Landsat-7", {"7"}),
    ("satellites", "L5", {"5"}),
    ("satellites", ["L8", "L9"], {"8", "9"}),
    ("satellites", "1A", {"1A"}),
    ("satellites", "S1A", {"1A"}),
    ("satellites", "Sentinel-1A", {"1A"}),
    ("satellites", "2A", {"2A"}),
    ("satellites", "s2b", {"2B"}),
    ("satellites", "S2", SENTINEL2),
    ("satellites", "S1", SENTINEL1),
    ("satellites", "L", LANDSAT),
    ("satellites", "Landsat", LANDSAT),
    ("sensors", "SAR", SENTINEL1),
    ("sensors", "C-SAR", SENTINEL1),
    ("sensors", "radar", SENTINEL1),
    ("sensors", "MSI", SENTINEL2),
    ("sensors", "msi", SENTINEL2),
    ("sensors", "OLI", {"8", "9"}),
    ("sensors", "oli", {"8", "9"}),
    ("sensors", "ETM+", {"7"}),
    ("sensors", "E", {"7"}),  # ITS_LIVE's sensor code
    ("sensors", "TM", {"4", "5"}),
    ("sensors", "T", {"4", "5"}),
    ("sensors", "optical", LANDSAT | SENTINEL2),
    ("sensors", ["SAR", "MSI"], SENTINEL1 | SENTINEL2),
]


@pytest.mark.parametrize(("parameter", "spelling", "satellites"), SPELLINGS)
def test_each_spelling_selects_its_satellites(cube, parameter, spelling, satellites):
    got = select_platforms(cube, **{parameter: spelling})
    expected = _both_in(cube, satellites)
    np.testing.assert_array_equal(got.pair_id.values, cube.pair_id.values[expected])
    present = set(_raw(cube, "satellite_img1")) | set(_raw(cube, "satellite_img2"))
    kept = set(_raw(got, "satellite_img1")) | set(_raw(got, "satellite_img2"))
    assert kept <= satellites & present


def test_sensor_codes_that_need_the_sensor_variable(cube):
    # Landsat 8/9 images are stored as 'C' (OLI with TIRS) or 'O' (OLI alone)
    tirs = select_platforms(cube, sensors="OLI-TIRS")
    expected = _both_in(cube, {"8", "9"}, sensors={"C"})
    np.testing.assert_array_equal(tirs.pair_id.values, cube.pair_id.values[expected])
    assert tirs.sizes["mid_date"] == 2236
    only = select_platforms(cube, sensors="O", images="either")
    expected = _both_in(cube, {"8", "9"}, sensors={"O"}, images="either")
    assert only.sizes["mid_date"] == expected.sum() == 50
    with pytest.raises(EmptySelectionError, match=r"no pair matches .*sensors='O'"):
        select_platforms(cube, sensors="O")  # no pair has two OLI-only images


def test_selections_combine_per_image(cube):
    both = select_platforms(cube, missions="L", sensors="OLI")
    np.testing.assert_array_equal(
        both.pair_id.values, select_platforms(cube, satellites=["L8", "L9"]).pair_id.values
    )
    either = select_platforms(cube, satellites="L8", sensors="OLI", images="either")
    assert either.sizes["mid_date"] == _both_in(cube, {"8"}, images="either").sum()
    first = select_platforms(cube, satellites="L9", images="first")
    assert first.sizes["mid_date"] == (_raw(cube, "satellite_img1") == "9").sum() == 621


BAD_SPELLINGS = [
    # (parameter, value, what the message must say)
    ("missions", "L8", r"missions='L8'.*'L8' is a satellite: pass satellites='L8'"),
    ("missions", "SAR", r"'SAR' is a sensor: pass sensors='SAR'"),
    ("missions", "Sentinel-3", r"missions='Sentinel-3'.*valid missions: 'S1' .*'S2' .*'L' "),
    ("missions", "S1A", r"'S1A' is a satellite: pass satellites='S1A'"),
    ("missions", "Landsat 8/9", r"missions='Landsat 8/9'.*valid missions"),
    ("satellites", "L3", r"satellites='L3'.*valid satellites: .*'L4'.*'L9'.*'S1A'.*'S2B'"),
    ("satellites", "2", r"satellites='2'.*valid satellites"),
    ("satellites", "Sentinel-12", r"satellites='Sentinel-12'.*valid satellites"),
    ("satellites", "OLI", r"'OLI' is a sensor: pass sensors='OLI'"),
    ("sensors", "C", r"sensors='C' is ambiguous.*Landsat 8/9 .*Sentinel-1.*'OLI-TIRS'.*'SAR'"),
    ("sensors", "OLIX", r"sensors='OLIX'.*valid sensors: .*'SAR'.*'MSI'.*'OLI'"),
    ("sensors", "L8", r"'L8' is a satellite: pass satellites='L8'"),
    ("sensors", "thermal", r"sensors='thermal'.*valid sensors"),
    ("missions", [], r"missions=\[\] selects nothing; pass None"),
    ("satellites", ["L8", "L 33"], r"satellites='L 33'.*valid satellites"),
]


@pytest.mark.parametrize(("parameter", "value", "message"), BAD_SPELLINGS)
def test_bad_spellings_are_refused_with_the_valid_values(cube, parameter, value, message):
    with pytest.raises(InvalidParameterError, match=message):
        select_platforms(cube, **{parameter: value})
    with pytest.raises(InvalidParameterError, match=message):
        filter_pairs(cube, **{parameter: value})


def test_the_vocabulary_is_unambiguous():
    from xr_itslive.geo.pairs import AMBIGUOUS, INSTRUMENTS, SATELLITES, VOCABULARY

    spellings = [s for names in VOCABULARY.values() for n in names.values() for s in n.spellings]
    assert len(spellings) == len(set(spellings))  # one meaning per spelling
    assert not set(spellings) & set(AMBIGUOUS)
    assert set(SATELLITES) == SENTINEL1 | SENTINEL2 | LANDSAT
    every = {(row[0], row[2]) for row in INSTRUMENTS}
    for names in VOCABULARY.values():
        for name in names.values():
            assert name.images and name.images <= every and name.meaning


def test_platform_codes_name_both_images(cube):
    from xr_itslive.geo.pairs import platform_codes

    first, second = platform_codes(cube)
    assert set(first) == {"l4", "l5", "l7", "l8", "l9", "s1a", "s2a", "s2b"}
    np.testing.assert_array_equal(second == "l9", _raw(cube, "satellite_img2") == "9")


def test_no_substring_matching(cube):
    # 'S' is ITS_LIVE's mission value for both Sentinels; 'S1' must not widen to it
    assert (
        select_platforms(cube, missions="S1").sizes["mid_date"]
        < (select_platforms(cube, missions="S").sizes["mid_date"])
    )
    # a raw code is one satellite, not a prefix of others
    assert select_platforms(cube, satellites="2A").sizes["mid_date"] == _both_in(cube, {"2A"}).sum()


def test_bundled_cube_stores_bytes_and_only_the_first_image():
    """The bundled subset holds satellite_img1 as bytes (b'2A') and no satellite_img2."""
    bundled = xr_itslive.open_cube(BUNDLED)
    assert isinstance(bundled.satellite_img1.values[0], bytes)
    for spelling, satellites in (("S2", SENTINEL2), ("L8", {"8"}), ("S1", SENTINEL1)):
        got = select_platforms(bundled, satellites=spelling, images="first")
        expected = _both_in(bundled, satellites, images="first")
        assert got.sizes["mid_date"] == expected.sum() > 0
        np.testing.assert_array_equal(got.pair_id.values, bundled.pair_id.values[expected])
    # OLI is Landsat 8/9 whatever their sensor code: no sensor variable needed
    oli = select_platforms(bundled, sensors="OLI", images="first")
    assert oli.sizes["mid_date"] == _both_in(bundled, {"8", "9"}, images="first").sum()
    with pytest.raises(MissingVariableError, match=r"satellite_img2.*images='first'"):
        select_platforms(bundled, missions="S1")
    with pytest.raises(MissingVariableError, match=r"sensors='OLI-TIRS'.*'sensor_img1'"):
        select_platforms(bundled, sensors="OLI-TIRS", images="first")
    sub = filter_pairs(bundled, satellites="L8", images="first", max_days=100)
    assert (
        sub.sizes["mid_date"]
        == (_both_in(bundled, {"8"}, images="first") & (baseline_days(bundled) <= 100)).sum()
    )


def test_unknown_codes_in_a_cube_are_reported(small):
    odd = small.assign(
        satellite_img1=("mid_date", np.where(_raw(small, "satellite_img1") == "4", "X9", "8"))
    )
    with pytest.warns(UserWarning, match=r"satellite codes \['X9'\].*no selection keeps them"):
        select_platforms(odd, missions="L")


# --- the filters on the command line ---


def test_cli_filters_are_those_of_filter_pairs(tmp_path, capsys):
    from xr_itslive.cli import main

    out = tmp_path / "l8.zarr"
    args = ["invert", BUNDLED, "--out", str(out), "--step", "60", "--no-progress"]
    flags = ["--satellites", "L8", "L9", "--images", "first", "--max-days", "200"]
    assert main([*args, *flags, "--pairs-start", "2014-01-01"]) == 0
    written = xr.open_zarr(out)
    cube = xr_itslive.open_cube(BUNDLED, variables=["vx", "vy", "satellite_img1"])
    kept = filter_pairs(
        cube, satellites=["L8", "L9"], images="first", max_days=200, pairs_start="2014-01-01"
    )
    expected = xr_itslive.invert(kept[["vx", "vy"]], step=60.0).compute()
    xr.testing.assert_allclose(written.vx.load(), expected.vx)
    assert written.attrs["n_pairs_used"] == kept.sizes["mid_date"]
    # the valid fraction is counted on the first inverted variable
    assert main([*args, "--overwrite", "--min-valid-fraction", "0.9"]) == 0
    dense = select_valid_fraction(cube, 0.9, variable="vx")
    assert xr.open_zarr(out).attrs["n_pairs_used"] == dense.sizes["mid_date"] == 6401
    capsys.readouterr()
    # a bad spelling: exit status 1 and the listing of valid values
    assert main([*args, "--overwrite", "--missions", "Sentinel-3", "--images", "first"]) == 1
    err = capsys.readouterr().err
    assert "missions='Sentinel-3'" in err and "valid missions: 'S1'" in err
    # the bundled cube has only satellite_img1: say so and name --images first
    assert main([*args, "--overwrite", "--missions", "S1"]) == 1
    err = capsys.readouterr().err
    assert "satellite_img2" in err and "--images first" in err


def test_cli_parses_every_filter_flag():
    from xr_itslive.cli import _pair_filters, build_parser

    args = build_parser().parse_args(
        [
            "invert", "cube.zarr", "--out", "o.zarr",
            "--missions", "S1,L", "--satellites", "L8", "Landsat 9", "--sensors", "OLI",
            "--images", "either", "--min-days", "5", "--max-days", "64.5",
            "--pairs-start", "2015-01-01", "--pairs-end", "2020-12-31",
            "--min-valid-fraction", "0.2",
        ]
    )  # fmt: skip
    assert _pair_filters(args) == {
        "missions": ["S1", "L"],
        "satellites": ["L8", "Landsat 9"],
        "sensors": ["OLI"],
        "images": "either",
        "min_days": 5.0,
        "max_days": 64.5,
        "pairs_start": "2015-01-01",
        "pairs_end": "2020-12-31",
        "min_valid_fraction": 0.2,
    }
    bare = build_parser().parse_args(["invert", "cube.zarr", "--out", "o.zarr"])
    assert _pair_filters(bare) == {}
