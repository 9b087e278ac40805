"""find_cubes through a real STAC API server on 127.0.0.1 (``rustac serve``, see conftest).

The server holds the real catalog's 3,086 cubes as today's STAC items (zarr asset with role
``data`` under ``datacubes/v2-updated-october2024/``, ``proj:code``, no ``geometry_epsg``). The
library searches it with its own client code (pystac-client); every query must give the same
cubes, in the same order, as the same query on the GeoJSON catalog.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import logging
import threading
import time

import numpy as np
import pytest
import shapely
from conftest import (
    ITSLIVE_DATA,
    REPO,
    STAC_BROKEN_COLLECTION,
    STAC_COLLECTION,
    TODAY_PREFIX,
    _free_port,
    requires_shared,
)
from pyproj import Transformer

from xr_itslive.errors import DataAccessError, EmptySelectionError
from xr_itslive.io.catalog import (
    DEFAULT_CATALOG_URL,
    TILE_SIZE,
    Catalog,
    CubeEntry,
    StacCatalog,
    find_cubes,
    load_catalog,
)
from xr_itslive.io.download import CACHE_ENV, CATALOG_ENV, cache_path
from xr_itslive.io.stac import DEFAULT_STAC_URL, is_stac_root

GEOJSON = ITSLIVE_DATA / "catalog_v02.json"
GLACIER_CUBE_NAME = "ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr"
GLACIER_LON, GLACIER_LAT = 95.97, 29.915
# Every unreachable-API error must name the offline fallback.
FALLBACK = r"pass catalog= a GeoJSON catalog file, e\.g\. a copy of catalog_v02\.json, or set "
FALLBACK += CATALOG_ENV

GEOJSON_TYPE = "application/geo+json"

pytestmark = requires_shared


@pytest.fixture(scope="module")
def geojson() -> Catalog:
    return load_catalog(GEOJSON)


def _names(entries) -> list[str]:
    return [entry.name for entry in entries]


def _to_lonlat(epsg: int, x: float, y: float) -> tuple[float, float]:
    return Transformer.from_crs(epsg, 4326, always_xy=True).transform(x, y)


def _edge_points() -> list[tuple[float, float]]:
    """Points on, just inside and just outside the glacier cube's edges and corners.

    Its west edge (x = 700 km in EPSG:32646) runs near the seam of UTM zones 46 and 47
    (96° E), where the neighbouring zone's cubes overlap it in lon/lat.
    """
    x0, y0, half = 750_000.0, 3_350_000.0, TILE_SIZE / 2
    points = [(GLACIER_LON, GLACIER_LAT), (96.0, GLACIER_LAT), (96.0, 29.5), (96.0, 30.4)]
    for dx, dy in [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)]:
        for offset in (-10.0, 0.0, 10.0):  # 10 m inside, on, 10 m outside
            x = x0 + dx * (half + offset) if dx else x0 + 1234.0
            y = y0 + dy * (half + offset) if dy else y0 - 4321.0
            points.append(_to_lonlat(32646, x, y))
    return points


def _random_points(geojson: Catalog, n: int = 40, seed: int = 5) -> list[tuple[float, float]]:
    """Points in random cubes of the whole catalog, half of them within 1 km of an edge."""
    rng = np.random.default_rng(seed)
    points = []
    for i in rng.choice(len(geojson), size=n, replace=False):
        entry = geojson[int(i)]
        xmin, ymin, xmax, ymax = entry.box.bounds
        fx, fy = rng.uniform(0, 1, 2)
        if rng.uniform() < 0.5:
            fx = rng.choice([0.005, 0.995])
        points.append(_to_lonlat(entry.epsg, xmin + fx * (xmax - xmin), ymin + fy * (ymax - ymin)))
    return points


def test_the_server_is_a_stac_api_and_items_are_todays_layout(stac_api):
    catalog = load_catalog(stac_api)
    assert isinstance(catalog, StacCatalog) and is_stac_root(stac_api)
    entry = catalog.find(point=(GLACIER_LON, GLACIER_LAT))[0]
    assert isinstance(entry, CubeEntry)
    assert entry.name == GLACIER_CUBE_NAME
    assert f"/{TODAY_PREFIX}N30E090/" in entry.zarr_url
    assert entry.s3_url == f"s3://its-live-data/{TODAY_PREFIX}N30E090/{GLACIER_CUBE_NAME}"
    assert entry.epsg == 32646 and entry.crs == "EPSG:32646"
    assert entry.box.bounds == (700_000.0, 3_300_000.0, 800_000.0, 3_400_000.0)
    assert entry.properties["stac_id"] == GLACIER_CUBE_NAME.removesuffix(".zarr")
    assert "geometry_epsg" not in entry.properties


def test_point_queries_match_the_geojson_catalog(stac_api, geojson):
    points = _edge_points() + _random_points(geojson)
    stac = load_catalog(stac_api)
    for lon, lat in points:
        expected = _names(find_cubes(point=(lon, lat), catalog=geojson, allow_empty=True))
        got = _names(find_cubes(point=(lon, lat), catalog=stac_api, allow_empty=True))
        assert got == expected, (lon, lat)
        assert _names(stac.find(point=(lon, lat), allow_empty=True)) == expected
    # the glacier point: both UTM zones' cubes, the glacier's own first
    both = _names(find_cubes(point=(GLACIER_LON, GLACIER_LAT), catalog=stac_api))
    assert both[0] == GLACIER_CUBE_NAME and {n.split("_")[3] for n in both} == {
        "EPSG32646",
        "EPSG32647",
    }
    # polar stereographic cubes, and a point given in the cube's own CRS
    for lon, lat in [(-45.0, 75.0), (0.0, -75.0), (-49.8, 69.2), (162.0, -77.5)]:
        assert _names(find_cubes(point=(lon, lat), catalog=stac_api)) == _names(
            find_cubes(point=(lon, lat), catalog=geojson)
        )
    x, y = Transformer.from_crs(4326, 32646, always_xy=True).transform(GLACIER_LON, GLACIER_LAT)
    assert _names(find_cubes(point=(x, y), crs="EPSG:32646", catalog=stac_api)) == both


def test_bbox_and_geometry_queries_match_the_geojson_catalog(stac_api, geojson):
    bboxes = [
        (95.5, 29.5, 96.5, 30.5),  # four cubes of two UTM zones
        (95.99, 29.9, 96.01, 29.93),  # astride the zone seam
        (86.8, 27.9, 87.0, 28.1),  # Everest
        (-50.0, 69.0, -49.5, 69.3),  # Jakobshavn (EPSG:3413)
    ]
    for bbox in bboxes:
        expected = _names(find_cubes(bbox=bbox, catalog=geojson))
        assert _names(find_cubes(bbox=bbox, catalog=stac_api)) == expected, bbox
    gpd = pytest.importorskip("geopandas")
    outline = gpd.read_file(ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson")  # EPSG:32646
    by_outline = _names(find_cubes(geometry=outline, catalog=stac_api))
    assert by_outline == _names(find_cubes(geometry=outline, catalog=geojson))
    assert by_outline[0] == GLACIER_CUBE_NAME
    lonlat_outline = outline.to_crs(4326).geometry.iloc[0]
    assert _names(find_cubes(geometry=lonlat_outline, catalog=stac_api)) == by_outline
    # a GeoJSON-like mapping, and a shape across four cubes
    square = shapely.Polygon([(95.8, 29.8), (96.2, 29.8), (96.2, 30.2), (95.8, 30.2)])
    mapping = shapely.geometry.mapping(square)
    assert _names(find_cubes(geometry=square, catalog=stac_api)) == _names(
        find_cubes(geometry=square, catalog=geojson)
    )
    geo_like = type("GeoLike", (), {"__geo_interface__": mapping})()
    assert _names(find_cubes(geometry=geo_like, catalog=stac_api)) == _names(
        find_cubes(geometry=square, catalog=geojson)
    )


def test_polygon_keyword_still_works_with_a_warning(stac_api, geojson):
    square = shapely.box(95.9, 29.9, 96.0, 30.0)
    with pytest.warns(DeprecationWarning, match=r"find_cubes\(polygon=\.\.\.\) is deprecated"):
        old = find_cubes(polygon=square, catalog=stac_api)
    assert _names(old) == _names(find_cubes(geometry=square, catalog=geojson))
    with pytest.warns(DeprecationWarning, match=r"pass geometry= instead"):
        assert _names(load_catalog(stac_api).find(polygon=square)) == _names(old)


def test_pagination_is_followed(stac_api, geojson, caplog):
    bbox = (95.5, 29.5, 96.5, 30.5)
    expected = _names(find_cubes(bbox=bbox, catalog=geojson))
    assert len(expected) >= 4
    caplog.set_level(logging.DEBUG, logger="pystac_client.stac_api_io")
    one_per_page = StacCatalog(stac_api, limit=1)
    assert _names(one_per_page.find(bbox=bbox)) == expected
    searches = [r for r in caplog.records if "/search" in r.getMessage()]
    # one request per item (page of 1), and one more that comes back empty or without a next
    assert len(searches) >= len(expected), [r.getMessage()[:120] for r in searches]


def test_the_whole_collection_once_then_local_queries(stac_api, geojson):
    catalog = StacCatalog(stac_api)
    assert catalog.retrieved is None and catalog.age is None  # live: nothing fetched yet
    assert len(catalog) == len(geojson)
    assert sorted(e.name for e in catalog) == sorted(e.name for e in geojson)
    assert catalog.age is not None and catalog.age.total_seconds() >= 0
    # from now on, queries give the very entries of the listing (what the map widget needs)
    found = catalog.find(point=(GLACIER_LON, GLACIER_LAT))
    assert all(any(e is listed for listed in catalog.entries) for e in found)
    assert _names(found) == _names(find_cubes(point=(GLACIER_LON, GLACIER_LAT), catalog=geojson))


def test_environment_variable_names_the_stac_api(stac_api, monkeypatch):
    monkeypatch.setenv(CATALOG_ENV, stac_api)
    assert find_cubes(point=(GLACIER_LON, GLACIER_LAT))[0].name == GLACIER_CUBE_NAME
    assert isinstance(load_catalog(), StacCatalog)


def test_default_is_the_public_stac_api(monkeypatch):
    """No catalog= and no variable: https://stac.itslive.cloud (offline: a fast, clear error)."""
    monkeypatch.delenv(CATALOG_ENV, raising=False)
    start = time.monotonic()
    try:
        catalog = load_catalog()
    except DataAccessError as err:
        assert DEFAULT_STAC_URL in str(err)
        assert "could not be reached" in str(err) or "did not answer" in str(err)
    else:
        assert isinstance(catalog, StacCatalog) and catalog.root == DEFAULT_STAC_URL
    assert time.monotonic() - start < 30


@pytest.mark.timeout(60)
def test_unreachable_stac_api_fails_fast_naming_the_fallback():
    closed = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(DataAccessError, match=rf"STAC API at '{closed}' could not be reached.*"):
        find_cubes(point=(GLACIER_LON, GLACIER_LAT), catalog=closed)
    assert time.monotonic() - start < 5
    with pytest.raises(DataAccessError, match=FALLBACK):
        load_catalog(closed, attempts=2)
    with pytest.raises(DataAccessError, match=r"ConnectionRefusedError.*2 tries"):
        load_catalog(closed, attempts=2)


@pytest.mark.timeout(60)
def test_unreachable_stac_api_names_the_cached_catalog(tmp_path, monkeypatch):
    closed = f"http://127.0.0.1:{_free_port()}"
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    # nothing cached yet: how to get a copy, and where it lands
    with pytest.raises(DataAccessError) as caught:
        load_catalog(closed, attempts=1)
    message = str(caught.value)
    assert f"No copy is cached in {str(cache)!r} yet" in message
    assert f"xr_itslive.load_catalog({DEFAULT_CATALOG_URL!r}) downloads and caches" in message
    # a cached copy (as load_catalog of that URL leaves it): its path, ready for catalog=
    cached = cache_path(DEFAULT_CATALOG_URL)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(GEOJSON.read_bytes())
    with pytest.raises(DataAccessError, match=FALLBACK) as caught:
        load_catalog(closed, attempts=1)
    message = str(caught.value)
    assert f"is at {str(cached)!r}: pass catalog={str(cached)!r}" in message
    assert "downloaded 0.0 days ago" in message
    found = find_cubes(point=(GLACIER_LON, GLACIER_LAT), catalog=str(cached))  # it works
    assert found[0].name == GLACIER_CUBE_NAME


class _Answers(http.server.BaseHTTPRequestHandler):
    """A real HTTP server standing in for a broken service: fixed answers by path."""

    answers: dict[str, tuple[str, bytes]] = {}

    def _answer(self) -> None:
        path = self.path.split("?", 1)[0]
        kind, body = self.answers.get(path, self.answers.get("*", ("text/plain", b"nope")))
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args, **kwargs) -> None:
        pass


@pytest.fixture
def answering_server():
    """Start a server answering ``answers`` ({path: (content type, body)}); yields a starter."""
    servers = []

    def start(answers: dict[str, tuple[str, bytes]]) -> str:
        handler = type("Handler", (_Answers,), {"answers": answers})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "answer",
    [
        ("text/html", b"<html><body>It works!</body></html>"),
        ("application/json", b'{"status": "ok", "version": 3}'),
    ],
    ids=["html", "json-not-stac"],
)
def test_a_server_answering_garbage(answering_server, answer):
    url = answering_server({"*": answer})
    with pytest.raises(
        DataAccessError, match=rf"the server at '{url}' did not answer as a STAC API \("
    ):
        find_cubes(point=(GLACIER_LON, GLACIER_LAT), catalog=url)


def test_a_stac_landing_page_with_a_garbage_search(answering_server):
    """The landing page and the collection are STAC; the search answers HTML."""
    answers: dict[str, tuple[str, bytes]] = {}
    url = answering_server(answers)  # the handler reads this table at request time
    landing = {
        "type": "Catalog",
        "stac_version": "1.1.0",
        "id": "broken",
        "description": "a landing page whose search is broken",
        "conformsTo": [
            "https://api.stacspec.org/v1.0.0/core",
            "https://api.stacspec.org/v1.0.0/item-search",
            "https://api.stacspec.org/v1.0.0/collections",
        ],
        "links": [
            {"rel": "self", "href": f"{url}/"},
            {"rel": "root", "href": f"{url}/"},
            {"rel": "data", "href": f"{url}/collections"},
            {"rel": "search", "href": f"{url}/search", "type": GEOJSON_TYPE, "method": "GET"},
            {"rel": "search", "href": f"{url}/search", "type": GEOJSON_TYPE, "method": "POST"},
        ],
    }
    collection = {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": STAC_COLLECTION,
        "description": "cubes",
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [[None, None]]},
        },
        "links": [],
    }
    answers["/"] = ("application/json", json.dumps(landing).encode())
    answers[f"/collections/{STAC_COLLECTION}"] = (
        "application/json",
        json.dumps(collection).encode(),
    )
    answers["/search"] = ("text/html", b"<html>502 Bad Gateway</html>")
    catalog = load_catalog(url)  # opening works: the landing page and collection are STAC
    with pytest.raises(DataAccessError, match=rf"the server at '{url}' did not answer as a STAC"):
        catalog.find(point=(GLACIER_LON, GLACIER_LAT))


def test_unknown_collection_is_named(stac_api):
    with pytest.raises(
        DataAccessError,
        match=r"has no collection 'velocity-cubes'; it has \['broken-cubes', 'itslive-cubes'\]",
    ):
        StacCatalog(stac_api, "velocity-cubes")


def test_item_without_a_zarr_asset_or_a_box(stac_api):
    broken = StacCatalog(stac_api, STAC_BROKEN_COLLECTION)
    with pytest.raises(
        DataAccessError,
        match=r"the STAC item 'no-zarr-asset' of .* has no zarr asset \(an asset with role 'data'"
        r" and an href ending in \.zarr\); its assets are \{'preview': \['data'\], 'thumbnail'",
    ):
        broken.find(point=(10.5, 10.5))
    with pytest.raises(
        DataAccessError, match=r"the STAC item 'no-box' of .* gives no projected box.*'cube.zarr'"
    ):
        broken.find(point=(20.5, 10.5))


def test_empty_result_says_where_it_looked(stac_api, geojson):
    with pytest.raises(
        EmptySelectionError,
        match=rf"no ITS_LIVE cube covers the point \(lon=0, lat=0\): searched the STAC API at "
        rf"{stac_api} \(collection 'itslive-cubes'\), where no item has a footprint near it",
    ):
        find_cubes(point=(0.0, 0.0), catalog=stac_api)
    assert find_cubes(point=(0.0, 0.0), catalog=stac_api, allow_empty=True) == []
    with pytest.raises(EmptySelectionError, match=r"did you swap lon and lat"):
        find_cubes(point=(46.80, 10.76), catalog=stac_api)
    # just outside the coverage, beside a cube: its item comes back, its box says no
    outside = None
    for entry in geojson:
        xmin, ymin, xmax, ymax = entry.box.bounds
        lon, lat = _to_lonlat(entry.epsg, xmax + 1000.0, (ymin + ymax) / 2)
        if not find_cubes(point=(lon, lat), catalog=geojson, allow_empty=True):
            outside = (lon, lat)
            break
    assert outside is not None
    with pytest.raises(
        EmptySelectionError, match=r"where \d+ items have a footprint near it, and none has a"
    ):
        find_cubes(point=outside, catalog=stac_api)
    # the GeoJSON catalog names its own source
    with pytest.raises(EmptySelectionError, match=r"of the catalog '.*catalog_v02\.json'"):
        find_cubes(point=(0.0, 0.0), catalog=geojson)


def _item(**overrides) -> dict:
    item = {
        "type": "Feature",
        "id": "ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[95.0, 29.7], [96.1, 29.7], [96.1, 30.7], [95.0, 30.7], [95.0, 29.7]]],
        },
        "properties": {"proj:code": "EPSG:32646"},
        "assets": {
            "a": {"href": "https://x/other.nc", "roles": ["data"]},
            "b": {
                "href": "https://its-live-data.s3.amazonaws.com/datacubes/v2-updated-october2024/"
                "N30E090/ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr/",
                "roles": ["metadata", "data"],
            },
        },
    }
    for key, value in overrides.items():
        if key == "properties":
            item["properties"] = value
        else:
            item[key] = value
    return item


def test_entry_from_stac_item_reads_every_form():
    by_name = CubeEntry.from_stac_item(_item())
    assert by_name.name == GLACIER_CUBE_NAME and by_name.epsg == 32646
    assert by_name.box.bounds == (700_000.0, 3_300_000.0, 800_000.0, 3_400_000.0)
    # proj:epsg (older projection extension), proj:bbox in 2-D and 3-D, proj:geometry
    assert CubeEntry.from_stac_item(_item(properties={"proj:epsg": 32646})).epsg == 32646
    narrow = [710_000, 3_310_000, 790_000, 3_390_000]
    for props in (
        {"proj:code": "EPSG:32646", "proj:bbox": narrow},
        {"proj:code": "EPSG:32646", "proj:bbox": narrow[:2] + [0] + narrow[2:] + [0]},
        {
            "proj:code": "EPSG:32646",
            "proj:geometry": shapely.geometry.mapping(shapely.box(*narrow)),
        },
    ):
        entry = CubeEntry.from_stac_item(_item(properties=props))
        assert entry.box.bounds == tuple(float(v) for v in narrow), props
    # no geometry: the footprint is the box in lon/lat
    bare = CubeEntry.from_stac_item(_item(geometry=None))
    assert bare.footprint.contains(shapely.Point(GLACIER_LON, GLACIER_LAT))
    with pytest.raises(DataAccessError, match=r"STAC item 'x' of <memory> gives no CRS"):
        CubeEntry.from_stac_item(
            _item(
                id="x",
                properties={},
                assets={"d": {"href": "https://x/cube.zarr", "roles": ["data"]}},
            )
        )


def test_benchmark_runs_once():
    spec = importlib.util.spec_from_file_location(
        "bench_find_cubes", REPO / "benchmarks" / "bench_find_cubes.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.run(queries=3)
    assert figures["stac_median_ms"] > 0 and figures["geojson_median_ms"] > 0
    assert figures["same_cubes"]
