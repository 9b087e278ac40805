"""The glacier map's logic without a browser: the real catalog and RGI outlines, the handlers
called with the features the map draws (and through ipyleaflet's own message path)."""

from __future__ import annotations

import base64
import io
import json
import math
import subprocess
import sys

import pytest
import shapely
from conftest import ITSLIVE_DATA, REPO, SHARED_DATA, requires_shared

from xr_itslive import CubeEntry, Glacier, find_cubes
from xr_itslive.errors import EmptySelectionError, InvalidParameterError, OptionalDependencyError
from xr_itslive.widget import (
    CUBE_INDEX,
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
RGI_ID = "RGI2000-v7.0-G-15-16257"
GLACIER_CUBE_NAME = "ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr"

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
