"""The glacier map's logic without a browser: the real catalog and RGI outlines, the handlers
called with the features the map draws (and through ipyleaflet's own message path).

The GLIMS path runs against a real HTTP server on 127.0.0.1 that answers WFS ``GetFeature``
queries as GLIMS's GeoServer does, from the real RGI7 outline of the glacier cube's glacier.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import io
import json
import math
import subprocess
import sys
import threading
import urllib.parse

import numpy as np
import pytest
import shapely
from conftest import GLACIER_CUBE, ITSLIVE_DATA, REPO, SHARED_DATA, _free_port, requires_shared

import xr_itslive
from xr_itslive import CubeEntry, Glacier, GlacierCenterline, GlacierPoint, find_cubes
from xr_itslive.errors import (
    DataAccessError,
    EmptySelectionError,
    InvalidParameterError,
    OptionalDependencyError,
)
from xr_itslive.geo.subset import point_series, window
from xr_itslive.io.outlines import GLIMS_URL_ENV, fetch_glims_outline, main_centerline
from xr_itslive.widget import (
    CUBE_INDEX,
    OUTLINE_ORIGIN,
    OUTLINE_ROW,
    OUTLINE_SOURCE,
    MapState,
    blank_tile_url,
    solid_png,
    view_for_bounds,
)

CATALOG = ITSLIVE_DATA / "catalog_v02.json"
OUTLINE = ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson"
OGGM = SHARED_DATA / "oggm"
HEF_RGI7 = OGGM / "rgi7" / "rgi7g_hef.shp"
HEF_RGI6 = OGGM / "Hintereisferner_RGI6.shp"
COLUMBIA = OGGM / "RGI60-01.10689.shp"
BALTORO = OGGM / "baltoro_wgs84.shp"
CENTERLINES = OGGM / "centerlines_baltoro_wgs84.shp"  # OGGM's lines of the Baltoro outline
RGI_ID = "RGI2000-v7.0-G-15-16257"
HEF_RGI7_ID = "RGI2000-v7.0-G-11-03116"
GLIMS_ID = "G095962E29920N"  # the glims_id of RGI_ID
GLACIER_CUBE_NAME = "ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr"
LON, LAT = 95.97, 29.915  # on the glacier, inside the glacier cube

pytestmark = requires_shared


def _outline_gdf():
    import geopandas as gpd

    return gpd.read_file(OUTLINE)


def _outline_lonlat():
    return _outline_gdf().to_crs("EPSG:4326").geometry.iloc[0]


def _feature(state: MapState, rgi_id: str) -> dict:
    for feature in state.glacier_collection()["features"]:
        if feature["properties"]["rgi_id"] == rgi_id:
            return feature
    raise AssertionError(f"{rgi_id} not drawn")


@pytest.fixture
def state():
    return MapState(CATALOG, OUTLINE)


# --- pieces ---


def test_solid_png_is_a_valid_one_pixel_image():
    from PIL import Image

    image = Image.open(io.BytesIO(solid_png((10, 200, 30))))
    assert image.size == (1, 1)
    assert image.convert("RGB").getpixel((0, 0)) == (10, 200, 30)
    url = blank_tile_url((1, 2, 3))
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.convert("RGB").getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(InvalidParameterError, match=r"0\.\.255, got \(1, 2, 300\)"):
        solid_png((1, 2, 300))


@pytest.mark.parametrize(
    "bounds",
    [
        ((29.89, 95.94), (29.95, 95.99)),
        ((46.7, 10.6), (46.9, 10.9)),
        ((-60.0, -80.0), (10.0, 30.0)),
    ],
)
def test_view_for_bounds_fits_tightly(bounds):
    width, height, padding = 800, 450, 0.15
    (south, west), (north, east) = bounds
    center, zoom = view_for_bounds(bounds, width, height, padding)
    assert south <= center[0] <= north and west <= center[1] <= east

    def pixels(z):  # extent in screen pixels at zoom z (web Mercator)
        def y(lat):
            return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

        world = 256 * 2**z
        return world * (east - west) / 360, world * (y(north) - y(south)) / (2 * math.pi)

    usable = 1 - 2 * padding
    w, h = pixels(zoom)
    assert w <= width * usable and h <= height * usable
    w, h = pixels(zoom + 1)  # one level closer no longer fits
    assert w > width * usable or h > height * usable


def test_view_for_bounds_rejects_swapped_bounds():
    with pytest.raises(
        InvalidParameterError, match=r"south <= north.*got \(\(30, 96\), \(29, 95\)\)"
    ):
        view_for_bounds(((30, 96), (29, 95)))


# --- what the map draws ---


def test_outline_and_cube_features(state):
    glaciers = state.glacier_collection()["features"]
    assert len(glaciers) == 1
    props = glaciers[0]["properties"]
    assert props["rgi_id"] == RGI_ID and props[OUTLINE_SOURCE] == 0 and props[OUTLINE_ROW] == 0
    drawn = shapely.geometry.shape(glaciers[0]["geometry"])
    assert drawn.equals_exact(_outline_lonlat(), 1e-9)  # lon/lat, not the file's UTM

    cubes = state.cube_collection()["features"]
    names = [f["properties"]["name"] for f in cubes]
    assert GLACIER_CUBE_NAME in names
    assert 1 < len(cubes) < len(state.catalog)
    # "near": every drawn footprint reaches within the margin of the outline.
    west, south, east, north = _outline_lonlat().bounds
    near = shapely.box(west - 1.0, south - 1.0, east + 1.0, north + 1.0).buffer(0.05)
    for feature in cubes:
        entry = state.catalog.entries[feature["properties"][CUBE_INDEX]]
        assert entry.name == feature["properties"]["name"]
        assert shapely.geometry.shape(feature["geometry"]).intersects(near)
    json.dumps(state.glacier_collection())  # what ipywidgets sends must be plain JSON
    json.dumps(state.cube_collection())


def test_cube_choices():
    assert len(MapState(CATALOG, OUTLINE, cubes="all").cube_indices) == 3086
    bbox = (95.9, 29.85, 96.0, 29.95)
    box = MapState(CATALOG, OUTLINE, cubes=bbox)
    drawn = {box.catalog.entries[i].name for i in box.cube_indices}
    assert drawn == {e.name for e in find_cubes(bbox=bbox, catalog=CATALOG)}
    assert GLACIER_CUBE_NAME in drawn
    assert MapState(False, OUTLINE).cube_collection()["features"] == []
    with pytest.raises(InvalidParameterError, match=r"cubes='nearby' is not a choice"):
        MapState(CATALOG, OUTLINE, cubes="nearby")
    with pytest.raises(InvalidParameterError, match=r"box of 4 numbers, got \(1, 2, 3\)"):
        MapState(CATALOG, OUTLINE, cubes=(1, 2, 3))


def test_bounds_cover_all_outline_sources():
    state = MapState(False, [OUTLINE, HEF_RGI7, COLUMBIA])
    (south, west), (north, east) = state.bounds()
    for lonlat in state._outlines_lonlat:
        w, s, e, n = lonlat.total_bounds
        assert south <= s and west <= w and north >= n and east >= e


# --- clicks ---


def test_click_glacier_selects_glacier_and_its_cube(state):
    seen = []
    state.observe(lambda s: seen.append((s.glacier, s.cube)))
    feature = _feature(state, RGI_ID)
    glacier = state.click_glacier(
        event="click",
        feature=feature,
        properties=feature["properties"],
        coordinates=[29.92, 95.97],
    )
    assert isinstance(glacier, Glacier)
    assert glacier.rgi_id == RGI_ID and glacier.crs == "EPSG:32646"
    expected_cube = find_cubes(geometry=_outline_gdf(), catalog=CATALOG)[0]
    assert glacier.cube_url == expected_cube.zarr_url
    assert isinstance(state.cube, CubeEntry) and state.cube.name == GLACIER_CUBE_NAME
    assert state.glaciers == [glacier] and seen == [(glacier, state.cube)]
    assert RGI_ID in state.message and GLACIER_CUBE_NAME in state.message
    assert "10.16 km²" in state.message
    highlighted = state.selected_glacier_collection()["features"]
    assert [f["properties"]["rgi_id"] for f in highlighted] == [RGI_ID]
    assert [f["properties"]["name"] for f in state.selected_cube_collection()["features"]] == [
        GLACIER_CUBE_NAME
    ]

    # A second click on the same outline deselects it, and its cube with it.
    assert state.click_glacier(feature=feature) is None
    assert state.glaciers == [] and state.cubes == [] and state.glacier is None
    assert state.selected_glacier_collection()["features"] == []
    assert state.message.startswith("Click a glacier")
    assert len(seen) == 2


def test_a_map_glacier_carries_every_cube_and_its_cover(state, monkeypatch):
    # One catalog query per selection: the map's best cube and the Glacier's cubes both come
    # from it.
    queries = []
    find = state.catalog.find
    monkeypatch.setattr(state.catalog, "find", lambda *a, **k: queries.append(1) or find(*a, **k))
    glacier = state.click_glacier(feature=_feature(state, RGI_ID))
    assert len(queries) == 1
    touched = [e.zarr_url for e in find_cubes(geometry=_outline_gdf(), catalog=CATALOG)]
    # every cube the outline touches (the EPSG:32647 tile overlaps it), the best one covers it
    assert list(glacier.cubes) == touched and len(touched) > 1
    assert glacier.covering_cubes == (glacier.cube_url,) == (state.cube.zarr_url,)
    # the same glacier as Glacier.from_rgi_id builds, cover included
    by_id = Glacier.from_rgi_id(RGI_ID, OUTLINE, catalog=CATALOG)
    assert (glacier.cubes, glacier.covering_cubes) == (by_id.cubes, by_id.covering_cubes)


def test_a_map_glacier_over_two_cubes(tmp_path):
    # A catalog of two cubes, each holding half of the glacier (their exact boxes in EPSG:32646)
    from pyproj import Transformer

    outline = _outline_gdf().geometry.iloc[0]
    xmin, ymin, xmax, ymax = outline.bounds
    middle = (xmin + xmax) / 2
    to_lonlat = Transformer.from_crs(32646, 4326, always_xy=True)
    features = []
    for name, (x0, x1) in (("west", (xmin - 1000, middle)), ("east", (middle, xmax + 1000))):
        ring = [(x0, ymin - 1000), (x1, ymin - 1000), (x1, ymax + 1000), (x0, ymax + 1000)]
        ring.append(ring[0])
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [
                [list(to_lonlat.transform(x, y)) for x, y in ring]]},
            "properties": {"zarr_url": f"https://example.org/{name}.zarr", "epsg": 32646,
                           "geometry_epsg": {"type": "Polygon",
                                             "coordinates": [[list(p) for p in ring]]}},
        })  # fmt: skip
    catalog = tmp_path / "halves.json"
    catalog.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    state = MapState(catalog, OUTLINE)
    glacier = state.select_glacier(RGI_ID)
    urls = {"https://example.org/west.zarr", "https://example.org/east.zarr"}
    assert set(glacier.cubes) == set(glacier.covering_cubes) == urls
    assert glacier.cube_url == glacier.cubes[0] == state.cube.zarr_url


def test_click_on_highlight_deselects(state):
    state.select_glacier(RGI_ID)
    highlighted = state.selected_glacier_collection()["features"][0]
    state.click_selected_glacier(feature=highlighted)
    assert state.glaciers == [] and state.cubes == []


def test_single_and_multiple_selection():
    single = MapState(CATALOG, [HEF_RGI7, COLUMBIA])
    hef = single.click_glacier(feature=_feature(single, "RGI2000-v7.0-G-11-03116"))
    assert hef.name == "Hintereisferner" and hef.cube_url is not None
    columbia = single.click_glacier(feature=_feature(single, "RGI60-01.10689"))
    assert single.glaciers == [columbia] and columbia.name == "Columbia Glacier"
    assert [c.zarr_url for c in single.cubes] == [columbia.cube_url]

    several = MapState(CATALOG, [HEF_RGI7, HEF_RGI6, COLUMBIA], multiple=True)
    ids = ("RGI2000-v7.0-G-11-03116", "RGI60-11.00897", "RGI60-01.10689")
    picked = [several.click_glacier(feature=_feature(several, rgi)) for rgi in ids]
    assert [g.rgi_id for g in several.glaciers] == [g.rgi_id for g in picked]
    # The RGI6 and RGI7 Hintereisferner lie in the same cube: it is selected once.
    assert picked[0].cube_url == picked[1].cube_url
    assert [c.zarr_url for c in several.cubes] == [picked[0].cube_url, picked[2].cube_url]
    # Deselecting one Hintereisferner keeps their shared cube; the other one frees it.
    several.click_glacier(feature=_feature(several, "RGI2000-v7.0-G-11-03116"))
    assert [c.zarr_url for c in several.cubes] == [picked[0].cube_url, picked[2].cube_url]
    several.click_glacier(feature=_feature(several, "RGI60-11.00897"))
    assert [c.zarr_url for c in several.cubes] == [picked[2].cube_url]
    several.clear()
    assert several.glaciers == [] and several.cubes == []


def test_click_cube_decides_by_projected_box(state):
    # Footprints (lon/lat) of neighbouring UTM zones overlap: a click there selects the cube
    # whose projected box holds the point deepest, whichever footprint was on top.
    features = state.cube_collection()["features"]
    shapes = [shapely.geometry.shape(f["geometry"]) for f in features]
    overlap = None
    for i in range(len(shapes)):
        for j in range(i + 1, len(shapes)):
            common = shapes[i].intersection(shapes[j])
            if common.area > 0.01:
                overlap = (i, j, common.representative_point())
                break
        if overlap:
            break
    assert overlap is not None, "expected overlapping footprints near the glacier"
    i, j, point = overlap
    best = find_cubes(point=(point.x, point.y), catalog=CATALOG)[0]
    for k in (i, j):
        chosen = state.click_cube(feature=features[k], coordinates=[point.y, point.x])
        assert chosen is best
    assert state.cubes == [best]
    # A longitude from a wrapped copy of the world (Leaflet reports those) is the same place.
    assert state.click_cube(feature=features[i], coordinates=[point.y, point.x + 360]) is best
    # Without coordinates the clicked footprint decides.
    chosen = state.click_cube(feature=features[j])
    assert chosen is state.catalog.entries[features[j]["properties"][CUBE_INDEX]]
    assert chosen.name in state.message


def test_click_cube_keeps_glacier_selection(state):
    glacier = state.select_glacier(RGI_ID)
    feature = state.cube_collection()["features"][0]
    entry = state.click_cube(feature=feature)
    assert state.glaciers == [glacier] and state.cubes == [entry]


def test_glacier_outside_every_cube():
    import geopandas as gpd

    ocean = gpd.GeoDataFrame(
        {"rgi_id": ["RGI2000-v7.0-G-00-00001"]},
        geometry=[shapely.box(-30.0, 0.0, -29.9, 0.1)],  # mid-Atlantic: no ITS_LIVE cube
        crs="EPSG:4326",
    )
    state = MapState(CATALOG, ocean)
    assert state.cube_indices == []
    glacier = state.select_glacier("RGI2000-v7.0-G-00-00001")
    assert glacier.cube_url is None and state.cubes == []
    assert "no ITS_LIVE cube covers this glacier" in state.message


# --- bad input ---


def test_bad_features_and_ids(state):
    with pytest.raises(InvalidParameterError, match=r"lacks \['outline_source', 'outline_row'\]"):
        state.click_glacier(feature={"type": "Feature", "properties": {"rgi_id": RGI_ID}})
    with pytest.raises(InvalidParameterError, match=r"no outline outline_source=3, outline_row=0"):
        state.click_glacier(properties={OUTLINE_SOURCE: 3, OUTLINE_ROW: 0})
    with pytest.raises(
        InvalidParameterError, match=r"lacks \['cube_index'\].*got properties \['name'\]"
    ):
        state.click_cube(feature={"properties": {"name": "x", "style": {}}})
    with pytest.raises(InvalidParameterError, match=r"cube_index=99999 is not an entry"):
        state.click_cube(properties={CUBE_INDEX: 99999})
    with pytest.raises(
        InvalidParameterError, match=r"coordinates=\(lat, lon\), got coordinates='x'"
    ):
        state.click_cube(coordinates="x")
    with pytest.raises(
        EmptySelectionError, match=r"'RGI60-11.00897' is not among the map's 1 outlines"
    ):
        state.select_glacier("RGI60-11.00897")
    with pytest.raises(InvalidParameterError, match=r"catalog=False"):
        MapState(False, OUTLINE).click_cube(properties={CUBE_INDEX: 0})


def test_outline_file_without_rgi_ids():
    centerlines = OGGM / "centerlines_baltoro_wgs84.shp"
    with pytest.raises(InvalidParameterError, match=r"has no RGI id attribute.*GLIMSID_CR"):
        MapState(False, centerlines)


# --- GLIMS: a local server answering like GLIMS's GeoServer ---

GLIMS_LAYER_NAME = "GLIMS:GLIMS_Glacier_Outlines"

_EXCEPTION_REPORT = """<?xml version="1.0" encoding="UTF-8"?>
<ServiceExceptionReport version="1.2.0" xmlns="http://www.opengis.net/ogc">
   <ServiceException code="InvalidParameterValue" locator="{locator}">
      {text}
   </ServiceException>
</ServiceExceptionReport>"""


def _glims_features() -> list[dict]:
    """The real RGI7 outline as GLIMS serves it (lon/lat GeoJSON, GLIMS attribute names): two
    analyses of the glacier, an older, smaller one listed first and the RGI7 one."""
    import geopandas as gpd

    rgi = gpd.read_file(OUTLINE)  # EPSG:32646
    older = rgi.geometry.buffer(-60.0).to_crs(4326).iloc[0]
    newest = rgi.to_crs(4326).geometry.iloc[0]
    features = []
    for number, (geometry, date) in enumerate(
        ((older, "2000-10-12T00:00:00"), (newest, "2015-09-30T00:00:00")), start=1
    ):
        features.append(
            {
                "type": "Feature",
                "id": f"GLIMS_Glacier_Outlines.{number}",
                "geometry": shapely.geometry.mapping(geometry),
                "geometry_name": "geom",
                "properties": {
                    "line_type": "glac_bound",
                    "anlys_id": 700000 + number,
                    "glac_id": rgi["glims_id"].iloc[0],
                    "glac_name": None,
                    "src_date": date,
                    "area": float(rgi["area_km2"].iloc[0]),
                    "rec_status": "okay",
                },
            }
        )
    return features


class _GlimsHandler(http.server.BaseHTTPRequestHandler):
    """WFS 1.0.0 GetFeature as GeoServer answers it: case-insensitive keys, ``bbox`` in lon/lat,
    the features meeting the box as a GeoJSON FeatureCollection, an XML exception report for a
    query it refuses. ``server.mode = "garbage"`` makes it answer an HTML page instead."""

    def do_GET(self):  # noqa: N802
        url = urllib.parse.urlsplit(self.path)
        query = {k.lower(): v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.server.queries.append({"path": url.path, **query})
        if self.server.mode == "garbage":
            return self._answer(200, "text/html", b"<html><body>GLIMS is down for maintenance")
        if url.path != "/geoserver/ows":
            return self._answer(404, "text/plain", b"Not Found")
        for key, wanted in (("service", "WFS"), ("request", "GetFeature")):
            if query.get(key, "").lower() != wanted.lower():
                return self._refuse(key, f"{key}={query.get(key)!r}: expected {wanted}")
        if query.get("typename") != GLIMS_LAYER_NAME:
            return self._refuse("typeName", f"Feature type {query.get('typename')} unknown")
        if query.get("outputformat") not in ("application/json", "json"):
            return self._refuse("outputFormat", "only GeoJSON is served here")
        west, south, east, north = (float(v) for v in query["bbox"].split(","))
        box = shapely.box(west, south, east, north)
        features = [
            f for f in self.server.features if shapely.geometry.shape(f["geometry"]).intersects(box)
        ][: int(query.get("maxfeatures", 1000))]
        body = {
            "type": "FeatureCollection",
            "features": features,
            "totalFeatures": len(features),
            "numberMatched": len(features),
            "numberReturned": len(features),
            "timeStamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4326"}},
        }
        self.server.answers.append(len(features))
        return self._answer(200, "application/json;charset=UTF-8", json.dumps(body).encode())

    def _refuse(self, locator: str, text: str) -> None:
        report = _EXCEPTION_REPORT.format(locator=locator, text=text).encode()
        self._answer(400, "application/xml", report)

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def glims_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GlimsHandler)
    server.features = _glims_features()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def glims(glims_server):
    """``(url, server)``: the stand-in's WFS URL; its ``queries`` and ``answers`` start empty."""
    glims_server.queries, glims_server.answers, glims_server.mode = [], [], "wfs"
    return f"http://127.0.0.1:{glims_server.server_address[1]}/geoserver/ows", glims_server


def _inside(feature: dict) -> tuple[float, float]:
    """``(lat, lon)`` of a point inside a drawn feature, as a click sends it."""
    point = shapely.geometry.shape(feature["geometry"]).representative_point()
    return point.y, point.x


def test_click_off_the_outlines_asks_glims(glims):
    url, server = glims
    state = MapState(CATALOG, glims_url=url, multiple=True)
    assert state.glims  # no outline file: GLIMS gives the glaciers
    assert state.click_map(type="mousemove", coordinates=[LAT, LON]) is None
    assert server.queries == []

    glacier = state.click_map(type="click", coordinates=[LAT, LON])
    assert isinstance(glacier, Glacier)
    assert glacier.glims_id == GLIMS_ID and glacier.rgi_id is None and glacier.crs == "EPSG:4326"
    # the newest analysis: the RGI7 outline itself, not the older, smaller one
    assert glacier.outline.equals_exact(_outline_lonlat(), 1e-9)
    assert glacier.attributes["src_date"] == "2015-09-30T00:00:00"
    assert glacier.cube_url == state.cube.zarr_url and state.cube.name == GLACIER_CUBE_NAME
    assert f"Glacier {GLIMS_ID} from GLIMS, 10.16 km²" in state.message

    # What GLIMS was asked: one WFS GetFeature of the outline layer, GeoJSON, a box around the
    # point (lon/lat order, ±0.05°)
    (query,) = server.queries
    assert query["path"] == "/geoserver/ows"
    assert (query["service"], query["version"], query["request"]) == ("WFS", "1.0.0", "GetFeature")
    assert query["typename"] == GLIMS_LAYER_NAME
    assert query["outputformat"] == "application/json"
    west, south, east, north = (float(v) for v in query["bbox"].split(","))
    assert ((west + east) / 2, (south + north) / 2) == pytest.approx((LON, LAT))
    assert (east - west, north - south) == pytest.approx((0.1, 0.1))
    assert server.answers == [2]  # both analyses meet the box

    # The outline is drawn now: a click inside it is its layer's, and asks GLIMS nothing.
    (drawn,) = state.glacier_collection()["features"]
    assert drawn["properties"]["glims_id"] == GLIMS_ID
    assert drawn["properties"][OUTLINE_ORIGIN] == "GLIMS" and drawn["properties"]["rgi_id"] is None
    assert state.click_map(type="click", coordinates=list(_inside(drawn))) is None
    # A second click on it deselects it, a third selects it again; GLIMS is asked once.
    assert state.click_glacier(feature=drawn, coordinates=[LAT, LON]) is None
    assert state.glaciers == [] and state.cubes == []
    again = state.click_glacier(feature=drawn, coordinates=[LAT, LON])
    assert again.glims_id == GLIMS_ID and state.glaciers == [again]
    assert len(server.queries) == 1
    assert state.select_glacier(GLIMS_ID) is again and state.glaciers == [again]
    assert state.clicks == [(LON, LAT)]
    json.dumps(state.glacier_collection())
    json.dumps(state.selected_glacier_collection())


def test_glims_empty_refused_garbage_and_unreachable(glims):
    url, server = glims
    state = MapState(False, glims_url=url)
    with pytest.raises(
        EmptySelectionError, match=r"GLIMS holds no glacier within 0.05° of \(lon=96.5, lat=30.5\)"
    ):
        state.click_map(type="click", coordinates=[30.5, 96.5])
    assert server.answers == [0]  # an empty FeatureCollection
    with pytest.raises(
        EmptySelectionError,
        match=r"no GLIMS glacier outline contains \(lon=96, lat=29.93\) \(2 outlines nearby\)",
    ):
        state.click_map(type="click", coordinates=[29.93, 96.0])
    with pytest.raises(
        DataAccessError,
        match=r"answered HTTP 400 to the query for layer 'GLIMS:nope' \(Feature type "
        r"GLIMS:nope unknown\); check url= and layer=",
    ):
        fetch_glims_outline(LON, LAT, url=url, layer="GLIMS:nope")
    server.mode = "garbage"
    with pytest.raises(DataAccessError, match=r"did not answer GeoJSON .*down for maintenance"):
        state.click_map(type="click", coordinates=[LAT, LON])
    assert state.glaciers == [] and state.outlines == []  # nothing half-selected
    unreachable = MapState(False, glims_url=f"http://127.0.0.1:{_free_port()}/geoserver/ows")
    with pytest.raises(
        DataAccessError, match=r"could not reach the GLIMS service at 'http://127.0.0.1:.*"
    ):
        unreachable.click_map(type="click", coordinates=[LAT, LON])


def test_glims_url_from_the_environment(glims, monkeypatch):
    url, server = glims
    monkeypatch.setenv(GLIMS_URL_ENV, url)
    glacier = MapState(False).click_map(type="click", coordinates=[LAT, LON])
    assert glacier.glims_id == GLIMS_ID and len(server.queries) == 1


def test_outline_file_first_glims_when_allowed(glims):
    url, server = glims
    state = MapState(CATALOG, HEF_RGI7, glims_url=url)
    assert not state.glims  # an outline file is given: clicks off its outlines do nothing
    assert state.click_map(type="click", coordinates=[LAT, LON]) is None
    assert server.queries == [] and state.glaciers == []

    state = MapState(CATALOG, HEF_RGI7, glims=True, glims_url=url, multiple=True)
    hef_feature = _feature(state, HEF_RGI7_ID)
    # inside the file's outline: the file's glacier (its layer's click), GLIMS is not asked
    assert state.click_map(type="click", coordinates=list(_inside(hef_feature))) is None
    hef = state.click_glacier(feature=hef_feature, coordinates=list(_inside(hef_feature)))
    assert hef.rgi_id == HEF_RGI7_ID and server.queries == []
    # elsewhere: GLIMS
    other = state.click_map(type="click", coordinates=[LAT, LON])
    assert other.glims_id == GLIMS_ID and len(server.queries) == 1
    assert [g.rgi_id or g.glims_id for g in state.glaciers] == [HEF_RGI7_ID, GLIMS_ID]
    origins = [f["properties"][OUTLINE_ORIGIN] for f in state.glacier_collection()["features"]]
    assert origins == ["file", "GLIMS"]


# --- points ---


@pytest.fixture(scope="module")
def glacier_cube():
    return xr_itslive.open_cube(GLACIER_CUBE, ["v"])


def test_point_click_gives_a_glacier_point(glacier_cube):
    state = MapState(CATALOG, OUTLINE, data=glacier_cube, multiple=True)
    # Glacier mode: a click on the outline is the outline layer's.
    assert state.click_map(type="click", coordinates=[LAT, LON]) is None
    # A right click picks a point in any mode.
    point = state.click_map(type="contextmenu", coordinates=[LAT, LON])
    assert isinstance(point, GlacierPoint) and state.points == [point] and state.point is point
    assert point.label == f"point 1: {RGI_ID}, lat 29.9150, lon 95.9700"
    assert point.label in state.message
    assert point.rgi_id == RGI_ID and point.glacier.rgi_id == RGI_ID
    assert point.cube_url == find_cubes(point=(LON, LAT), catalog=CATALOG)[0].zarr_url
    # its series: the nearest pixel's; its window: the 3×3 pixels around it
    expected = point_series(glacier_cube, LON, LAT)
    assert point.series.v.dims == ("mid_date",) and point.offset_m == pytest.approx(49.9, abs=0.1)
    np.testing.assert_array_equal(point.series.v.values, expected.v.values)
    around = point.cube_around_point
    assert around.v.dims == ("mid_date", "y", "x")
    assert (around.sizes["y"], around.sizes["x"]) == (3, 3)
    np.testing.assert_array_equal(around.v.values, window(glacier_cube, LON, LAT, size=3).v.values)
    np.testing.assert_array_equal(around.v.isel(y=1, x=1).values, point.series.v.values)
    assert "label='point 1: " in repr(point)

    # Point mode: a left click anywhere (the glacier included) picks a point.
    state.mode = "point"
    # the same pixel again (its centre): the same point, no duplicate
    from pyproj import Transformer

    x, y = float(point.series.x), float(point.series.y)
    centre_lon, centre_lat = Transformer.from_crs(32646, 4326, always_xy=True).transform(x, y)
    same = state.click_map(type="click", coordinates=[centre_lat, centre_lon])
    assert same is point and len(state.points) == 1 and "is already selected" in state.message
    other = state.click_map(type="click", coordinates=[29.92, 95.96])
    assert other.label == f"point 2: {RGI_ID}, lat 29.9200, lon 95.9600"
    assert state.points == [point, other]
    assert state.clicks == [(LON, LAT), (95.96, 29.92)]
    drawn = state.selected_point_collection()["features"]
    assert [f["geometry"]["coordinates"] for f in drawn] == [[LON, LAT], [95.96, 29.92]]
    assert [f["properties"]["label"] for f in drawn] == [point.label, other.label]
    json.dumps(state.selected_point_collection())

    state.deselect_point(point.label)
    assert state.points == [other] and state.clicks == [(95.96, 29.92)]
    with pytest.raises(EmptySelectionError, match=r"'point 9' is not a selected point"):
        state.deselect_point("point 9")
    # A point picked again after its removal is a new one.
    assert state.select_point(LON, LAT).label.startswith("point 3: ")


def test_point_without_data_and_single_selection(glacier_cube):
    state = MapState(CATALOG, OUTLINE, mode="point")
    assert state.message.startswith("Click the map to pick a point")
    first = state.select_point(LON, LAT)
    # no opened cube: the point knows its cube and loads on demand
    assert first.series is None and first.cube_around_point is None
    assert first.cube_url is not None and "point.load() reads its cube" in state.message
    loaded = first.load(glacier_cube)
    assert loaded.series.v.dims == ("mid_date",) and loaded.cube_around_point.sizes["x"] == 3
    assert loaded.label == first.label
    second = state.select_point(95.96, 29.92)
    assert state.points == [second]  # one point at a time without multiple=True
    assert state.click_map(type="click", coordinates=[29.92, 95.96]) is second
    # off every outline and without a catalog: only the place
    bare = MapState(False, OUTLINE).select_point(96.5, 30.5)
    assert (bare.rgi_id, bare.glacier, bare.cube_url) == (None, None, None)
    assert bare.label == "point 1: lat 30.5000, lon 96.5000"
    with pytest.raises(InvalidParameterError, match=r"mode='points' is not a mode"):
        MapState(False, OUTLINE, mode="points")
    with pytest.raises(InvalidParameterError, match=r"data= takes opened cubes .* got int"):
        MapState(False, OUTLINE, data=[1])
    with pytest.raises(InvalidParameterError, match=r"\(lon=29.915, lat=95.97\) is not"):
        state.select_point(LAT, LON)


@pytest.mark.timeout(120)
def test_point_opens_its_cube_on_s3(s3_glacier_cube, glacier_cube):
    # The catalog's cube lies on S3 (moto, today's prefix): open_cubes=True reads it lazily.
    state = MapState(CATALOG, OUTLINE, open_cubes=True, multiple=True)
    point = state.select_point(LON, LAT)
    other = state.select_point(95.96, 29.92)
    assert len(state._opened) == 1  # the cube is opened once
    for picked, (lon, lat) in ((point, (LON, LAT)), (other, (95.96, 29.92))):
        some = {"mid_date": slice(0, 3000)}
        np.testing.assert_array_equal(
            picked.cube_around_point.v.isel(some).values,
            window(glacier_cube, lon, lat, size=3).v.isel(some).values,
        )
        assert picked.series.sizes["mid_date"] == glacier_cube.sizes["mid_date"]


# --- centerlines ---


def test_centerlines_of_the_selected_glaciers():
    state = MapState(CATALOG, [BALTORO, HEF_RGI7], centerlines=CENTERLINES, multiple=True)
    assert state.centerline is None and state.centerlines == []
    baltoro = state.click_glacier(feature=_feature(state, "BALTORO"))
    line = state.centerline
    assert isinstance(line, GlacierCenterline) and state.centerlines == [line]
    expected = GlacierCenterline.from_file(CENTERLINES, glacier=baltoro)
    assert line.line.equals(expected.line)
    assert line.line.equals(main_centerline(CENTERLINES).geometry.iloc[0])
    assert (line.rgi_id, line.glims_id) == ("BALTORO", "G076457E35734N")
    assert line.cube_url == baltoro.cube_url is not None
    assert "centerline 63.2 km" in state.message
    (drawn,) = state.selected_centerline_collection()["features"]
    assert shapely.geometry.shape(drawn["geometry"]).equals_exact(line.line, 1e-9)
    json.dumps(state.selected_centerline_collection())

    hef = state.click_glacier(feature=_feature(state, HEF_RGI7_ID))
    assert state.centerline is None and state.centerlines == [line]  # OGGM's file: Baltoro only
    assert "no centerline in the map's centerline files" in state.message
    assert state.centerline_of(baltoro) is line
    with pytest.raises(
        EmptySelectionError,
        match=rf"no centerline of \[.*centerlines_baltoro_wgs84.shp'\] belongs to '{HEF_RGI7_ID}'",
    ):
        state.centerline_of(hef)
    state.click_glacier(feature=_feature(state, "BALTORO"))  # deselect
    assert state.centerlines == [] and state.selected_centerline_collection()["features"] == []
    with pytest.raises(InvalidParameterError, match=r"no centerline files; build it with"):
        MapState(False, HEF_RGI7).centerline_of(hef)


# --- several selections ---


def test_several_selections_and_their_clicks():
    state = MapState(CATALOG, [HEF_RGI7, COLUMBIA], multiple=True)
    hef_feature, columbia_feature = _feature(state, HEF_RGI7_ID), _feature(state, "RGI60-01.10689")
    on_hef, on_columbia = _inside(hef_feature), _inside(columbia_feature)
    hef = state.click_glacier(feature=hef_feature, coordinates=list(on_hef))
    columbia = state.click_glacier(feature=columbia_feature, coordinates=list(on_columbia))
    hef_cube, columbia_cube = state.cubes
    # the cube under Hintereisferner again, the same place again: nothing new
    assert state.click_cube(coordinates=list(on_hef)) is hef_cube
    point = state.select_point(on_hef[1], on_hef[0])
    assert state.select_point(on_hef[1], on_hef[0]) is point
    assert state.click_glacier(feature=columbia_feature) is None  # a second click deselects
    columbia = state.click_glacier(feature=columbia_feature, coordinates=list(on_columbia))
    assert state.glaciers == [hef, columbia] and state.cubes == [hef_cube, columbia_cube]
    assert state.points == [point] and point.rgi_id == HEF_RGI7_ID
    hef_click, columbia_click = (on_hef[1], on_hef[0]), (on_columbia[1], on_columbia[0])
    assert state.clicks == [hef_click, columbia_click]
    # Hintereisferner deselected (its cube with it): its click stays for the point on it.
    state.click_glacier(feature=hef_feature)
    assert state.cubes == [columbia_cube]
    assert state.clicks == [hef_click, columbia_click]
    state.deselect_point(point)
    assert state.clicks == [columbia_click]
    assert "glaciers=['RGI60-01.10689']" in repr(state)
    state.clear()
    assert (state.glaciers, state.cubes, state.points, state.clicks) == ([], [], [], [])


# --- the ipyleaflet widget (no browser) ---

ipyleaflet = pytest.importorskip("ipyleaflet", reason="the widget extra is not installed")


@pytest.fixture
def glacier_map():
    from xr_itslive.widget import GlacierMap

    return GlacierMap(catalog=CATALOG, outlines=OUTLINE, basemap="blank")


def test_map_layers_and_basemaps(glacier_map):
    from xr_itslive.widget import GlacierMap, make_basemap

    base = glacier_map.map.layers[0]
    assert isinstance(base, ipyleaflet.TileLayer) and base.base
    assert base.url.startswith("data:image/png;base64,")
    names = [layer.name for layer in glacier_map.map.layers[1:]]
    assert names == ["ITS_LIVE cubes", "selected cube", "RGI outlines", "selected glaciers"]
    assert glacier_map.glacier_layer.data["features"][0]["properties"]["rgi_id"] == RGI_ID
    (south, west), (north, east) = glacier_map.state.bounds()
    assert south <= glacier_map.map.center[0] <= north and west <= glacier_map.map.center[1] <= east

    osm = GlacierMap(catalog=False, outlines=OUTLINE)
    assert "openstreetmap" in osm.map.layers[0].url
    custom = make_basemap("https://tiles.example/{z}/{x}/{y}.png")
    assert custom.url == "https://tiles.example/{z}/{x}/{y}.png" and custom.base
    with pytest.raises(InvalidParameterError, match=r"basemap=None is not a basemap.*'blank'"):
        GlacierMap(catalog=False, outlines=OUTLINE, basemap=None)


def test_map_click_through_ipyleaflet_messages(glacier_map):
    events = []
    glacier_map.on_select(lambda m: events.append(m.glacier))
    feature = glacier_map.glacier_layer.data["features"][0]  # as drawn, "style" included
    # The message the browser sends on a click, handled by ipyleaflet's own dispatcher.
    message = {
        "event": "click",
        "feature": feature,
        "properties": feature["properties"],
        "id": None,
        "coordinates": [29.92, 95.97],
    }
    glacier_map.glacier_layer._handle_mouse_events(None, message, [])
    assert isinstance(glacier_map.glacier, Glacier) and glacier_map.glacier.rgi_id == RGI_ID
    assert glacier_map.cube.name == GLACIER_CUBE_NAME
    assert events == [glacier_map.glacier]
    assert RGI_ID in glacier_map.label.value and GLACIER_CUBE_NAME in glacier_map.label.value
    highlight = glacier_map.selected_glacier_layer.data["features"]
    assert [f["properties"]["rgi_id"] for f in highlight] == [RGI_ID]
    assert len(glacier_map.selected_cube_layer.data["features"]) == 1

    # A click on the highlight deselects.
    selected = glacier_map.selected_glacier_layer.data["features"][0]
    glacier_map.selected_glacier_layer._handle_mouse_events(
        None, {"event": "click", "feature": selected, "properties": selected["properties"]}, []
    )
    assert glacier_map.glacier is None and glacier_map.cubes == []
    assert glacier_map.selected_glacier_layer.data["features"] == []
    assert glacier_map.label.value.startswith("Click a glacier")

    # A cube click.
    cube = glacier_map.cube_layer.data["features"][0]
    glacier_map.cube_layer._handle_mouse_events(
        None, {"event": "click", "feature": cube, "properties": cube["properties"]}, []
    )
    assert glacier_map.cube.name == cube["properties"]["name"]
    assert cube["properties"]["name"] in glacier_map.label.value


def test_map_click_errors_show_in_label(glacier_map):
    glacier_map._on_glacier_click(event="click", feature={"properties": {"rgi_id": "x"}})
    assert glacier_map.label.value.startswith("InvalidParameterError: the clicked feature lacks")
    assert glacier_map.glacier is None


def test_map_displays_as_widget(glacier_map):
    bundle = glacier_map._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    model_id = bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
    assert model_id == glacier_map.widget.model_id
    assert "xr-itslive-selection" in glacier_map.label._dom_classes


def test_missing_ipyleaflet_names_the_extra(monkeypatch):
    from xr_itslive.widget import GlacierMap

    monkeypatch.setitem(sys.modules, "ipyleaflet", None)  # makes `import ipyleaflet` fail
    with pytest.raises(OptionalDependencyError, match=r"pip install 'xr_itslive\[widget\]'"):
        GlacierMap(catalog=False, outlines=OUTLINE)


def test_package_import_does_not_load_the_widget():
    code = (
        "import sys, xr_itslive; "
        "print(sorted(m for m in ('xr_itslive.widget', 'ipyleaflet', 'ipywidgets') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def _map_click(glacier_map, lat: float, lon: float, kind: str = "click") -> None:
    """The message the browser sends for a click on the map, through ipyleaflet's dispatcher."""
    message = {"event": "interaction", "type": kind, "coordinates": [lat, lon], "location": None}
    glacier_map.map._handle_leaflet_event(None, message, [])


def _layer_click(layer, feature: dict, lat: float, lon: float) -> None:
    message = {
        "event": "click",
        "feature": feature,
        "properties": feature["properties"],
        "id": None,
        "coordinates": [lat, lon],
    }
    layer._handle_mouse_events(None, message, [])


def test_map_glims_and_point_mode(glims, glacier_cube):
    from xr_itslive.widget import GlacierMap

    url, server = glims
    m = GlacierMap(
        catalog=CATALOG, basemap="blank", glims_url=url, data=glacier_cube, multiple=True
    )
    assert m.mode == "glacier" and m.mode_buttons.value == "glacier"
    assert m.glacier_layer.data["features"] == []  # no outline file
    _map_click(m, LAT, LON, "mousemove")
    assert server.queries == []

    # A click on the base map: GLIMS's glacier, drawn and highlighted.
    _map_click(m, LAT, LON)
    assert m.glacier.glims_id == GLIMS_ID and len(server.queries) == 1
    assert f"Glacier {GLIMS_ID} from GLIMS" in m.label.value
    (drawn,) = m.glacier_layer.data["features"]
    assert drawn["properties"]["glims_id"] == GLIMS_ID
    assert len(m.selected_glacier_layer.data["features"]) == 1
    # Leaflet gives a click on the drawn outline to its layer, then to the map: one toggle.
    _layer_click(m.glacier_layer, drawn, LAT, LON)
    _map_click(m, LAT, LON)
    assert m.glaciers == [] and len(server.queries) == 1
    assert m.selected_glacier_layer.data["features"] == []

    # Point mode, as the buttons set it: the outline's click is ignored, the map's picks.
    m.mode_buttons.value = "point"
    assert m.mode == "point" and m.label.value.startswith("Click the map to pick a point")
    _layer_click(m.glacier_layer, drawn, LAT, LON)
    _map_click(m, LAT, LON)
    assert m.glaciers == []
    assert m.point.label == f"point 1: {GLIMS_ID}, lat 29.9150, lon 95.9700"
    assert m.point.series.v.dims == ("mid_date",) and m.point.cube_around_point.sizes["x"] == 3
    assert m.point.label in m.label.value
    assert m.point_layer in m.map.layers
    assert [f["geometry"]["coordinates"] for f in m.point_layer.data["features"]] == [[LON, LAT]]
    _map_click(m, LAT, LON)  # a double click: no second point
    _map_click(m, 29.92, 95.96, "contextmenu")
    assert [p.label.split(":")[0] for p in m.points] == ["point 1", "point 2"]
    assert m.clicks == [(LON, LAT), (95.96, 29.92)]

    # Back to glacier mode (by the property: the buttons follow); a garbage answer shows.
    m.mode = "glacier"
    assert m.mode_buttons.value == "glacier"
    server.mode = "garbage"
    _map_click(m, 30.5, 96.5)
    assert m.label.value.startswith("DataAccessError: the GLIMS service at")
    m.clear()
    assert m.points == [] and m.point_layer.data["features"] == []


def test_map_centerlines():
    from xr_itslive.widget import GlacierMap

    m = GlacierMap(catalog=False, outlines=BALTORO, centerlines=CENTERLINES, basemap="blank")
    assert not m.state.glims and m.centerline_layer in m.map.layers
    feature = m.glacier_layer.data["features"][0]
    _layer_click(m.glacier_layer, feature, *_inside(feature))
    assert m.glacier.rgi_id == "BALTORO"
    assert isinstance(m.centerline, GlacierCenterline) and m.centerlines == [m.centerline]
    assert m.centerline.glims_id == "G076457E35734N"
    (drawn,) = m.centerline_layer.data["features"]
    assert shapely.geometry.shape(drawn["geometry"]).equals_exact(
        main_centerline(CENTERLINES).geometry.iloc[0], 1e-9
    )
    assert "centerline 63.2 km" in m.label.value
    assert m.clicks == [tuple(reversed(_inside(feature)))]
    m.clear()
    assert m.centerline is None and m.centerline_layer.data["features"] == []


# --- point mode in a real browser (Voilà + Chromium, as tests/test_widget_browser.py) ---

from test_widget_browser import (  # noqa: E402
    _CLICK_POINT_JS,
    CHROMIUM,
    CHROMIUM_ARGS,
    RENDER_MS,
    SELECT_MS,
    voila_url,  # noqa: F401  (the fixture)
)

_LABEL_HAS = "text => document.querySelector('.xr-itslive-selection')?.innerText.includes(text)"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is absent")
@pytest.mark.timeout(120)
def test_point_mode_in_chromium(voila_url, tmp_path):  # noqa: F811
    """The mode buttons, a click in point mode on the outline (the layer's click ignored, the
    map's taken), a right-click, and glacier mode again, in the page the docs serve."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir=str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1100, "height": 800},
        )
        try:
            page = context.new_page()
            page.goto(voila_url, wait_until="domcontentloaded")
            page.wait_for_selector("path.xr-itslive-glacier", timeout=RENDER_MS)
            page.locator(".xr-itslive-mode button", has_text="point").click()
            page.wait_for_function(_LABEL_HAS, arg="pick a point", timeout=SELECT_MS)
            where = page.evaluate(_CLICK_POINT_JS)
            assert where is not None, "no point of the glacier outline is clickable on screen"
            page.mouse.click(*where)
            page.wait_for_function(_LABEL_HAS, arg=f"point 1: {RGI_ID}", timeout=SELECT_MS)
            page.wait_for_selector("path.xr-itslive-point", timeout=SELECT_MS)
            # the outline's own click did nothing in point mode: no glacier highlighted
            assert page.locator("path.xr-itslive-selected-glacier").count() == 0
            # glacier mode again; a right-click still picks a point
            page.locator(".xr-itslive-mode button", has_text="glacier").click()
            page.wait_for_timeout(300)
            page.mouse.click(*where)
            page.wait_for_selector("path.xr-itslive-selected-glacier", timeout=SELECT_MS)
            page.mouse.click(where[0] + 5, where[1] + 5, button="right")
            page.wait_for_function(_LABEL_HAS, arg="point 2: ", timeout=SELECT_MS)
            text = page.locator(".xr-itslive-selection").inner_text()
            # the point marker is drawn above the highlighted outline
            pane = page.evaluate(
                "() => document.querySelector('path.xr-itslive-point')"
                ".closest('.leaflet-pane').className"
            )
        finally:
            context.close()
    assert f"Glacier {RGI_ID}, 10.16 km²" in text and f"Cube {GLACIER_CUBE_NAME}" in text
    assert "leaflet-marker-pane" in pane
