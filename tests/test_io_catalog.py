"""find_cubes / load_catalog / open_cube(lon=, lat=) on the real ITS_LIVE catalog."""

from __future__ import annotations

import functools
import http.server
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import shapely
from conftest import (
    GLACIER_CUBE,
    ITSLIVE_DATA,
    REPO,
    _free_port,
    make_public_bucket,
    requires_shared,
)
from pyproj import Transformer

import xr_itslive
from xr_itslive.errors import DataAccessError, EmptySelectionError, InvalidParameterError
from xr_itslive.io.catalog import Catalog, CubeEntry, find_cubes, load_catalog
from xr_itslive.io.download import CATALOG_ENV, cache_age, cache_path
from xr_itslive.io.open import open_cube_at

CATALOG = ITSLIVE_DATA / "catalog_v02.json"
GLACIER_CUBE_NAME = "ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr"
# A point on the glacier of the real glacier cube (RGI2000-v7.0-G-15-16257).
GLACIER_LON, GLACIER_LAT = 95.97, 29.915

pytestmark = requires_shared


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(CATALOG)


def _brute_force(catalog: Catalog, lon: np.ndarray, lat: np.ndarray) -> list[set[int]]:
    """For each point, the indices of every entry whose projected box covers it (no index)."""
    hits: list[set[int]] = [set() for _ in lon]
    by_epsg: dict[int, list[int]] = {}
    for i, entry in enumerate(catalog.entries):
        by_epsg.setdefault(entry.epsg, []).append(i)
    for epsg, indices in by_epsg.items():
        x, y = Transformer.from_crs("EPSG:4326", epsg, always_xy=True).transform(lon, lat)
        for i in indices:
            xmin, ymin, xmax, ymax = catalog.entries[i].box.bounds
            inside = (x >= xmin) & (x <= xmax) & (y >= ymin) & (y <= ymax)
            for k in np.flatnonzero(inside):
                hits[k].add(i)
    return hits


def test_catalog_reads_every_entry(catalog):
    raw = json.loads(CATALOG.read_text())
    assert len(catalog) == len(raw["features"])
    first = catalog[0]
    assert isinstance(first, CubeEntry)
    assert first.zarr_url == raw["features"][0]["properties"]["zarr_url"]
    assert first.s3_url == xr_itslive.to_s3_url(first.zarr_url)
    assert first.s3_url.startswith("s3://its-live-data/")
    assert first.epsg == raw["features"][0]["properties"]["epsg"]
    assert first.name in repr(first)


def test_point_on_the_glacier_finds_its_cube_first(catalog):
    entries = find_cubes(point=(GLACIER_LON, GLACIER_LAT), catalog=catalog)
    assert entries[0].name == GLACIER_CUBE_NAME
    # The lon/lat footprints of the neighbouring UTM zone overlap: both cubes cover the point.
    assert {e.epsg for e in entries} == {32646, 32647}
    for entry in entries:
        assert entry.contains(GLACIER_LON, GLACIER_LAT)
    # The first cube is the one of the real glacier cube (same CRS and grid).
    ds = xr_itslive.open_cube(GLACIER_CUBE, ["v"])
    xmin, ymin, xmax, ymax = entries[0].box.bounds
    assert ds.rio.crs.to_epsg() == entries[0].epsg
    assert xmin <= float(ds.x.min()) and float(ds.x.max()) <= xmax
    assert ymin <= float(ds.y.min()) and float(ds.y.max()) <= ymax


def test_index_agrees_with_brute_force_everywhere(catalog):
    """Points drawn inside random boxes (polar, UTM, near edges): the index misses none."""
    rng = np.random.default_rng(3)
    picks = rng.choice(len(catalog), size=150, replace=False)
    lon, lat = [], []
    for i in picks:
        entry = catalog[int(i)]
        xmin, ymin, xmax, ymax = entry.box.bounds
        # Half the points within 1 km of an edge, where overlaps and curvature matter.
        fx, fy = rng.uniform(0, 1, 2)
        if rng.uniform() < 0.5:
            fx = rng.choice([0.005, 0.995])
        x, y = xmin + fx * (xmax - xmin), ymin + fy * (ymax - ymin)
        lo, la = Transformer.from_crs(entry.epsg, 4326, always_xy=True).transform(x, y)
        lon.append(lo)
        lat.append(la)
    lon, lat = np.array(lon), np.array(lat)
    expected = _brute_force(catalog, lon, lat)
    for k in range(lon.size):
        found = find_cubes(point=(lon[k], lat[k]), catalog=catalog)
        got = {catalog.entries.index(e) for e in found}
        assert got == expected[k], (lon[k], lat[k])
        assert int(picks[k]) in got


def test_membership_is_the_projected_box_not_the_lonlat_footprint(catalog):
    """The catalog's lon/lat footprints differ from the boxes; the box decides."""
    in_footprint_not_box = in_box_not_footprint = None
    for entry in catalog.entries:
        ring = shapely.segmentize(entry.footprint.buffer(-0.001).exterior, 0.05)
        for lon, lat in ring.coords:
            if not entry.contains(lon, lat):
                in_footprint_not_box = (entry, lon, lat)
                break
        box_ring = shapely.segmentize(entry.box.buffer(-50).exterior, 2000)
        x, y = np.asarray(box_ring.coords).T
        lon, lat = Transformer.from_crs(entry.epsg, 4326, always_xy=True).transform(x, y)
        outside = ~shapely.contains_xy(entry.footprint, lon, lat)
        if outside.any():
            in_box_not_footprint = (entry, lon[outside][0], lat[outside][0])
        if in_footprint_not_box and in_box_not_footprint:
            break
    entry, lon, lat = in_footprint_not_box
    assert shapely.contains_xy(entry.footprint, lon, lat)
    assert entry not in find_cubes(point=(lon, lat), catalog=catalog, allow_empty=True)
    entry, lon, lat = in_box_not_footprint
    assert not shapely.contains_xy(entry.footprint, lon, lat)
    assert entry in find_cubes(point=(lon, lat), catalog=catalog)


def test_polar_and_projected_queries(catalog):
    # Greenland (EPSG:3413) and Antarctica (EPSG:3031)
    greenland = find_cubes(point=(-45.0, 75.0), catalog=catalog)
    assert greenland and all(e.epsg == 3413 for e in greenland)
    antarctica = find_cubes(point=(0.0, -75.0), catalog=catalog)
    assert antarctica and all(e.epsg == 3031 for e in antarctica)
    # the same point given in the cube's CRS
    x, y = Transformer.from_crs(4326, 32646, always_xy=True).transform(GLACIER_LON, GLACIER_LAT)
    projected = find_cubes(point=(x, y), crs="EPSG:32646", catalog=catalog)
    assert [e.name for e in projected] == [
        e.name for e in find_cubes(point=(GLACIER_LON, GLACIER_LAT), catalog=catalog)
    ]


def test_bbox_and_polygon_queries(catalog):
    bbox = (95.5, 29.5, 96.5, 30.5)
    by_bbox = find_cubes(bbox=bbox, catalog=catalog)
    names = {e.name for e in by_bbox}
    assert GLACIER_CUBE_NAME in names
    corners = [(95.5, 29.5), (96.5, 29.5), (95.5, 30.5), (96.5, 30.5)]
    for lon, lat in corners:  # every cube holding a corner meets the box
        for entry in find_cubes(point=(lon, lat), catalog=catalog):
            assert entry.name in names
    # the glacier outline (EPSG:32646 GeoDataFrame): best cube covers it whole
    gpd = pytest.importorskip("geopandas")
    outline = gpd.read_file(ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson")
    by_outline = find_cubes(geometry=outline, catalog=catalog)
    assert by_outline[0].name == GLACIER_CUBE_NAME
    assert by_outline[0].box.covers(outline.geometry.iloc[0])
    # the old keyword works for one release, with a warning naming the new one
    with pytest.warns(DeprecationWarning, match=r"find_cubes\(polygon=\.\.\.\).*geometry="):
        assert find_cubes(polygon=outline, catalog=catalog) == by_outline


def test_point_outside_every_cube(catalog):
    with pytest.raises(
        EmptySelectionError, match=r"no ITS_LIVE cube covers the point \(lon=0, lat=0\)"
    ):
        find_cubes(point=(0.0, 0.0), catalog=catalog)
    with pytest.raises(EmptySelectionError, match=r"The nearest cube is ITS_LIVE_vel_.*km away"):
        find_cubes(point=(0.0, 0.0), catalog=catalog)
    assert find_cubes(point=(0.0, 0.0), catalog=catalog, allow_empty=True) == []


def test_swapped_coordinates_are_named(catalog):
    # Hintereisferner (10.76 E, 46.80 N) given as (lat, lon): in the sea off Somalia.
    with pytest.raises(EmptySelectionError, match=r"did you swap lon and lat"):
        find_cubes(point=(46.80, 10.76), catalog=catalog)
    with pytest.raises(
        InvalidParameterError, match=r"\(lon=29.91, lat=95.97\) is not a lon/lat.*swap"
    ):
        find_cubes(point=(29.91, 95.97), catalog=catalog)


def test_a_crs_that_cannot_be_resolved_names_the_fix(catalog):
    with pytest.raises(
        InvalidParameterError,
        match=r"crs='EPSG:99999' is not a CRS that pyproj can resolve .*crs=\"EPSG:32646\"",
    ):
        find_cubes(point=(750_000.0, 3_350_000.0), crs="EPSG:99999", catalog=catalog)
    with pytest.raises(InvalidParameterError, match=r"crs='utm 46' is not a CRS"):
        catalog.find(bbox=(0.0, 0.0, 1.0, 1.0), crs="utm 46")
    found = find_cubes(point=(750_000.0, 3_350_000.0), crs=32646, catalog=catalog)
    assert found[0].name == GLACIER_CUBE_NAME


def test_query_arguments_are_checked(catalog):
    with pytest.raises(
        InvalidParameterError, match=r"exactly one of point=, bbox=, polygon=.*'point', 'bbox'"
    ):
        find_cubes(point=(1, 2), bbox=(0, 0, 1, 1), catalog=catalog)
    with pytest.raises(InvalidParameterError, match=r"xmin <= xmax"):
        find_cubes(bbox=(10, 0, 0, 1), catalog=catalog)
    with pytest.raises(InvalidParameterError, match=r"point must be a \(lon, lat\) pair.*'here'"):
        find_cubes(point="here", catalog=catalog)


def test_catalog_sources(tmp_path, monkeypatch):
    missing = tmp_path / "nope.json"
    with pytest.raises(DataAccessError, match=r"no catalog at .*nope.json.*does not exist"):
        load_catalog(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataAccessError, match=r"could not read the catalog .*broken.json"):
        load_catalog(broken)
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(DataAccessError, match=r"has no features"):
        load_catalog(empty)
    # the environment variable names the catalog when catalog=None
    monkeypatch.setenv(CATALOG_ENV, str(CATALOG))
    assert find_cubes(point=(GLACIER_LON, GLACIER_LAT))[0].name == GLACIER_CUBE_NAME


@pytest.fixture
def http_dir(tmp_path):
    """Serve a temporary folder over HTTP on 127.0.0.1; yields (folder, base URL, stop)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args, **kwargs: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stopped = []

    def stop():
        if not stopped:
            server.shutdown()
            server.server_close()
            stopped.append(True)

    yield served, f"http://127.0.0.1:{server.server_address[1]}", stop
    stop()


def test_download_then_cached_copy(http_dir, tmp_path, monkeypatch):
    served, base, stop = http_dir
    (served / "catalog_v02.json").write_bytes(CATALOG.read_bytes())
    cache = tmp_path / "cache"
    monkeypatch.setenv("XR_ITSLIVE_CACHE_DIR", str(cache))
    url = f"{base}/catalog_v02.json"
    first = load_catalog(url)
    assert len(first) == len(load_catalog(CATALOG))
    assert cache_path(url).parent == cache and cache_path(url).name.endswith("-catalog_v02.json")
    assert cache_path(url).read_bytes() == CATALOG.read_bytes()
    stop()  # the server is gone: the cached copy serves
    again = load_catalog(url)
    assert len(again) == len(first)
    with pytest.raises(DataAccessError, match=r"could not download the ITS_LIVE catalog"):
        load_catalog(url, cache=False, timeout=2, attempts=2)


def test_cached_catalog_says_how_old_it_is(http_dir, tmp_path, monkeypatch):
    served, base, stop = http_dir
    (served / "catalog_v02.json").write_bytes(CATALOG.read_bytes())
    cache = tmp_path / "cache"
    monkeypatch.setenv("XR_ITSLIVE_CACHE_DIR", str(cache))
    url = f"{base}/catalog_v02.json"
    fresh = load_catalog(url)
    assert fresh.source == url and fresh.age.total_seconds() < 60
    assert "retrieved just now" in repr(fresh)
    # a copy downloaded 40 days ago is still used, and says so
    old = time.time() - 40 * 86400
    os.utime(cache_path(url), (old, old))
    stop()
    stale = load_catalog(url)
    assert 39.9 < stale.age.total_seconds() / 86400 < 40.1
    assert "retrieved 40.0 days ago" in repr(stale)
    assert 39.9 < cache_age(cache_path(url)).total_seconds() / 86400 < 40.1


def test_two_urls_with_the_same_file_name_are_cached_apart(http_dir, tmp_path, monkeypatch):
    served, base, _ = http_dir
    # two catalogs named catalog_v02.json on one server: the real one, and a one-cube copy
    (served / "a").mkdir()
    (served / "b").mkdir()
    (served / "a" / "catalog_v02.json").write_bytes(CATALOG.read_bytes())
    geojson = json.loads(CATALOG.read_text())
    geojson["features"] = geojson["features"][:1]
    (served / "b" / "catalog_v02.json").write_text(json.dumps(geojson))
    monkeypatch.setenv("XR_ITSLIVE_CACHE_DIR", str(tmp_path / "cache"))
    a, b = f"{base}/a/catalog_v02.json", f"{base}/b/catalog_v02.json"
    assert cache_path(a) != cache_path(b)
    assert len(load_catalog(a)) == len(load_catalog(CATALOG))
    assert len(load_catalog(b)) == 1  # not the copy of a, cached under the same name
    assert len(load_catalog(a)) == len(load_catalog(CATALOG))
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [cache_path(a).name, cache_path(b).name]
    )


@pytest.mark.timeout(120)
def test_s3_catalog_is_downloaded_once_then_cached(s3_server, tmp_path, monkeypatch):
    client = make_public_bucket(s3_server, "catalog-test-bucket")
    client.upload_file(str(CATALOG), "catalog-test-bucket", "datacubes/catalog_v02.json")
    cache = tmp_path / "cache"
    monkeypatch.setenv("XR_ITSLIVE_CACHE_DIR", str(cache))
    url = "s3://catalog-test-bucket/datacubes/catalog_v02.json"
    first = load_catalog(url)
    assert len(first) == len(load_catalog(CATALOG)) and first.source == url
    assert cache_path(url).read_bytes() == CATALOG.read_bytes()
    client.delete_object(Bucket="catalog-test-bucket", Key="datacubes/catalog_v02.json")
    assert len(load_catalog(url)) == len(first)  # the cached copy, the object is gone
    with pytest.raises(DataAccessError, match=r"could not read the ITS_LIVE catalog 's3://"):
        load_catalog(url, cache=False)


def test_unreachable_catalog_url_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("XR_ITSLIVE_CACHE_DIR", str(tmp_path))
    url = f"http://127.0.0.1:{_free_port()}/catalog_v02.json"
    with pytest.raises(
        DataAccessError, match=r"after 2 tries .*pass catalog= a local copy of catalog_v02.json"
    ):
        load_catalog(url, timeout=2, attempts=2)


def test_nothing_is_fetched_at_import():
    code = (
        "import socket\n"
        "def refuse(*a, **k):\n"
        "    raise AssertionError('network used at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import xr_itslive, xr_itslive.io.catalog, xr_itslive.io.outlines, xr_itslive.geo.masks\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


# --- point -> cube on S3 (moto), through the catalog's legacy URL ---


@pytest.mark.timeout(120)
def test_open_cube_at_point_through_s3_and_legacy_prefix(s3_glacier_cube, catalog, tmp_path):
    # The real catalog names datacubes/v2/; the bucket (like the real one) holds the cube
    # only under datacubes/v2-updated-october2024/.
    entry = find_cubes(point=(GLACIER_LON, GLACIER_LAT), catalog=catalog)[0]
    assert "/datacubes/v2/" in entry.zarr_url
    assert s3_glacier_cube == entry.s3_url.replace(
        "/datacubes/v2/", "/datacubes/v2-updated-october2024/"
    )

    # A catalog holding only this entry, as a file: exercise the file path too.
    raw = json.loads(CATALOG.read_text())
    feature = next(f for f in raw["features"] if f["properties"]["zarr_url"] == entry.zarr_url)
    small = tmp_path / "catalog_small.json"
    small.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))

    ds = xr_itslive.open_cube(lon=GLACIER_LON, lat=GLACIER_LAT, variables=["v"], catalog=small)
    local = xr_itslive.open_cube(GLACIER_CUBE, ["v"])
    assert ds.attrs["catalog_url"] == entry.zarr_url
    assert dict(ds.sizes) == dict(local.sizes)
    window = {"mid_date": slice(0, 2000), "y": slice(10, 14), "x": slice(20, 24)}
    np.testing.assert_array_equal(ds.v.isel(window).values, local.v.isel(window).values)
    # open_cube_at directly, and the entry's own open()
    assert dict(open_cube_at(GLACIER_LON, GLACIER_LAT, ["v"], catalog=small).sizes) == dict(
        ds.sizes
    )
    assert dict(entry.open(["v"]).sizes) == dict(ds.sizes)


@pytest.mark.timeout(120)
def test_unreachable_s3_fails_clearly(catalog, monkeypatch):
    closed = f"http://127.0.0.1:{_free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", closed)
    bounded = {"config_kwargs": {"connect_timeout": 2, "retries": {"max_attempts": 2}}}
    with pytest.raises(
        DataAccessError,
        match=r"could not open the cube .* after bounded retries.*EndpointConnectionError",
    ):
        xr_itslive.open_cube(
            lon=GLACIER_LON, lat=GLACIER_LAT, catalog=catalog, storage_options=bounded
        )


def test_open_cube_point_arguments():
    with pytest.raises(InvalidParameterError, match=r"either source or lon=/lat=, not both"):
        xr_itslive.open_cube(GLACIER_CUBE, lon=GLACIER_LON, lat=GLACIER_LAT)
    with pytest.raises(InvalidParameterError, match=r"both lon= and lat=.*lat=None"):
        xr_itslive.open_cube(lon=GLACIER_LON, catalog=CATALOG)
