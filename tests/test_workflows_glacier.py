"""RGI outlines, glacier masks, OGGM centerlines and glacier objects on the real files."""

from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pytest
import rioxarray  # noqa: F401  (registers .rio for the synthetic cubes)
import shapely
import xarray as xr
from conftest import (
    FIXTURE_3X3,
    GLACIER_CUBE,
    ITSLIVE_DATA,
    SHARED_DATA,
    _free_port,
    raise_if_dask_computes,
    requires_shared,
)
from pyproj import Geod, Transformer

import xr_itslive
from xr_itslive.errors import DataAccessError, EmptySelectionError, InvalidParameterError

gpd = pytest.importorskip("geopandas")
from xr_itslive.geo.centerlines import centerline_series, sample_line  # noqa: E402
from xr_itslive.geo.masks import glacier_mask  # noqa: E402
from xr_itslive.io.outlines import (  # noqa: E402
    fetch_glims_outline,
    main_centerline,
    outline_at,
    outline_by_id,
    read_outlines,
)
from xr_itslive.widget import click_lat_lon  # noqa: E402
from xr_itslive.workflows.glacier import Glacier, GlacierCenterline, GlacierPoint  # noqa: E402

pytestmark = requires_shared
OGGM = SHARED_DATA / "oggm"
CATALOG = ITSLIVE_DATA / "catalog_v02.json"
OUTLINE = ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson"
RGI_ID = "RGI2000-v7.0-G-15-16257"
HEF_RGI6 = OGGM / "Hintereisferner_RGI6.shp"
HEF_RGI7 = OGGM / "rgi7" / "rgi7g_hef.shp"
CENTERLINES = OGGM / "centerlines_baltoro_wgs84.shp"
LON, LAT = 95.97, 29.915


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return xr_itslive.open_cube(GLACIER_CUBE, ["v", "vx", "vy"])


# --- outlines ---


def test_rgi6_and_rgi7_attribute_names(tmp_path):
    rgi6, rgi7 = read_outlines(HEF_RGI6), read_outlines(HEF_RGI7)
    assert rgi6["rgi_id"].tolist() == ["RGI60-11.00897"]  # from RGIId
    assert rgi7["rgi_id"].tolist() == ["RGI2000-v7.0-G-11-03116"]  # from rgi_id
    assert rgi6["glacier_name"].tolist() == rgi7["glacier_name"].tolist() == ["Hintereisferner"]
    # both inventories hold the same glacier: the outlines nearly coincide
    a, b = rgi6.geometry.iloc[0], rgi7.to_crs(rgi6.crs).geometry.iloc[0]
    assert a.intersection(b).area / a.union(b).area > 0.8
    # GeoParquet and GeoJSON copies read the same
    parquet = tmp_path / "hef.parquet"
    read_outlines(HEF_RGI7).to_parquet(parquet)
    assert read_outlines(parquet)["rgi_id"].tolist() == rgi7["rgi_id"].tolist()
    geojson = read_outlines(OUTLINE)
    assert geojson["rgi_id"].tolist() == [RGI_ID]
    assert geojson.crs.to_epsg() == 32646


def test_area_is_the_inventorys():
    for path, column in ((HEF_RGI6, "Area"), (HEF_RGI7, "area_km2"), (OUTLINE, "area_km2")):
        glacier = Glacier.from_outline(read_outlines(path).iloc[[0]], find_cube=False)
        assert glacier.area_km2 == pytest.approx(float(glacier.attributes[column]), rel=0.01)


def test_file_without_rgi_attributes():
    with pytest.raises(
        InvalidParameterError,
        match=r"centerlines_baltoro_wgs84.shp has no RGI id attribute: .*'GLIMSID_CR'.*id_column=",
    ):
        read_outlines(CENTERLINES)
    # naming the id column by hand works
    assert read_outlines(CENTERLINES, id_column="GLIMSID_CR")["rgi_id"].iloc[0] == "G076457E35734N"


def test_outline_by_id_and_unknown_id():
    row = outline_by_id("RGI60-01.10689", OGGM / "RGI60-01.10689.shp")
    assert row["glacier_name"].iloc[0] == "Columbia Glacier"
    with pytest.raises(
        EmptySelectionError,
        match=r"RGI id 'RGI60-11.00898' is not in .*Hintereisferner_RGI6.shp \(1 outlines; "
        r"closest ids \['RGI60-11.00897'\]\)",
    ):
        outline_by_id("RGI60-11.00898", HEF_RGI6)


def test_outline_at_point():
    row = outline_at(LON, LAT, OUTLINE)  # the file is in EPSG:32646, the point in lon/lat
    assert row["rgi_id"].iloc[0] == RGI_ID
    with pytest.raises(
        EmptySelectionError, match=rf"contains \(lon=96, lat=30\); the nearest is '{RGI_ID}'"
    ):
        outline_at(96.0, 30.0, OUTLINE)
    with pytest.raises(DataAccessError, match=r"no outline file at .*missing.shp"):
        outline_at(LON, LAT, OGGM / "missing.shp")


# --- masks ---


def test_glacier_mask_is_the_pixel_centres_inside(cube):
    mask = glacier_mask(cube, OUTLINE)
    assert mask.dtype == bool and mask.dims == ("y", "x")
    geometry = read_outlines(OUTLINE).geometry.iloc[0]
    gx, gy = np.meshgrid(cube.x.values, cube.y.values)
    np.testing.assert_array_equal(mask.values, shapely.contains_xy(geometry, gx, gy))
    # The real cube was clipped to this glacier: it has data exactly on the mask.
    has_data = cube.v.notnull().any("mid_date").values
    np.testing.assert_array_equal(mask.values, has_data)
    assert cube.itslive.glacier_mask(OUTLINE).equals(mask)


def test_mask_from_every_outline_form(cube):
    reference = glacier_mask(cube, OUTLINE)
    lonlat = read_outlines(OUTLINE).to_crs(4326)
    geometry = lonlat.geometry.iloc[0]
    glacier = Glacier.from_outline(lonlat, find_cube=False)
    forms = [
        lonlat,  # GeoDataFrame in lon/lat, reprojected
        lonlat.geometry,  # GeoSeries
        glacier,  # Glacier
        shapely.geometry.mapping(geometry),  # GeoJSON mapping + crs
        json.loads(lonlat[["rgi_id", "geometry"]].to_json()),  # FeatureCollection + crs
    ]
    for form in forms:
        crs = "EPSG:4326" if isinstance(form, dict) else None
        np.testing.assert_array_equal(glacier_mask(cube, form, crs=crs).values, reference.values)
    np.testing.assert_array_equal(
        glacier_mask(cube, geometry, crs="EPSG:4326").values, reference.values
    )
    touched = glacier_mask(cube, OUTLINE, all_touched=True)
    assert (touched.values >= reference.values).all() and touched.sum() > reference.sum()


def test_outline_that_misses_the_cube(cube):
    with pytest.raises(
        EmptySelectionError,
        match=r"the outline .* misses the cube .*find_cubes\(geometry=outline\)",
    ):
        glacier_mask(cube, HEF_RGI6)
    lonlat = read_outlines(OUTLINE).to_crs(4326).geometry.iloc[0]
    with pytest.raises(EmptySelectionError, match=r"look like lon/lat: pass crs='EPSG:4326'"):
        glacier_mask(cube, lonlat)  # a bare geometry is taken to be in the cube's CRS
    x, y = float(cube.x[10]), float(cube.y[10])
    tiny = shapely.box(x + 10, y + 10, x + 30, y + 30)  # inside one pixel, off its centre
    with pytest.raises(EmptySelectionError, match=r"holds no pixel centre.*all_touched=True"):
        glacier_mask(cube, tiny)
    assert int(glacier_mask(cube, tiny, all_touched=True).sum()) == 1


def test_invert_spends_no_work_off_the_glacier():
    small = xr_itslive.open_cube(FIXTURE_3X3, ["vx", "vy"])
    x, y = small.x.values, small.y.values
    # an outline holding the pixel centres of the first column only
    outline = shapely.box(x[0] - 60, y[-1] - 60, x[0] + 59, y[0] + 60)
    result = xr_itslive.invert(small, step=30, start="2019-01-01", end="2020-01-01", mask=outline)
    n_obs = result.n_obs.values
    assert (n_obs[:, 0] > 0).all() and (n_obs[:, 1:] == 0).all()
    assert np.isnan(result.vx.values[:, :, 1:]).all()


# --- centerlines ---


def test_main_centerline_of_baltoro():
    main = main_centerline(CENTERLINES)
    assert int(main["MAIN"].iloc[0]) == 1
    line = GlacierCenterline.from_file(CENTERLINES)
    # OGGM's own LENGTH attribute (metres): our ground length agrees
    assert line.length_m == pytest.approx(float(main["LENGTH"].iloc[0]), rel=1e-4)
    assert line.glims_id == "G076457E35734N"
    by_id = main_centerline(CENTERLINES, glacier_id="G076457E35734N")
    assert by_id.geometry.iloc[0].equals(main.geometry.iloc[0])
    with pytest.raises(EmptySelectionError, match=r"no centerline .* belongs to 'RGI60-11.00897'"):
        main_centerline(CENTERLINES, glacier_id="RGI60-11.00897")
    with pytest.raises(InvalidParameterError, match=r"holds no line geometries"):
        main_centerline(HEF_RGI6)


def test_points_every_n_metres_along_the_line():
    line = main_centerline(CENTERLINES).geometry.iloc[0]
    distance, points, crs = sample_line(line, 500.0, "EPSG:4326")
    assert crs == "EPSG:4326"
    np.testing.assert_allclose(np.diff(distance), 500.0)
    coords = shapely.get_coordinates(points)
    assert len(coords) == len(distance) == int(63202.8 // 500) + 1
    # consecutive points are 500 m apart along the line, so at most 500 m apart on the ground
    _, _, chord = Geod(ellps="WGS84").inv(
        coords[:-1, 0], coords[:-1, 1], coords[1:, 0], coords[1:, 1]
    )
    assert chord.max() <= 500.5 and np.median(chord) > 490
    assert shapely.distance(shapely.points(coords), line).max() < 1e-7
    np.testing.assert_allclose(coords[0], line.coords[0])
    with pytest.raises(
        InvalidParameterError, match=r"spacing must be a positive number of metres, got -1"
    ):
        sample_line(line, -1)


def _synthetic_cube_over(line, crs="EPSG:32643", pixel=120.0):
    """A small lazy cube in Baltoro's UTM zone with v = known function of (x, y)."""
    to_utm = Transformer.from_crs(4326, crs, always_xy=True)
    xmin, ymin, xmax, ymax = to_utm.transform_bounds(*line.bounds)
    x = np.arange(xmin - 1000, xmax + 1000, pixel)
    y = np.arange(ymax + 1000, ymin - 1000, -pixel)
    field = (x[None, :] - x[0]) / 1000.0 + (y[:, None] - y[-1]) / 10000.0
    n = 4
    dates = np.datetime64("2020-01-01") + np.arange(n) * np.timedelta64(10, "D")
    v = np.broadcast_to(field, (n, *field.shape)) * (1 + np.arange(n))[:, None, None]
    ds = xr.Dataset(
        {"v": (("mid_date", "y", "x"), v.astype(np.float32))},
        coords={
            "mid_date": dates,
            "x": x,
            "y": y,
            "acquisition_date_img1": ("mid_date", dates - np.timedelta64(5, "D")),
            "acquisition_date_img2": ("mid_date", dates + np.timedelta64(5, "D")),
        },
    )
    return ds.rio.write_crs(crs).chunk({"mid_date": -1, "y": 100, "x": 100}), field


def test_centerline_series_has_a_distance_dimension():
    row = main_centerline(CENTERLINES)
    line = row.geometry.iloc[0]
    ds, field = _synthetic_cube_over(line)
    with raise_if_dask_computes():
        series = centerline_series(ds, row, spacing=250.0)
    assert series.v.dims == ("mid_date", "distance")
    np.testing.assert_allclose(np.diff(series.distance.values), 250.0)
    assert series.attrs["n_points_outside"] == 0
    # each value is the known field at the nearest pixel of each sampled point
    ix = np.abs(ds.x.values[None, :] - series.point_x.values[:, None]).argmin(axis=1)
    iy = np.abs(ds.y.values[None, :] - series.point_y.values[:, None]).argmin(axis=1)
    np.testing.assert_allclose(series.v.values[2], 3 * field[iy, ix], rtol=1e-6)
    assert series.offset_m.max() <= np.hypot(60, 60)
    # the points are those of sample_line, in the cube's CRS
    _, points, _ = sample_line(line, 250.0)
    expected = Transformer.from_crs(4326, 32643, always_xy=True).transform(
        *shapely.get_coordinates(points).T
    )
    np.testing.assert_allclose(series.point_x.values, expected[0], atol=1e-3)
    # a cube holding only part of the line keeps the part inside
    half = ds.isel(x=slice(0, ds.sizes["x"] // 2))
    partial = centerline_series(half, row, spacing=250.0)
    assert 0 < partial.sizes["distance"] < series.sizes["distance"]
    assert partial.attrs["n_points_outside"] == series.sizes["distance"] - partial.sizes["distance"]


def test_centerline_series_on_the_real_cube(cube):
    attrs = read_outlines(OUTLINE).iloc[0]
    # from the glacier's centre to its terminus (RGI7 attributes), in lon/lat
    line = shapely.LineString([(attrs.cenlon, attrs.cenlat), (attrs.termlon, attrs.termlat)])
    series = cube.itslive.centerline(line, crs="EPSG:4326")
    assert series.attrs["n_points_outside"] == 0
    ix = [int(np.flatnonzero(cube.x.values == x)[0]) for x in series.x.values]
    iy = [int(np.flatnonzero(cube.y.values == y)[0]) for y in series.y.values]
    some = slice(0, 2000)
    expected = cube.v.isel(mid_date=some).values[:, iy, ix]
    np.testing.assert_array_equal(series.v.isel(mid_date=some).values, expected)
    with pytest.raises(EmptySelectionError, match=r"the centerline .* misses the cube"):
        centerline_series(cube, main_centerline(CENTERLINES))


# --- glacier objects ---


def test_glacier_from_rgi_id_point_and_click(cube):
    glacier = Glacier.from_rgi_id(RGI_ID, OUTLINE, catalog=CATALOG)
    assert glacier.rgi_id == RGI_ID and glacier.glims_id == "G095962E29920N"
    expected_cube = xr_itslive.find_cubes(polygon=read_outlines(OUTLINE), catalog=CATALOG)[0]
    assert glacier.cube_url == expected_cube.zarr_url
    assert expected_cube.name in glacier.cube_url and "EPSG32646" in glacier.cube_url
    text = repr(glacier)
    assert text.startswith(f"Glacier(rgi_id='{RGI_ID}', name=None, area=10.1")
    assert "cube='ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr'" in text
    assert "data=not loaded" in text
    by_point = Glacier.from_point(LON, LAT, OUTLINE, catalog=CATALOG)
    # a map click sends (lat, lon); the widget reads it and asks for the glacier at the point
    click_lat, click_lon = click_lat_lon([LAT, LON])
    by_click = Glacier.from_point(click_lon, click_lat, OUTLINE, catalog=CATALOG)
    for other in (by_point, by_click):
        assert (other.rgi_id, other.cube_url) == (glacier.rgi_id, glacier.cube_url)
        assert other.outline.equals(glacier.outline)
    with pytest.raises(
        InvalidParameterError, match=r"\(lon=29.915, lat=95.97\) is not .* Did you swap"
    ):
        swapped_lat, swapped_lon = click_lat_lon([LON, LAT])
        Glacier.from_point(swapped_lon, swapped_lat, OUTLINE, find_cube=False)
    with pytest.raises(InvalidParameterError, match=r"needs outlines= .* or online=True"):
        Glacier.from_point(LON, LAT)
    # a GeoJSON feature in lon/lat for maps
    feature = glacier.__geo_interface__
    assert feature["properties"]["rgi_id"] == RGI_ID
    assert shapely.geometry.shape(feature["geometry"]).contains(shapely.Point(LON, LAT))


def test_a_glacier_inside_one_cube_is_inverted_there_alone():
    # The outline lies wholly inside the EPSG:32646 cube, and the neighbouring UTM zone's cube
    # (EPSG:32647, whose tile overlaps it in lon/lat) touches it too: glacier.cubes lists both,
    # the cover only the first, and invert() solves the one cube (no mosaic, no second cube
    # opened: this one is not on this machine).
    glacier = Glacier.from_rgi_id(RGI_ID, OUTLINE, catalog=CATALOG)
    touched = [e.zarr_url for e in xr_itslive.find_cubes(geometry=read_outlines(OUTLINE),
                                                          catalog=CATALOG)]  # fmt: skip
    assert glacier.cubes == tuple(touched) and len(touched) > 1
    assert any("EPSG32647_G0120_X250000_Y3350000" in url for url in glacier.cubes)
    assert glacier.covering_cubes == (glacier.cube_url,)
    # in lon/lat (the boxes reprojected into the outline's CRS), the same cover
    lonlat = Glacier.from_outline(read_outlines(OUTLINE).to_crs(4326), catalog=CATALOG)
    assert lonlat.cubes == glacier.cubes and lonlat.covering_cubes == (glacier.cube_url,)
    data = xr_itslive.open_cube(GLACIER_CUBE, ["vx", "vy"]).isel(mid_date=slice(0, 3000))
    opened = glacier.with_data(data)
    result = opened.invert(step=60.0).compute()
    expected = xr_itslive.invert(data, mask=opened, step=60.0).compute()
    assert "source" not in result and "mosaic_cubes" not in result.attrs
    for name in ("vx", "vy", "n_obs"):
        np.testing.assert_array_equal(result[name].values, expected[name].values, err_msg=name)


def _entry(name: str, box, epsg: int = 32646) -> xr_itslive.CubeEntry:
    footprint = shapely.transform(
        box, lambda xy: np.column_stack(
            Transformer.from_crs(epsg, 4326, always_xy=True).transform(xy[:, 0], xy[:, 1]))
    )  # fmt: skip
    return xr_itslive.CubeEntry(f"https://example.org/{name}.zarr", f"s3://x/{name}.zarr",
                                epsg, footprint, box)  # fmt: skip


def test_the_cover_keeps_only_cubes_that_add_ground():
    row = read_outlines(OUTLINE)
    outline = row.geometry.iloc[0]
    xmin, ymin, xmax, ymax = outline.bounds
    middle = (xmin + xmax) / 2
    west = _entry("west", shapely.box(xmin - 1000, ymin - 1000, middle, ymax + 1000))
    east = _entry("east", shapely.box(middle, ymin - 1000, xmax + 1000, ymax + 1000))
    # a box holding all of the outline, ranked after the halves: it adds nothing
    big = _entry("big", shapely.box(xmin - 5000, ymin - 5000, xmax + 5000, ymax + 5000))
    # in the neighbouring zone, reprojected (densified) into the outline's CRS
    there = Transformer.from_crs(32646, 32647, always_xy=True)
    (x0, x1), (y0, y1) = there.transform([xmin - 5000, xmax + 5000], [ymin - 5000, ymax + 5000])
    other = _entry("other", shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)),
                   epsg=32647)  # fmt: skip
    halves = Glacier.from_outline(row, entries=[west, east, big, other])
    assert halves.cubes == tuple(e.zarr_url for e in (west, east, big, other))
    assert halves.cube_url == west.zarr_url
    assert halves.covering_cubes == (west.zarr_url, east.zarr_url)
    # ranked first, the whole-outline box is the whole cover
    assert Glacier.from_outline(row, entries=[big, west, east]).covering_cubes == (big.zarr_url,)
    # a cube only touching the outline's edge holds no area of it: left out
    edge = _entry("edge", shapely.box(xmax, ymin, xmax + 10_000, ymax))
    assert Glacier.from_outline(row, entries=[big, edge]).covering_cubes == (big.zarr_url,)
    # the other zone's box, first, covers it all too
    assert Glacier.from_outline(row, entries=[other, west]).covering_cubes == (other.zarr_url,)
    # a cube_url given by hand is the cover; no entries, no cube
    assert Glacier.from_outline(row, cube_url="a.zarr").covering_cubes == ("a.zarr",)
    none = Glacier.from_outline(row, entries=[])
    assert none.cube_url is None and none.cubes == none.covering_cubes == ()


def test_glacier_keeps_its_data(cube):
    glacier = Glacier.from_rgi_id(RGI_ID, OUTLINE, cube_url=str(GLACIER_CUBE))
    opened = glacier.open(variables=["v"])
    assert glacier.data is None  # frozen: open returns a new object
    assert opened.crs == "EPSG:32646" and dict(opened.data.sizes) == dict(cube.sizes)
    assert "data=<mid_date: 47892 × y: 37 × x: 40, 1 variables>" in repr(opened)
    np.testing.assert_array_equal(opened.mask().values, glacier_mask(cube, OUTLINE).values)
    clipped = opened.clip()
    assert clipped.glacier_mask.values.sum() == opened.mask().values.sum()
    point = opened.point(LON, LAT)
    assert point.rgi_id == RGI_ID and point.data is not None
    assert point.offset_m == pytest.approx(cube.itslive.point(LON, LAT).attrs["offset_m"])
    assert "GlacierPoint(lon=95.97000, lat=29.91500" in repr(point)
    with pytest.raises(InvalidParameterError, match=r"has no data yet; call .open\(\)"):
        glacier.mask()
    with pytest.raises(InvalidParameterError, match=r"has no cube_url"):
        Glacier.from_rgi_id(RGI_ID, OUTLINE, find_cube=False).open()


def test_glacier_point_from_click():
    click_lat, click_lon = click_lat_lon((LAT, LON))
    point = GlacierPoint.from_point(click_lon, click_lat, outlines=OUTLINE, catalog=CATALOG)
    assert point.rgi_id == RGI_ID and (point.lon, point.lat) == (LON, LAT)
    assert point.cube_url == xr_itslive.find_cubes(point=(LON, LAT), catalog=CATALOG)[0].zarr_url
    loaded = point.load(xr_itslive.open_cube(GLACIER_CUBE, ["v"]))
    assert loaded.data.v.dims == ("mid_date",) and loaded.offset_m < 85
    assert "data=not loaded" in repr(point)


def test_glacier_centerline_object():
    baltoro = Glacier.from_rgi_id("BALTORO", OGGM / "baltoro_wgs84.shp", find_cube=False)
    line = baltoro.centerline(CENTERLINES, spacing=500.0)
    assert line.rgi_id == "BALTORO" and line.glims_id == "G076457E35734N"
    assert line.line.equals(main_centerline(CENTERLINES).geometry.iloc[0])
    distance, points = line.points()
    assert len(shapely.get_coordinates(points)) == len(distance)
    ds, _ = _synthetic_cube_over(line.line)
    loaded = line.load(ds)
    assert loaded.data.v.dims == ("mid_date", "distance") and line.data is None
    assert "GlacierCenterline(rgi_id='BALTORO'" in repr(loaded) and "length=63.2 km" in repr(loaded)


# --- GLIMS (offline: a local server stands in for it) ---


@pytest.fixture
def glims_server(tmp_path):
    """A local HTTP server answering every GET with the body in ``state['body']``."""
    state = {"body": b""}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            state["path"] = self.path
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/geoserver/ows", state
    server.shutdown()
    server.server_close()


def test_glims_outline_parsing(glims_server):
    url, state = glims_server
    outline = read_outlines(OUTLINE).to_crs(4326)[["glims_id", "geometry"]]
    outline = outline.rename(columns={"glims_id": "glac_id"})
    outline["glac_name"] = "test glacier"
    state["body"] = outline.to_json().encode()
    row = fetch_glims_outline(LON, LAT, url=url)
    assert row["glims_id"].iloc[0] == "G095962E29920N" and row["rgi_id"].iloc[0] is None
    assert "typeName=GLIMS%3AGLIMS_Glacier_Outlines" in state["path"]
    assert "outputFormat=application%2Fjson" in state["path"]
    with pytest.raises(
        EmptySelectionError, match=r"no GLIMS glacier outline contains \(lon=96, lat=30\)"
    ):
        fetch_glims_outline(96.0, 30.0, url=url)
    state["body"] = b"<html>Service unavailable</html>"
    with pytest.raises(DataAccessError, match=r"did not answer GeoJSON .*Service unavailable"):
        fetch_glims_outline(LON, LAT, url=url)


def test_glims_unreachable_gives_a_clear_error():
    url = f"http://127.0.0.1:{_free_port()}/geoserver/ows"
    with pytest.raises(
        DataAccessError,
        match=r"could not reach the GLIMS service at .* after 2 tries .*pass outlines= a local",
    ):
        fetch_glims_outline(LON, LAT, url=url, timeout=2, attempts=2)


def test_glims_url_precedence_and_online_glacier(glims_server, monkeypatch):
    from xr_itslive.io.outlines import GLIMS_URL_ENV, GLIMS_WFS_URL, glims_url

    url, state = glims_server
    monkeypatch.delenv(GLIMS_URL_ENV, raising=False)
    assert glims_url() == GLIMS_WFS_URL == "https://www.glims.org/geoserver/ows"
    monkeypatch.setenv(GLIMS_URL_ENV, url)
    assert glims_url() == url and glims_url("http://elsewhere/ows") == "http://elsewhere/ows"
    outline = read_outlines(OUTLINE).to_crs(4326)[["glims_id", "geometry"]]
    state["body"] = outline.rename(columns={"glims_id": "glac_id"}).to_json().encode()
    # Glacier.from_point(online=True) asks the service the environment names
    glacier = Glacier.from_point(LON, LAT, online=True, catalog=CATALOG)
    assert glacier.glims_id == "G095962E29920N" and glacier.rgi_id is None
    assert state["path"].startswith("/geoserver/ows?service=WFS")
    assert glacier.cube_url == Glacier.from_rgi_id(RGI_ID, OUTLINE, catalog=CATALOG).cube_url


def test_glims_refusals_and_malformed_answers(glims_server):
    url, state = glims_server
    state["body"] = (
        b'<?xml version="1.0" ?><ServiceExceptionReport version="1.2.0">'
        b'<ServiceException code="InvalidParameterValue">Illegal bbox</ServiceException>'
        b"</ServiceExceptionReport>"
    )
    with pytest.raises(DataAccessError, match=r"refused the query for layer .*: Illegal bbox\."):
        fetch_glims_outline(LON, LAT, url=url)
    state["body"] = b'{"type": "FeatureCollection", "features": 5}'
    with pytest.raises(DataAccessError, match=r"did not answer GeoJSON .*'features' is a int"):
        fetch_glims_outline(LON, LAT, url=url)
    state["body"] = b'{"type": "FeatureCollection", "features": [{"type": "Feature"}]}'
    with pytest.raises(DataAccessError, match=r"did not answer GeoJSON"):
        fetch_glims_outline(LON, LAT, url=url)
    state["body"] = b'{"type": "FeatureCollection", "features": []}'
    with pytest.raises(EmptySelectionError, match=r"GLIMS holds no glacier within 0.05°"):
        fetch_glims_outline(LON, LAT, url=url)


def test_glacier_point_label_series_and_window(cube):
    point = GlacierPoint(lon=LON, lat=LAT)
    assert point.label == "lat 29.9150, lon 95.9700"
    assert point.series is None and point.cube_around_point is None
    named = GlacierPoint.from_point(LON, LAT, outlines=OUTLINE, find_cube=False)
    assert named.label == f"{RGI_ID}, lat 29.9150, lon 95.9700"
    assert GlacierPoint.from_point(LON, LAT, find_cube=False, label="mine").label == "mine"
    loaded = named.load(cube)
    assert loaded.label == named.label and named.series is None  # frozen: load copies
    np.testing.assert_array_equal(
        loaded.series.v.isel(mid_date=slice(0, 2000)).values,
        cube.itslive.point(LON, LAT).v.isel(mid_date=slice(0, 2000)).values,
    )
    around = loaded.cube_around_point
    assert dict(around.sizes) == {"mid_date": cube.sizes["mid_date"], "y": 3, "x": 3}
    assert around.attrs["window_size"] == 3
    np.testing.assert_array_equal(
        around.v.isel(y=1, x=1, mid_date=slice(0, 2000)).values,
        loaded.series.v.isel(mid_date=slice(0, 2000)).values,
    )
    assert loaded.load(cube, size=5).cube_around_point.sizes["x"] == 5
    # at the cube's corner the window keeps the pixels inside the cube
    from pyproj import Transformer

    corner = Transformer.from_crs(32646, 4326, always_xy=True).transform(
        float(cube.x[0]), float(cube.y[0])
    )
    edge = GlacierPoint(lon=corner[0], lat=corner[1]).load(cube)
    assert (edge.cube_around_point.sizes["y"], edge.cube_around_point.sizes["x"]) == (2, 2)
    assert f"label='{RGI_ID}, lat 29.9150, lon 95.9700')" in repr(loaded)
    # Glacier.point gives the window too when the glacier's data is loaded
    glacier = Glacier.from_rgi_id(RGI_ID, OUTLINE, cube_url=str(GLACIER_CUBE)).with_data(cube)
    assert glacier.point(LON, LAT).cube_around_point.sizes["x"] == 3
