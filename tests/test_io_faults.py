"""Storage faults reach the user in bounded time as DataAccessError naming the URL and key.

Real parts only: moto's S3 server on 127.0.0.1 behind a TCP relay that can be frozen (accepts
connections and reads requests but never answers), zarr stores on disk damaged as downloads
get damaged, and dask's own schedulers.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import re
import shutil
import time

import dask
import fsspec
import numpy as np
import pytest
from conftest import REPO

import xr_itslive
from xr_itslive.errors import DataAccessError, InvalidParameterError, NotAnITSLiveCubeError
from xr_itslive.io.cube import demo_cube_path, open_store
from xr_itslive.io.faults import chunk_keys, is_network_error, is_unreachable, read_error
from xr_itslive.io.s3 import BoundedS3FileSystem, s3_filesystem
from xr_itslive.io.urls import (
    DEFAULT_S3_CONFIG,
    S3_TIMEOUT_ENV,
    s3_request_budget,
    s3_storage_options,
)

#: The per-attempt timeout of the frozen-endpoint tests: 3 attempts fail in ~7 s.
QUICK_TIMEOUT = "2"
#: Not a benchmark: a guard far above the ~7 s expected, far below the old 15+ minute hang.
BOUND_S = 30


def _attempts(config: dict) -> int:
    retries = config["retries"]
    return retries.get("total_max_attempts", retries.get("max_attempts", 0) + 1)


# --- (b) the defaults are bounded, and configurable ---


def test_default_s3_options_bound_a_request_to_60_seconds(monkeypatch):
    monkeypatch.delenv(S3_TIMEOUT_ENV, raising=False)
    config = s3_storage_options()["config_kwargs"]
    assert config["retries"]["mode"] == "standard"
    per_attempt = config["connect_timeout"] + config["read_timeout"]
    assert _attempts(config) * per_attempt <= 60
    assert s3_request_budget() <= 60  # with botocore's longest backoffs
    # s3fs's own loop (5 tries, nested twice around botocore's on reads) is kept to one try
    assert BoundedS3FileSystem.retries == 1
    assert DEFAULT_S3_CONFIG["read_timeout"] == 15


def test_timeout_is_configurable_and_user_options_win(monkeypatch):
    monkeypatch.setenv(S3_TIMEOUT_ENV, "5")
    config = s3_storage_options()["config_kwargs"]
    assert (config["read_timeout"], config["connect_timeout"]) == (5.0, 3)
    assert s3_request_budget() == pytest.approx(3 * (5 + 3) + 1 + 2)
    # a user config_kwargs is merged into the default one: the retries stay bounded
    merged = s3_storage_options({"config_kwargs": {"read_timeout": 7}})["config_kwargs"]
    assert merged["read_timeout"] == 7
    assert merged["retries"] == {"total_max_attempts": 3, "mode": "standard"}
    # a retries dict replaces the default one (botocore would prefer total_max_attempts)
    own = s3_storage_options({"config_kwargs": {"retries": {"max_attempts": 1}}})
    assert own["config_kwargs"]["retries"] == {"max_attempts": 1}
    assert s3_request_budget({"config_kwargs": {"retries": {"max_attempts": 1}}}) == 2 * 8 + 1
    assert s3_storage_options({"anon": False})["anon"] is False
    for bad in ("soon", "0", "-3", "inf"):
        monkeypatch.setenv(S3_TIMEOUT_ENV, bad)
        with pytest.raises(
            InvalidParameterError,
            match=rf"XR_ITSLIVE_S3_TIMEOUT='{re.escape(bad)}' is not a positive number",
        ):
            s3_storage_options()


def test_the_filesystem_keeps_its_bounds_in_copies(monkeypatch):
    # zarr rebuilds the filesystem from its JSON form (async), dask workers from a pickle.
    monkeypatch.setenv(S3_TIMEOUT_ENV, "4")
    fs = s3_filesystem({"endpoint_url": "http://127.0.0.1:9"})
    copies = [fsspec.AbstractFileSystem.from_json(fs.to_json()), pickle.loads(pickle.dumps(fs))]
    for copy in (fs, *copies):
        assert isinstance(copy, BoundedS3FileSystem)
        assert copy.retries == 1
        assert copy.config_kwargs["read_timeout"] == 4.0
        assert copy.config_kwargs["retries"]["total_max_attempts"] == 3
    assert s3_filesystem({"retries": 3}).retries == 3


# --- (a) a frozen endpoint fails in bounded time, naming the URL and the key ---


@pytest.mark.timeout(120)
def test_frozen_endpoint_during_compute(s3_small_cube, s3_relay, monkeypatch):
    monkeypatch.setenv(S3_TIMEOUT_ENV, QUICK_TIMEOUT)
    ds = xr_itslive.open_cube(s3_small_cube, storage_options={"endpoint_url": s3_relay.url})
    assert np.isfinite(ds["vx"].isel(x=0, y=0).values).any()  # the relay forwards
    s3_relay.freeze()  # the connections opened so far stay open, and silent
    start = time.monotonic()
    with dask.config.set(scheduler="threads"):
        with pytest.raises(DataAccessError) as info:
            ds["vy"].compute()
    elapsed = time.monotonic() - start
    assert elapsed < BOUND_S
    assert re.search(
        rf"could not read {re.escape(s3_small_cube)}/vy/[0-3]\.0\.0: ReadTimeoutError: .*"
        r"after bounded retries.*XR_ITSLIVE_S3_TIMEOUT=<seconds> \(default 15\)",
        str(info.value),
    ), str(info.value)
    assert isinstance(info.value, OSError)
    assert is_unreachable(info.value.__cause__)


@pytest.mark.timeout(120)
def test_frozen_endpoint_one_chunk_makes_three_attempts(s3_small_cube, s3_relay, monkeypatch):
    monkeypatch.setenv(S3_TIMEOUT_ENV, QUICK_TIMEOUT)
    ds = open_store(s3_small_cube, {"endpoint_url": s3_relay.url}, chunks={})
    s3_relay.freeze()
    start = time.monotonic()
    with pytest.raises(DataAccessError, match=r"N30E090_3x3_subset\.zarr/vx/0\.0\.0: Read"):
        ds["vx"][:1].compute()
    assert time.monotonic() - start < BOUND_S
    assert s3_relay.requests_frozen == 3  # botocore's 3 attempts, not s3fs's 5 × 5 × 3


@pytest.mark.timeout(120)
def test_frozen_endpoint_while_opening(s3_small_cube, s3_relay, monkeypatch):
    monkeypatch.setenv(S3_TIMEOUT_ENV, QUICK_TIMEOUT)
    s3_relay.freeze()
    start = time.monotonic()
    legacy = s3_small_cube.replace("s3://fault-tests/", "s3://fault-tests/datacubes/v2/")
    with pytest.raises(
        DataAccessError,
        match=r"could not open the cube 's3://fault-tests/datacubes/v2/.*after bounded "
        r"retries: s3://fault-tests/datacubes/v2/N30E090_3x3_subset\.zarr: ReadTimeoutError",
    ):
        xr_itslive.open_cube(legacy, storage_options={"endpoint_url": s3_relay.url})
    # the same endpoint is not asked again under the bucket's other prefix
    assert time.monotonic() - start < BOUND_S
    assert s3_relay.requests_frozen == 3


# --- (c) a damaged chunk names the path and the key ---


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:  # an interrupted download
        path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def cube_copy(small_zarr_cube, tmp_path):
    return shutil.copytree(small_zarr_cube, tmp_path / small_zarr_cube.name)


@pytest.mark.parametrize("how", ["random bytes", "truncated"])
def test_damaged_chunk_names_path_and_key(cube_copy, how):
    _damage(cube_copy / "vx" / "1.0.0", how)
    ds = xr_itslive.open_cube(cube_copy)
    ds["vy"].compute()  # the others read fine
    with pytest.raises(DataAccessError) as info:
        ds["vx"].compute()
    message = str(info.value)
    assert message.startswith(f"{cube_copy}/vx/1.0.0 is damaged: chunk vx/1.0.0 could not be ")
    assert f"Re-download the store, or delete {cube_copy} and create it again" in message
    assert info.value.__cause__ is not None and not is_network_error(info.value.__cause__)


def test_a_block_over_several_chunks_names_the_damaged_one(cube_copy):
    # a task reads whole pixel columns (several chunks along mid_date): the message names the
    # chunk that is damaged, found by reading the block's chunks one by one
    _damage(cube_copy / "vx" / "1.0.0", "random bytes")
    ds = open_store(str(cube_copy), None, chunks={"mid_date": 4000})
    with pytest.raises(DataAccessError, match=r"/vx/1\.0\.0 is damaged: chunk vx/1\.0\.0 could"):
        ds["vx"][:10].compute()


def test_damaged_coordinate_chunk_is_named_on_open(cube_copy):
    _damage(cube_copy / "x" / "0", "random bytes")
    with pytest.raises(DataAccessError, match=rf"^{re.escape(str(cube_copy))}/x/0 is damaged"):
        xr_itslive.open_cube(cube_copy)


# --- (c') a deleted chunk: zarr would read its fill (0.0 m/yr, or NaN x) without a word ---


def test_a_deleted_velocity_chunk_is_refused_at_open(cube_copy):
    (cube_copy / "vx" / "2.0.0").unlink()  # vx has fill_value null: zarr would read zeros
    with pytest.raises(DataAccessError) as info:
        xr_itslive.open_cube(cube_copy, variables=["vx", "vy"])
    message = str(info.value)
    assert message.startswith(f"the cube at {cube_copy} is incomplete: 'vx' lacks 1 of its 4 ")
    assert "(vx/2.0.0), which zarr would read as zeros (0.0 m/yr" in message
    assert "Re-download the cube, or copy it again completely" in message
    # a variable that is not opened is not listed, nor refused
    ds = xr_itslive.open_cube(cube_copy, variables=["vy"])
    assert np.isfinite(ds["vy"].values).any()


def test_deleted_chunks_are_counted_and_listed_few(cube_copy):
    for key in ("0.0.0", "1.0.0", "2.0.0", "3.0.0"):
        (cube_copy / "vy" / key).unlink()
    (cube_copy / "vx" / "0.0.0").unlink()
    with pytest.raises(
        DataAccessError,
        match=r"'vx' lacks 1 of its 4 chunks \(vx/0\.0\.0\).*; 'vy' lacks 4 of its 4 chunks "
        r"\(vy/0\.0\.0, vy/1\.0\.0, vy/2\.0\.0, vy/3\.0\.0\)",
    ):
        xr_itslive.open_cube(cube_copy, variables=["vx", "vy"])


@pytest.mark.parametrize("name,key", [("x", "0"), ("acquisition_date_img1", "1")])
def test_a_deleted_coordinate_chunk_is_refused_at_open(cube_copy, name, key):
    (cube_copy / name / key).unlink()  # fill NaN: x or a pair date would read as NaN
    with pytest.raises(
        DataAccessError,
        match=rf"incomplete: '{name}' lacks 1 of its \d chunks \({name}/{key}\), which zarr "
        r"would read as NaN\. .*Re-download the cube",
    ):
        xr_itslive.open_cube(cube_copy, variables=["vx"])


def test_missing_chunks_that_read_as_missing_are_accepted(cube_copy):
    # vx_error has a real fill value (-32767): its missing chunk is missing data, as a sparse
    # writer (zarr's write_empty_chunks=False) leaves it
    (cube_copy / "vx_error" / "1").unlink()
    ds = xr_itslive.open_cube(cube_copy, variables=["vx", "vx_error"])
    error = ds["vx_error"].values
    assert np.isnan(error).sum() >= 2000 and np.isfinite(error).any()
    # the real fixture was written that way: floatingice (a flag, all 0) and mapping have no
    # chunk at all, and the whole cube opens
    from conftest import FIXTURE_3X3

    if FIXTURE_3X3.exists():
        assert not (FIXTURE_3X3 / "floatingice" / "0.0").exists()
        assert "floatingice" in xr_itslive.open_cube(FIXTURE_3X3).data_vars


def test_a_deleted_chunk_of_a_zarr_v3_store_is_refused(tmp_path):
    from xr_itslive.synthetic import synthetic_cube

    path = tmp_path / "v3.zarr"
    synthetic_cube(n_pairs=40, ny=2, nx=3, seed=1).to_zarr(path, zarr_format=3)
    assert (path / "x" / "c" / "0").exists()  # v3's own key encoding
    xr_itslive.open_cube(path, variables=["vx"])
    (path / "x" / "c" / "0").unlink()
    with pytest.raises(DataAccessError, match=r"'x' lacks 1 of its 1 chunks \(x/c/0\)"):
        xr_itslive.open_cube(path, variables=["vx"])


def test_a_deleted_chunk_on_s3_is_refused(s3_server, cube_copy):
    from conftest import make_public_bucket, upload_tree

    (cube_copy / "vx" / "3.0.0").unlink()
    client = make_public_bucket(s3_server, "incomplete-cubes")
    upload_tree(client, cube_copy, "incomplete-cubes", "cube.zarr")
    url = "s3://incomplete-cubes/cube.zarr"
    with pytest.raises(
        DataAccessError,
        match=rf"the cube at {re.escape(url)} is incomplete: 'vx' lacks 1 of its 4 chunks "
        r"\(vx/3\.0\.0\)",
    ):
        xr_itslive.open_cube(
            url, variables=["vx", "vy"], storage_options={"endpoint_url": s3_server}
        )
    ds = xr_itslive.open_cube(url, variables=["vy"], storage_options={"endpoint_url": s3_server})
    assert np.isfinite(ds["vy"].values).any()


# --- (d) damaged metadata and folders that are no cube ---


def test_damaged_consolidated_metadata(cube_copy):
    (cube_copy / ".zmetadata").write_text('{"zarr_consolidated_format": 1, "metadata": {')
    with pytest.raises(
        DataAccessError,
        match=rf"the zarr metadata of {re.escape(str(cube_copy))} is damaged: \.zmetadata "
        r"\(not valid JSON\) \(JSONDecodeError: .*\)\. Re-download the store",
    ) as info:
        xr_itslive.open_cube(cube_copy)
    assert isinstance(info.value.__cause__, ValueError)
    (cube_copy / ".zmetadata").write_text('{"metadata": 3}')
    with pytest.raises(DataAccessError, match=r"\.zmetadata \(not a zarr metadata document\)"):
        xr_itslive.open_cube(cube_copy)


@pytest.mark.filterwarnings("ignore:Failed to open Zarr store with consolidated metadata")
def test_damaged_array_metadata(cube_copy):
    (cube_copy / ".zmetadata").unlink()  # read without consolidated metadata, as zarr falls back
    (cube_copy / "vx" / ".zarray").write_bytes(b"\x00\xff garbage")
    with pytest.raises(DataAccessError, match=r"is damaged: vx/\.zarray \(not valid JSON\)"):
        xr_itslive.open_cube(cube_copy)


def test_empty_folder_and_folder_above_a_cube(tmp_path, small_zarr_cube):
    empty = tmp_path / "ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr"
    empty.mkdir()
    with pytest.raises(
        NotAnITSLiveCubeError,
        match=rf"no zarr metadata found at '{re.escape(str(empty))}' \(the folder is empty: an "
        r"interrupted download\?\): is this an ITS_LIVE cube\? A zarr store has \.zgroup",
    ):
        xr_itslive.open_cube(empty)
    with pytest.raises(NotAnITSLiveCubeError, match=r"no zarr metadata found at .*cube's own"):
        xr_itslive.open_cube(small_zarr_cube.parent)


# --- (e) errors inside dask computations are DataAccessError, chained ---


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_compute_errors_are_chained(cube_copy, scheduler):
    _damage(cube_copy / "vx" / "2.0.0", "random bytes")
    ds = xr_itslive.open_cube(cube_copy)
    # a pickled graph, as dask distributed ships it to workers, reports the same way
    for cube in (ds, pickle.loads(pickle.dumps(ds))):
        with dask.config.set(scheduler=scheduler):
            with pytest.raises(DataAccessError, match=r"/vx/2\.0\.0 is damaged") as info:
                xr_itslive.invert(cube.isel(x=[0], y=[0]), step=365).compute()
        assert isinstance(info.value.__cause__, RuntimeError)
        assert "blosc" in str(info.value.__cause__)


def test_key_errors_pass_through_and_text_falls_back():
    class Reader:
        shape = (4,)

        def __getitem__(self, index):
            raise KeyError("missing")

    from xr_itslive.io.faults import read_block

    with pytest.raises(KeyError, match="missing"):  # zarr's signal for a chunk to fill
        read_block(Reader(), (slice(0, 4),), source="/tmp/x.zarr")
    assert chunk_keys(Reader(), (slice(0, 2),)) == ["variable[0:2]"]
    error = read_error("s3://b/c.zarr", ["v/0.0.0"], TimeoutError("late"))
    assert str(error).startswith("could not read s3://b/c.zarr/v/0.0.0: TimeoutError: late.")
    assert "Check that the disk" in str(read_error("/d/c.zarr", ["v/0"], PermissionError("no")))


def test_netcdf_and_local_zarr_still_read(small_zarr_cube):
    for source in (demo_cube_path(), small_zarr_cube):
        ds = xr_itslive.open_cube(source)
        assert np.isfinite(ds["vx"].values).any()


# --- the benchmark runs (one quick setting) so that it cannot silently break ---


@pytest.mark.timeout(120)
def test_benchmark_runs(monkeypatch, capsys):
    # it starts its own moto server and needs (any) credentials to upload the cube
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    spec = importlib.util.spec_from_file_location(
        "bench_s3_faults", REPO / "benchmarks" / "bench_s3_faults.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (row,) = bench.main(["--timeouts", "1"])
    assert row["read_attempts"] == row["open_attempts"] == 3
    assert row["read_s"] < row["budget_s"] + 5 and row["open_s"] < row["budget_s"] + 5
    assert "ReadTimeoutError" in capsys.readouterr().out
    assert os.environ.get(S3_TIMEOUT_ENV) is None
