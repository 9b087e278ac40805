"""Resumable zarr writes: identical to a plain compute, restartable after SIGKILL, guarded."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
import xarray as xr
from conftest import (
    GLACIER_CUBE,
    ITSLIVE_DATA,
    REPO,
    make_bucket,
    raise_if_dask_computes,
    requires_shared,
)

import xr_itslive
from xr_itslive.errors import ChunkingError, InvalidParameterError, StoreConflictError
from xr_itslive.synthetic import synthetic_cube
from xr_itslive.workflows.invert_to_zarr import invert_to_zarr
from xr_itslive.workflows.store import MARKER_GROUP, store_status, write_resumable

BUCKET = "xr-itslive-store-tests"
STEP = 30.0
GLACIER_OUTLINE = ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson"


def small_cube(**kwargs):
    options = dict(n_pairs=300, ny=4, nx=6, seed=3, chunks={"y": 2, "x": 2})
    options.update(kwargs)
    return synthetic_cube(**options)


@pytest.fixture(scope="module")
def s3_bucket(s3_server):
    make_bucket(s3_server, BUCKET)
    return BUCKET


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path):
    """A fresh store location, on disk or on the moto S3 server."""
    if request.param == "local":
        return str(tmp_path / "result.zarr")
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/{uuid.uuid4().hex}/result.zarr"


def open_store(url):
    return xr.open_zarr(url).load()


def markers(url):
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    folder = f"{root}/{MARKER_GROUP}/done"
    fs.invalidate_cache(folder)
    out = {}
    for path in fs.ls(folder, detail=False):
        if path.endswith(".json"):
            out[path.rsplit("/", 1)[-1]] = json.loads(fs.cat(path))
    return out


def test_written_store_equals_computed_result(store_url):
    cube = small_cube()
    summary = invert_to_zarr(cube, store_url, step=STEP, progress=False)
    assert (summary.n_chunks, summary.n_written, summary.n_skipped) == (6, 6, 0)
    assert summary.complete and not summary.already_complete

    expected = xr_itslive.invert(cube, step=STEP).compute()
    written = open_store(store_url)
    assert written.attrs.pop("xr_itslive_store")
    xr.testing.assert_identical(written, expected)
    assert written["vx"].notnull().sum() > 0
    assert len(markers(store_url)) == 6


def test_finished_store_computes_nothing(tmp_path):
    cube = small_cube()
    store = tmp_path / "out.zarr"
    invert_to_zarr(cube, store, step=STEP, progress=False)
    before = markers(str(store))
    with raise_if_dask_computes():
        again = invert_to_zarr(cube, store, step=STEP, progress=False)
    assert again.already_complete and again.n_written == 0
    assert markers(str(store)) == before  # markers untouched: nothing rewritten
    status = store_status(store)
    assert status.complete and status.n_done == 6 and status.parameters["lam"] == 10.0


def test_partial_store_resumes_only_missing_chunks(tmp_path):
    cube = small_cube()
    store = tmp_path / "out.zarr"
    invert_to_zarr(cube, store, step=STEP, progress=False)
    done = sorted((tmp_path / "out.zarr" / MARKER_GROUP / "done").iterdir())
    for marker in done[:4]:  # as if the run had died after two chunks
        marker.unlink()
    assert store_status(store).n_done == 2 and not store_status(store).complete

    summary = invert_to_zarr(cube, store, step=STEP, progress=False)
    assert (summary.n_skipped, summary.n_written) == (2, 4)
    expected = xr_itslive.invert(cube, step=STEP).compute()
    written = open_store(store).drop_attrs()
    xr.testing.assert_identical(written, expected.drop_attrs())


RUN_SCRIPT = textwrap.dedent(
    """
    import importlib, os, sys, time
    from xr_itslive.synthetic import synthetic_cube
    from xr_itslive.workflows.invert_to_zarr import invert_to_zarr

    store, log, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
    inversion = importlib.import_module("xr_itslive.workflows.invert")  # the module
    solve = inversion.solve_block

    def counted(values, *args, **kwargs):
        out = solve(values, *args, **kwargs)
        with open(log, "a") as file:  # one line per variable of a chunk computed
            file.write(f"{os.getpid()} {values.shape}\\n")
        time.sleep(pause)
        return out

    inversion.solve_block = counted
    cube = synthetic_cube(n_pairs=300, ny=4, nx=8, seed=3, chunks={"y": 2, "x": 2})
    invert_to_zarr(cube, store, step=30.0, progress=False, scheduler="threads")
    print("finished")
    """
)


def run_script(tmp_path, store, log, pause):
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    return subprocess.Popen(
        [sys.executable, str(script), store, str(log), str(pause)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def log_lines(log):
    return log.read_text().splitlines() if log.exists() else []


def test_sigkill_then_resume_matches_uninterrupted_run(store_url, tmp_path):
    n_chunks, n_vars = 8, 2
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    proc = run_script(tmp_path, store_url, first_log, pause=0.4)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = store_status(store_url)
            if status is not None and status.n_done >= 2:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("the first run marked no chunk done within 60 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = markers(store_url)
    assert 2 <= len(done_at_kill) < n_chunks, "the kill must land mid-way"
    assert len(log_lines(first_log)) >= n_vars * len(done_at_kill)

    second = run_script(tmp_path, store_url, second_log, pause=0.0)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err.decode()
    assert b"finished" in out

    # No chunk that was done is computed again, every missing one exactly once.
    assert len(log_lines(second_log)) == n_vars * (n_chunks - len(done_at_kill))
    final = markers(store_url)
    assert len(final) == n_chunks
    for name, marker in done_at_kill.items():
        assert final[name] == marker  # the first run's marker, never rewritten
    second_pids = {int(line.split()[0]) for line in log_lines(second_log)}
    assert {final[name]["pid"] for name in set(final) - set(done_at_kill)} == second_pids

    reference = str(tmp_path / "reference.zarr")
    cube = synthetic_cube(n_pairs=300, ny=4, nx=8, seed=3, chunks={"y": 2, "x": 2})
    invert_to_zarr(cube, reference, step=30.0, progress=False)
    xr.testing.assert_identical(open_store(store_url), open_store(reference))


def test_resume_with_other_parameters_is_refused(tmp_path):
    cube = small_cube()
    store = tmp_path / "out.zarr"
    invert_to_zarr(cube, store, step=STEP, lam=10.0, progress=False)
    with pytest.raises(
        StoreConflictError, match=r"lam \(store: 10.0, this run: 20.0\).*overwrite=True"
    ):
        invert_to_zarr(cube, store, step=STEP, lam=20.0, progress=False)
    with pytest.raises(StoreConflictError, match=r"chunks.x.*new store"):
        invert_to_zarr(cube, store, step=STEP, chunks={"y": 2, "x": 3}, progress=False)
    # the refused runs left the store as it was
    assert store_status(store).complete and store_status(store).parameters["lam"] == 10.0


def test_overwrite_starts_again(tmp_path):
    cube = small_cube()
    store = tmp_path / "out.zarr"
    invert_to_zarr(cube, store, step=STEP, lam=10.0, progress=False)
    summary = invert_to_zarr(cube, store, step=STEP, lam=20.0, overwrite=True, progress=False)
    assert summary.n_written == 6
    expected = xr_itslive.invert(cube, step=STEP, lam=20.0).compute()
    xr.testing.assert_identical(open_store(store).drop_attrs(), expected.drop_attrs())
    assert store_status(store).parameters["lam"] == 20.0


def test_foreign_store_is_refused(tmp_path):
    store = tmp_path / "plain.zarr"
    xr.Dataset({"a": ("x", np.arange(3))}).to_zarr(store, consolidated=False)
    with pytest.raises(
        StoreConflictError, match=r"zarr store not written by xr_itslive.*overwrite=True"
    ):
        invert_to_zarr(small_cube(), store, step=STEP, progress=False)
    other = tmp_path / "folder"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(StoreConflictError, match=r"holds other files"):
        invert_to_zarr(small_cube(), other, step=STEP, progress=False)
    assert (other / "notes.txt").read_text() == "keep me"


def test_uneven_chunks_are_refused(tmp_path):
    cube = small_cube().chunk({"x": (2, 3, 1)})
    with pytest.raises(ChunkingError, match=r"chunks along 'x' are \(2, 3, 1\).*cube.chunk"):
        invert_to_zarr(cube, tmp_path / "out.zarr", step=STEP, progress=False)


def test_numpy_result_is_written_in_requested_chunks(tmp_path):
    cube = small_cube(chunks=None)
    result = xr_itslive.invert(cube, step=STEP)
    summary = write_resumable(
        result, tmp_path / "out.zarr", chunks={"y": 3, "x": 4}, progress=False
    )
    assert summary.n_chunks == 4  # y: 3 + 1, x: 4 + 2
    written = xr.open_zarr(tmp_path / "out.zarr")
    assert written["vx"].encoding["chunks"] == (result.sizes["time"], 3, 4)
    xr.testing.assert_identical(written.load().drop_attrs(), result.drop_attrs())


def test_lazy_stays_lazy_until_written(tmp_path):
    result = xr_itslive.invert(small_cube(), step=STEP)
    with raise_if_dask_computes(max_computes=1):  # the one compute of the chunk writes
        write_resumable(result, tmp_path / "out.zarr", progress=False)


def test_progress_bar_is_optional(tmp_path, capsys):
    cube = small_cube()
    invert_to_zarr(cube, tmp_path / "a.zarr", step=STEP, progress=True)
    shown = capsys.readouterr().err
    assert "6/6" in shown and "chunk" in shown
    invert_to_zarr(cube, tmp_path / "b.zarr", step=STEP, progress=False)
    assert capsys.readouterr().err == ""


def test_bad_store_arguments(tmp_path):
    result = xr_itslive.invert(small_cube(), step=STEP)
    with pytest.raises(InvalidParameterError, match=r"storage_options=.*local path"):
        write_resumable(result, tmp_path / "x.zarr", storage_options={"anon": True})
    with pytest.raises(InvalidParameterError, match=r"store must be a local path or a URL.*dict"):
        write_resumable(result, {}, progress=False)
    with pytest.raises(InvalidParameterError, match=r"chunk dimensions \['lat'\]"):
        write_resumable(result, tmp_path / "x.zarr", dims=("lat",))
    assert store_status(tmp_path / "nothing.zarr") is None


def test_a_resume_with_other_weights_or_another_cube_is_refused(tmp_path):
    """The fingerprint identifies non-scalar arguments by content and the input cube by its
    pairs: neither a resume with other weights nor one on a changed cube reports complete."""
    cube = small_cube()
    store = tmp_path / "w.zarr"
    ones = xr.DataArray(np.ones(cube.sizes["mid_date"]), dims="mid_date")
    invert_to_zarr(cube, store, step=STEP, weights=ones, progress=False)
    assert invert_to_zarr(cube, store, step=STEP, weights=ones, progress=False).already_complete
    halves = ones.copy(data=np.r_[np.ones(10), 0.5 * np.ones(ones.size - 10)])
    with pytest.raises(StoreConflictError, match=r"weights.*overwrite=True"):
        invert_to_zarr(cube, store, step=STEP, weights=halves, progress=False)
    fewer = cube.isel(mid_date=slice(5, None))  # the cube changed: pairs gone
    with pytest.raises(StoreConflictError, match=r"input.*overwrite=True"):
        invert_to_zarr(fewer, store, step=STEP, weights=ones.isel(mid_date=slice(5, None)),
                       progress=False)  # fmt: skip


# --- the fingerprint identifies values: arguments by content, the input by its values ---


def many_vertex_outline(top_right_x: float):
    """A polygon over the synthetic cube whose first 60 vertices (all its repr shows) are
    fixed: outlines that differ only in ``top_right_x`` print alike."""
    import shapely

    bottom = [(784_250.0 + 0.1 * i, 3_314_900.0) for i in range(60)]
    return shapely.Polygon(
        [*bottom, (785_000.0, 3_314_900.0), (top_right_x, 3_316_500.0), (784_250.0, 3_316_500.0)]
    )


def test_outlines_that_print_alike_are_told_apart_by_content():
    import geopandas as gpd
    import shapely

    from xr_itslive.workflows.glacier import Glacier
    from xr_itslive.workflows.invert_to_zarr import _describe

    wide, narrow = many_vertex_outline(785_000.0), many_vertex_outline(784_500.0)
    assert repr(wide) == repr(narrow)  # what the fingerprint hashed before
    assert _describe(wide) != _describe(narrow)
    assert _describe(wide) == _describe(shapely.from_wkb(shapely.to_wkb(wide)))  # content
    frames = [gpd.GeoDataFrame(geometry=[g], crs=32646) for g in (wide, narrow)]
    assert repr(frames[0]) == repr(frames[1])
    assert _describe(frames[0]) != _describe(frames[1])
    assert _describe(frames[0].geometry) != _describe(frames[1].geometry)
    # the same geometry in another CRS is another outline
    other_crs = gpd.GeoDataFrame(geometry=[wide], crs=32645)
    assert _describe(other_crs) != _describe(frames[0])
    assert _describe(frames[0])["crs"] == "EPSG:32646"
    glaciers = [Glacier("RGI-1", "g", g, "EPSG:32646") for g in (wide, narrow)]
    assert _describe(glaciers[0]) != _describe(glaciers[1])
    assert _describe(glaciers[0])["outline"] == _describe(wide)


def test_every_kind_of_argument_is_identified_by_content(tmp_path):
    import dask.array as da

    from xr_itslive.workflows.invert_to_zarr import _describe

    values = np.arange(1000.0)
    changed = values.copy()
    changed[-1] += 1  # past anything a repr shows
    assert _describe(values) == _describe(values.copy())
    assert _describe(values) != _describe(changed)
    assert _describe(da.from_array(values, chunks=100)) != _describe(
        da.from_array(changed, chunks=100)
    )
    weights = xr.DataArray(values, dims="mid_date")
    assert _describe(weights) == _describe(weights.copy(deep=True))
    assert _describe(weights) != _describe(weights.copy(data=changed))
    # a lazy array by its graph, without computing it
    lazy = weights.chunk(100) * 2
    with raise_if_dask_computes():
        assert _describe(lazy) != _describe(weights.chunk(100) * 3)
    # a GeoJSON mapping, and a file by its content (same path)
    ring = [[0, 0], [1, 0], [1, 1], [0, 0]]
    geojson = {"type": "Polygon", "coordinates": [ring]}
    moved = {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [1, 1], [0, 0]]]}
    assert _describe(geojson) != _describe(moved)
    outline = tmp_path / "outline.geojson"
    outline.write_text(json.dumps(geojson))
    before = _describe(str(outline))
    outline.write_text(json.dumps(moved))
    assert _describe(str(outline))["file"] == before["file"] == str(outline)
    assert _describe(str(outline))["sha256"] != before["sha256"]
    # a shapefile's CRS lives in its .prj: part of its content
    shp = tmp_path / "outline.shp"
    shp.write_bytes(b"shapes")
    (tmp_path / "outline.prj").write_text("EPSG:32646")
    first = _describe(shp)
    (tmp_path / "outline.prj").write_text("EPSG:32645")
    assert _describe(shp) != first
    # lists (a mosaic's cubes, lam candidates) element by element; dates as text
    assert _describe([values, "s3://b/c.zarr"]) != _describe([changed, "s3://b/c.zarr"])
    assert _describe(np.datetime64("2020-01-01")) == "2020-01-01"
    # what cannot be identified is refused, not hashed by its repr
    import threading

    class Holder:
        def __init__(self):
            self.lock = threading.Lock()  # cannot be pickled: no deterministic token

    with pytest.raises(InvalidParameterError, match=r"cannot identify a Holder argument.*pass"):
        _describe(Holder())


def test_a_resume_with_another_outline_is_refused(tmp_path):
    cube = small_cube()
    store = tmp_path / "outline.zarr"
    wide, narrow = many_vertex_outline(785_000.0), many_vertex_outline(784_500.0)
    first = invert_to_zarr(cube, store, step=STEP, mask=wide, progress=False)
    assert first.n_written == 6
    assert invert_to_zarr(cube, store, step=STEP, mask=wide, progress=False).already_complete
    with pytest.raises(StoreConflictError, match=r"parameters\.mask\.geometry.*overwrite=True"):
        invert_to_zarr(cube, store, step=STEP, mask=narrow, progress=False)
    written = invert_to_zarr(cube, store, step=STEP, mask=narrow, overwrite=True, progress=False)
    assert written.n_written == 6
    expected = xr_itslive.invert(cube, step=STEP, mask=narrow).compute()
    xr.testing.assert_identical(open_store(store).drop_attrs(), expected.drop_attrs())
    assert int(expected["n_obs"].astype(bool).sum()) < int(
        xr_itslive.invert(cube, step=STEP, mask=wide)["n_obs"].astype(bool).sum()
    )


def test_a_resume_on_a_cube_with_other_values_is_refused(tmp_path):
    cube = small_cube()
    store = tmp_path / "values.zarr"
    invert_to_zarr(cube, store, step=STEP, progress=False)
    # Same pairs, sizes and dates, other numbers: before, "complete" with the old ones.
    for changed in (cube.assign(vx=cube["vx"] + 100), cube.where(cube["vx"] > 0)):
        with pytest.raises(
            StoreConflictError,
            match=r"parameters\.input\.values\.vx.*The values differ.*overwrite=True",
        ):
            invert_to_zarr(changed, store, step=STEP, progress=False)
    # the same values built again (another graph object, same operations) resume
    again = small_cube()
    assert invert_to_zarr(again, store, step=STEP, progress=False).already_complete
    summary = invert_to_zarr(
        cube.assign(vx=cube["vx"] + 100), store, step=STEP, overwrite=True, progress=False
    )
    assert summary.n_written == 6
    shifted = open_store(store)["vx"] - xr_itslive.invert(cube, step=STEP)["vx"].compute()
    np.testing.assert_allclose(shifted.values[np.isfinite(shifted.values)], 100, atol=1e-3)


def test_write_resumable_refuses_a_result_with_other_values(tmp_path):
    result = xr_itslive.invert(small_cube(), step=STEP)
    store = tmp_path / "direct.zarr"
    write_resumable(result, store, progress=False)
    assert write_resumable(result, store, progress=False).already_complete
    other = result.assign(vx=result["vx"] + 1.0)  # same attributes, coordinates and chunks
    other["vx"].attrs = result["vx"].attrs
    with pytest.raises(StoreConflictError, match=r"data\.vx.*overwrite=True \(CLI: --overwrite\)"):
        write_resumable(other, store, progress=False)
    assert store_status(store).complete  # the refused run changed nothing
    xr.testing.assert_identical(open_store(store).drop_attrs(), result.compute().drop_attrs())
    assert write_resumable(other, store, overwrite=True, progress=False).n_written == 6
    xr.testing.assert_identical(open_store(store).drop_attrs(), other.compute().drop_attrs())


def test_a_store_of_an_earlier_version_is_refused_naming_overwrite(tmp_path):
    import zarr

    cube = small_cube()
    store = tmp_path / "old.zarr"
    invert_to_zarr(cube, store, step=STEP, progress=False)
    # The record as the previous release wrote it: format 1, no values in the fingerprint.
    group = zarr.open_group(str(store), path=MARKER_GROUP, mode="r+")
    record = json.loads(group.attrs["record"])
    record["format"] = 1
    del record["fingerprint"]["data"]
    record["fingerprint"]["parameters"]["input"] = {"source": "", "pairs": "0" * 16}
    group.attrs["record"] = json.dumps(record, sort_keys=True)
    with pytest.raises(
        StoreConflictError,
        match=r"earlier xr_itslive \(write record format 1.*readable.*overwrite=True \(CLI: "
        r"--overwrite\)",
    ):
        invert_to_zarr(cube, store, step=STEP, progress=False)
    assert invert_to_zarr(cube, store, step=STEP, overwrite=True, progress=False).n_written == 6
    assert invert_to_zarr(cube, store, step=STEP, progress=False).already_complete


# --- an output store on a frozen S3 endpoint: bounded, DataAccessError naming URL and key ---

#: The per-attempt timeout of the frozen-endpoint tests (XR_ITSLIVE_S3_TIMEOUT): 3 attempts of
#: 2 s fail a request in ~7 s.
QUICK_TIMEOUT = "2"
#: A guard far above the ~7-20 s expected (the failed request, then the lock's release), far
#: below the old hang (s3fs's nested retries with default timeouts: 15+ minutes).
BOUND_S = 60


def freeze_after_lock_checks(monkeypatch, relay, n_checks):
    """Freeze ``relay`` right after the ``n_checks``-th chunk task checked its lock: that
    chunk's data write is the first request to meet the frozen endpoint."""
    from xr_itslive.workflows import store as store_module

    real = store_module._check_lock
    calls = []

    def check_then_freeze(*args):
        real(*args)
        calls.append(args[-1])
        if len(calls) == n_checks:
            relay.freeze()

    monkeypatch.setattr(store_module, "_check_lock", check_then_freeze)
    return calls


@pytest.mark.timeout(180)
def test_writing_to_a_frozen_endpoint_fails_in_bounded_time_naming_url_and_key(
    s3_bucket, s3_relay, monkeypatch
):
    from xr_itslive.errors import DataAccessError
    from xr_itslive.io.faults import is_unreachable

    monkeypatch.setenv("XR_ITSLIVE_S3_TIMEOUT", QUICK_TIMEOUT)
    url = f"s3://{s3_bucket}/{uuid.uuid4().hex}/frozen.zarr"
    options = {"endpoint_url": s3_relay.url}
    result = xr_itslive.invert(small_cube(), step=STEP)
    freeze_after_lock_checks(monkeypatch, s3_relay, n_checks=2)  # chunk 1 written, then frozen
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match=r"left the lock .*the storage did not answer"):
        with pytest.raises(DataAccessError) as info:
            write_resumable(
                result, url, storage_options=options, progress=False, scheduler="synchronous"
            )
    elapsed = time.monotonic() - start
    print(f"frozen endpoint: DataAccessError after {elapsed:.1f} s")
    assert elapsed < BOUND_S, elapsed
    message = str(info.value)
    assert re.search(
        rf"could not write {re.escape(url)}/(vx|vy|v|n_obs)/c/\d+/\d+/\d+: ReadTimeoutError: .*"
        r"after bounded retries.*XR_ITSLIVE_S3_TIMEOUT=<seconds> \(default 15\).*resumes",
        message,
    ), message
    assert is_unreachable(info.value.__cause__)  # chained to botocore's own error
    assert s3_relay.requests_frozen >= 3  # botocore's bounded attempts, then the error
    # Thawed, the same call resumes: the chunk written before the freeze is kept.
    s3_relay.thaw()
    monkeypatch.undo()
    # The lock this process could not remove is broken at once, though its pid still runs.
    with pytest.warns(RuntimeWarning, match=r"breaking the lock.*an earlier run of this process"):
        summary = write_resumable(result, url, storage_options=options, progress=False)
    assert (summary.n_skipped, summary.n_written) == (1, 5)
    xr.testing.assert_identical(
        xr.open_zarr(url, storage_options=options).load().drop_attrs(),
        result.compute().drop_attrs(),
    )


@pytest.mark.timeout(180)
def test_a_frozen_endpoint_before_the_first_write_is_a_data_access_error(
    s3_bucket, s3_relay, monkeypatch
):
    from xr_itslive.errors import DataAccessError

    monkeypatch.setenv("XR_ITSLIVE_S3_TIMEOUT", QUICK_TIMEOUT)
    url = f"s3://{s3_bucket}/{uuid.uuid4().hex}/frozen.zarr"
    result = xr_itslive.invert(small_cube(), step=STEP)
    s3_relay.freeze()
    start = time.monotonic()
    with pytest.raises(DataAccessError) as info:
        write_resumable(result, url, storage_options={"endpoint_url": s3_relay.url},
                        progress=False)  # fmt: skip
    elapsed = time.monotonic() - start
    print(f"frozen endpoint before the first write: DataAccessError after {elapsed:.1f} s")
    assert elapsed < BOUND_S, elapsed
    assert re.search(
        rf"could not read {re.escape(url)}/_xr_itslive/ \(the write record\): \w+", str(info.value)
    ), str(info.value)
    assert info.value.__cause__ is not None


# --- the CLI: a resume after the source's values changed in place ---


def run_cli(args, seed):
    """``xr-itslive ARGS`` in a new process (its own PYTHONHASHSEED): a resume is a new run."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        PYTHONHASHSEED=str(seed),
    )
    command = [sys.executable, "-m", "xr_itslive.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_cli_resume_after_the_source_values_changed_is_refused(small_zarr_cube, tmp_path):
    import shutil

    import zarr

    source, store = tmp_path / "cube.zarr", tmp_path / "out.zarr"
    shutil.copytree(small_zarr_cube, source)
    args = ["invert", str(source), "--out", str(store), "--step", "60", "--scheduler",
            "threads", "--no-progress"]  # fmt: skip
    first = run_cli(args, seed=1)
    assert first.returncode == 0, first.stderr
    before = open_store(store)
    # the same command in another process finds its own store: the fingerprint is the same
    again = run_cli(args, seed=2)
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr

    # vx rewritten in place, +100 m/yr where not missing: same metadata, pairs and sizes
    vx = zarr.open_array(str(source / "vx"), mode="r+")
    raw = vx[...]
    fill = vx.attrs["missing_value"]
    vx[...] = np.where(raw == fill, raw, raw + 100).astype(raw.dtype)
    refused = run_cli(args, seed=3)
    assert refused.returncode == 1
    assert re.search(
        r"error: .*out\.zarr holds a run with other settings or other input: "
        r"parameters\.input\.stores\..*cube\.zarr\.arrays\.vx\.files .*The values differ.*"
        r"--overwrite",
        refused.stderr,
    ), refused.stderr
    assert "Traceback" not in refused.stderr
    xr.testing.assert_identical(open_store(store), before)  # left as it was

    redone = run_cli([*args, "--overwrite"], seed=4)
    assert redone.returncode == 0, redone.stderr
    after = open_store(store)
    expected = xr_itslive.invert(xr_itslive.open_cube(str(source)), step=60.0).compute()
    xr.testing.assert_identical(after.drop_attrs(), expected.drop_attrs())
    shift = (after["vx"] - before["vx"]).values
    assert np.isfinite(shift).any()
    np.testing.assert_allclose(shift[np.isfinite(shift)], 100, atol=0.01)


# --- the input's identity: values, the store actually read, cheap, the same in every process ---

IDENTITY_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import xr_itslive
    from xr_itslive.workflows.common import input_identity
    from xr_itslive.workflows.invert_to_zarr import _describe
    from xr_itslive.workflows.store import _plan

    path, outline = sys.argv[1], sys.argv[2]
    cube = xr_itslive.open_cube(path, ["vx", "vy", "vx_error", "vy_error"])
    out = {"input": input_identity(cube, ["vx", "vy"]), "outline": _describe(outline)}
    options = {
        "default": {},
        "robust": {"robust": True},
        "uncertainty": {"uncertainty": True, "weights": "error"},
        "auto": {"lam": "auto"},
        "mask": {"mask": outline},
    }
    for name, kwargs in options.items():
        result = xr_itslive.invert(cube, step=60.0, **kwargs)
        out[name] = _plan(result, ("y", "x"), None, None).fingerprint
    composite = xr_itslive.composite(cube)
    out["composite"] = _plan(composite, ("y", "x"), None, None).fingerprint
    print(json.dumps(out, sort_keys=True, default=str))
    """
)


def identity_in_a_new_process(folder, path, outline, seed):
    script = folder / f"identity-{seed}.py"
    script.write_text(IDENTITY_SCRIPT)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        PYTHONHASHSEED=str(seed),
    )
    done = subprocess.run([sys.executable, str(script), str(path), str(outline)], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@requires_shared
def test_fingerprints_are_the_same_in_a_new_process(tmp_path):
    """A resume runs in a new process: every token must come out the same there (hash seeds
    differ), for the input and for the results of each kind of run."""
    first = identity_in_a_new_process(tmp_path, GLACIER_CUBE, GLACIER_OUTLINE, seed=11)
    second = identity_in_a_new_process(tmp_path, GLACIER_CUBE, GLACIER_OUTLINE, seed=12)
    assert first == second
    assert first["default"]["data"] != first["robust"]["data"] != first["mask"]["data"]
    assert first["input"]["source"] == str(GLACIER_CUBE)


@requires_shared
def test_input_identity_is_cheap_computes_nothing_and_names_the_store_read(tmp_path):
    from xr_itslive.workflows.common import input_identity

    cube = xr_itslive.open_cube(GLACIER_CUBE, ["vx", "vy"])  # 47,892 pairs
    assert cube.sizes["mid_date"] == 47_892
    with raise_if_dask_computes():
        start = time.perf_counter()
        identity = input_identity(cube, ["vx", "vy"])
        elapsed = time.perf_counter() - start
    print(f"input_identity of the 47,892-pair cube: {elapsed * 1e3:.1f} ms")
    assert elapsed < 2.0  # a guard (measured: ~15 ms), not a benchmark
    # the path actually read, not the S3 URL the cube records
    assert identity["source"] == str(GLACIER_CUBE)
    assert cube.attrs["url"].startswith("http") and cube.attrs["url"] not in json.dumps(identity)
    (store,) = identity["stores"].values()
    assert set(store["arrays"]) == {"vx", "vy"} and store["metadata"]
    assert store["arrays"]["vx"]["n_files"] > 1
    # two opens of the same store agree; changed values, or another variable, do not
    again = xr_itslive.open_cube(GLACIER_CUBE, ["vx", "vy"])
    assert input_identity(again, ["vx", "vy"]) == identity
    shifted = input_identity(again.assign(vx=again["vx"] + 100), ["vx", "vy"])
    assert shifted["values"]["vx"] != identity["values"]["vx"]
    assert shifted["values"]["vy"] == identity["values"]["vy"]
    assert input_identity(again, ["vx"])["stores"][str(GLACIER_CUBE)]["arrays"].keys() == {"vx"}


def test_values_rewritten_in_place_change_the_identity(small_zarr_cube, tmp_path):
    import shutil

    import zarr

    from xr_itslive.workflows.common import input_identity

    source = tmp_path / "cube.zarr"
    shutil.copytree(small_zarr_cube, source)
    before = input_identity(xr_itslive.open_cube(str(source), ["vx", "vy"]), ["vx", "vy"])
    vx = zarr.open_array(str(source / "vx"), mode="r+")
    vx[:10] = vx[:10] + 1  # other values in one chunk, in place: no metadata changes
    after = input_identity(xr_itslive.open_cube(str(source), ["vx", "vy"]), ["vx", "vy"])
    # The graph cannot see a chunk's content (its token is the store, the array's metadata
    # and the operations), nor can the metadata: the chunk files' stat can.
    assert after["values"] == before["values"]
    (old,), (new,) = before["stores"].values(), after["stores"].values()
    assert new["metadata"] == old["metadata"]
    assert new["arrays"]["vx"]["metadata"] == old["arrays"]["vx"]["metadata"]
    assert new["arrays"]["vx"]["files"] != old["arrays"]["vx"]["files"]
    assert new["arrays"]["vy"] == old["arrays"]["vy"]
    # a copy elsewhere is another source
    copy = tmp_path / "copy.zarr"
    shutil.copytree(source, copy)
    elsewhere = input_identity(xr_itslive.open_cube(str(copy), ["vx"]), ["vx"])
    assert elsewhere["source"] == str(copy)


def test_a_remote_source_is_identified_by_its_url_and_metadata(s3_small_cube):
    from xr_itslive.workflows.common import input_identity

    cube = xr_itslive.open_cube(s3_small_cube, ["vx"])
    with raise_if_dask_computes():
        identity = input_identity(cube, ["vx"])
    assert identity["source"] == s3_small_cube
    store = identity["stores"][s3_small_cube]
    assert store["metadata"] and "files" not in store["arrays"]["vx"]  # chunks not listed
    assert input_identity(xr_itslive.open_cube(s3_small_cube, ["vx"]), ["vx"]) == identity
