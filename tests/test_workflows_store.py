"""Resumable zarr writes: identical to a plain compute, restartable after SIGKILL, guarded."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import numpy as np
import pytest
import xarray as xr
from conftest import REPO, raise_if_dask_computes

import xr_itslive
from xr_itslive.errors import ChunkingError, InvalidParameterError, StoreConflictError
from xr_itslive.synthetic import synthetic_cube
from xr_itslive.workflows.invert_to_zarr import invert_to_zarr
from xr_itslive.workflows.store import MARKER_GROUP, store_status, write_resumable

BUCKET = "xr-itslive-store-tests"
STEP = 30.0


def small_cube(**kwargs):
    options = dict(n_pairs=300, ny=4, nx=6, seed=3, chunks={"y": 2, "x": 2})
    options.update(kwargs)
    return synthetic_cube(**options)


@pytest.fixture(scope="module")
def s3_bucket(s3_server):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-west-2")
    client.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
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
