"""open_cube on the real cubes: decoding, sorting, duplicates, CRS, S3 (moto)."""

import numpy as np
import pytest
import xarray as xr
from conftest import (
    FIXTURE_3X3,
    GLACIER_CUBE,
    make_public_bucket,
    raise_if_dask_computes,
    requires_shared,
    upload_tree,
)

import xr_itslive
from xr_itslive.errors import (
    DataAccessError,
    InvalidParameterError,
    MissingVariableError,
    NotAnITSLiveCubeError,
)
from xr_itslive.io.cube import demo_cube_path
from xr_itslive.io.urls import candidate_urls, to_s3_url

pytestmark = requires_shared


def test_real_glacier_cube_is_decoded_sorted_and_lazy():
    with raise_if_dask_computes(max_computes=1):  # the pair dates only, in one read
        cube = xr_itslive.open_cube(GLACIER_CUBE, variables=["vx", "vy"])
    raw = xr.open_zarr(GLACIER_CUBE, consolidated=True, zarr_format=2, mask_and_scale=False)
    assert cube.sizes == {"mid_date": 47892, "y": 37, "x": 40}
    assert cube["vx"].chunks is not None and len(cube["vx"].chunks[0]) == 1
    mid = cube["mid_date"].values
    assert np.all(np.diff(mid) >= np.timedelta64(0))  # sorted ...
    assert cube.indexes["mid_date"].has_duplicates  # ... duplicates kept as distinct pairs
    assert np.unique(cube["pair_id"].values).size == cube.sizes["mid_date"]
    assert cube["acquisition_date_img1"].dtype == np.dtype("datetime64[ns]")
    assert isinstance(cube["acquisition_date_img1"].data, np.ndarray)  # loaded, not dask
    assert cube.rio.crs.to_epsg() == 32646
    # int16 with missing_value -32767 → NaN; the same pair and pixel as in the raw store
    pid = 1234
    row = int(np.flatnonzero(cube["pair_id"].values == pid)[0])
    raw_vx = raw["vx"].isel(mid_date=pid).values
    got = cube["vx"].isel(mid_date=row).values
    np.testing.assert_array_equal(np.isnan(got), raw_vx == -32767)
    np.testing.assert_array_equal(got[raw_vx != -32767], raw_vx[raw_vx != -32767])
    assert set(cube.data_vars) == {"vx", "vy"}


def test_bundled_demo_subset_matches_the_fixture():
    demo = xr_itslive.open_cube(demo_cube_path(), variables=["vx"]).compute()
    fixture = xr_itslive.open_cube(FIXTURE_3X3, variables=["vx"]).compute()
    xr.testing.assert_equal(
        demo["vx"].reset_coords(drop=True), fixture["vx"].reset_coords(drop=True)
    )
    assert demo.rio.crs == fixture.rio.crs


def test_catalog_url_forms():
    url = "http://its-live-data.s3.amazonaws.com/datacubes/v2/N30E090/cube.zarr"
    assert to_s3_url(url) == "s3://its-live-data/datacubes/v2/N30E090/cube.zarr"
    assert candidate_urls(url) == [
        "s3://its-live-data/datacubes/v2/N30E090/cube.zarr",
        "s3://its-live-data/datacubes/v2-updated-october2024/N30E090/cube.zarr",
    ]
    assert to_s3_url("/local/cube.zarr") == "/local/cube.zarr"


def test_open_from_s3_anonymously(s3_server):
    client = make_public_bucket(s3_server, "fixture-bucket")
    upload_tree(client, FIXTURE_3X3, "fixture-bucket", "cubes/3x3.zarr")
    local = xr_itslive.open_cube(FIXTURE_3X3, variables=["vx", "vy"])
    for source in (
        "s3://fixture-bucket/cubes/3x3.zarr",
        "https://fixture-bucket.s3.amazonaws.com/cubes/3x3.zarr",  # catalog form, rewritten
    ):
        remote = xr_itslive.open_cube(source, variables=["vx", "vy"])
        xr.testing.assert_identical(remote.compute(), local.compute())
    result = xr_itslive.invert(remote, step=30).compute()
    assert np.isfinite(result["vx"]).any()


def test_missing_things_are_named():
    with pytest.raises(
        DataAccessError, match="no cube at '/no/such/cube.zarr': the path does not exist"
    ):
        xr_itslive.open_cube("/no/such/cube.zarr")
    with pytest.raises(MissingVariableError, match=r"variable 'speed' not found; the cube has \["):
        xr_itslive.open_cube(FIXTURE_3X3, variables=["vx", "speed"])
    with pytest.raises(NotAnITSLiveCubeError, match="no 'mid_date' dimension"):
        xr_itslive.decode_cube(xr.Dataset({"a": ("t", [1, 2])}))


COMPOSITE_KEY = (
    "composites/annual/v2-updated-september2025/N30E090/"
    "ITS_LIVE_velocity_EPSG32646_120m_X750000_Y3350000.zarr"
)


def test_composite_url_of_a_cube():
    name = "N30E090/ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr"
    for head in ("http://its-live-data.s3.amazonaws.com/", "s3://its-live-data/"):
        for prefix in ("datacubes/v2/", "datacubes/v2-updated-october2024/"):
            assert xr_itslive.composite_url(head + prefix + name) == head + COMPOSITE_KEY
    with pytest.raises(InvalidParameterError, match="not an ITS_LIVE datacube URL"):
        xr_itslive.composite_url("s3://bucket/some/other.zarr")


def test_open_composite_from_s3_by_the_cubes_url(s3_server, s3_glacier_cube, tmp_path):
    import boto3

    # a small store shaped like ITS_LIVE's annual composites: per year and climatology fields
    years = np.array(["2019-07-02", "2020-07-02"], dtype="datetime64[ns]")
    y, x = np.arange(3315787.5, 3315427.5, -120.0), np.arange(784252.5, 784612.5, 120.0)
    shape = (years.size, y.size, x.size)
    composite = xr.Dataset(
        {
            "v": (("time", "y", "x"), np.full(shape, 20.0, np.float32)),
            "v0": (("y", "x"), np.full(shape[1:], 19.0, np.float32)),
            "mapping": ((), 0, {"spatial_epsg": 32646}),
        },
        coords={"time": years, "y": y, "x": x},
    )
    path = tmp_path / "composite.zarr"
    composite.to_zarr(path, zarr_format=2, consolidated=True)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-west-2")
    upload_tree(client, path, "its-live-data", COMPOSITE_KEY)
    legacy = (
        "http://its-live-data.s3.amazonaws.com/datacubes/v2/N30E090/"
        "ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr"
    )
    opened = xr_itslive.open_composite(legacy, variables=["v", "v0"])
    assert opened["v"].chunks is not None  # lazy
    assert opened.rio.crs.to_epsg() == 32646
    assert opened.attrs["composite_url"].endswith(COMPOSITE_KEY)
    np.testing.assert_array_equal(opened["v0"].values, composite["v0"].values)
    with pytest.raises(MissingVariableError, match=r"variables \['vx_amp'\] not found"):
        xr_itslive.open_composite(legacy, variables=["vx_amp"])
    with pytest.raises(InvalidParameterError, match=r"either source or both lon= and lat="):
        xr_itslive.open_composite(legacy, lon=95.97, lat=29.9)


# --- chunking for the inversion: whole pixel columns, bounded tasks ------------------------


def _multichunk_cube(path, n_pairs=3_000, chunk_pairs=1_000, chunk=10, ny=40, nx=40):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from make_cube import make_cube

    make_cube(path, ny=ny, nx=nx, n_pairs=n_pairs, chunk_pairs=chunk_pairs, chunk=chunk,
              workers=1)  # fmt: skip
    return path


def test_open_cube_reads_whole_pixel_columns_from_several_mid_date_chunks(tmp_path):
    from xr_itslive.io.cube import TASK_BYTES

    path = _multichunk_cube(tmp_path / "cube.zarr")  # 3 stored chunks along mid_date
    ds = xr_itslive.open_cube(path, variables=["vx", "vy"])
    (pairs,), ys, xs = ds.vx.data.chunks
    assert pairs == 3_000  # one task holds every pair of its pixels
    assert ys[0] == 20 and xs[0] == 20  # 2 x 2 stored chunks: within budget, never split
    assert 3_000 * ys[0] * xs[0] * 4 <= TASK_BYTES
    layers = ds.vx.data.__dask_graph__().layers
    # reading is one task per output chunk, straight from the store (no rechunk layers, which
    # would hold the stored chunks of many tasks at once)
    assert not any("rechunk" in name for name in layers)
    reads = [n for n in layers if n.startswith(("open_dataset-vx", "xarray-vx"))]
    assert len(layers[reads[0]]) == ds.vx.data.npartitions
    raw = xr.open_zarr(path, mask_and_scale=True, decode_times=False)
    np.testing.assert_array_equal(
        np.sort(ds.vx.isel(y=5, x=7).values), np.sort(raw.vx.isel(y=5, x=7).values)
    )


def test_task_memory_is_flat_in_the_number_of_pairs(tmp_path):
    from xr_itslive.io.cube import inversion_chunks, open_store

    sizes = {}
    for n_pairs in (10_000, 50_000):
        ds = xr.Dataset({"vx": (("mid_date", "y", "x"), np.zeros((n_pairs, 1, 1), "int16"))}).isel(
            y=[0] * 100, x=[0] * 100
        )
        ds.vx.encoding["chunks"] = (20_000, 10, 10)
        chunks = inversion_chunks(ds, task_bytes=64 * 2**20)
        sizes[n_pairs] = n_pairs * chunks["y"] * chunks["x"] * 4
        # whole stored chunks: four to a task at 10,000 pairs, one at 50,000
        assert chunks["y"] == chunks["x"] == (20 if n_pairs == 10_000 else 10)
    assert all(size <= 64 * 2**20 for size in sizes.values())
    # an older cube's 100 x 100 stored chunks of every pair are over budget: split evenly
    path = _multichunk_cube(tmp_path / "old.zarr", n_pairs=2_000, chunk_pairs=250, chunk=40)
    ds = open_store(str(path), None, chunks={})
    chunks = inversion_chunks(ds, task_bytes=2_000 * 4 * 400)
    assert 40 % chunks["y"] == 0 and chunks["y"] * chunks["x"] <= 400


def test_open_lists_each_checked_array_once(s3_glacier_cube, caplog):
    # the missing-chunk check: one listing request per array opened (and per coordinate), as
    # the S3 server (moto, in this process) logs them; none for the 50-odd arrays not asked for
    import logging
    import re
    from urllib.parse import unquote

    caplog.set_level(logging.INFO, logger="werkzeug")
    cube = xr_itslive.open_cube(s3_glacier_cube, variables=["vx", "vy"])
    listing = re.compile(r"GET /its-live-data/?\?list-type=2\S*?prefix=([^& ]+)")
    listings = []
    for record in caplog.records:
        found = listing.search(record.getMessage())
        if found:
            listings.append(unquote(found.group(1)))
    listed = sorted(prefix.rstrip("/").rsplit("/", 1)[-1] for prefix in listings)
    assert listed == sorted(
        ["vx", "vy", "acquisition_date_img1", "acquisition_date_img2", "mid_date", "x", "y"]
    ), listings
    assert cube.sizes["mid_date"] == 47892
