"""The full-size cube generator writes what ITS_LIVE writes, and the whole-cube benchmark runs.

Both on tiny sizes: the figures themselves come from running the scripts (README, scaling docs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import xarray as xr

import xr_itslive

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from make_cube import FILL, make_cube  # noqa: E402


def test_generated_cube_has_todays_format(tmp_path):
    path = tmp_path / "cube.zarr"
    made = make_cube(path, ny=25, nx=32, n_pairs=3_000, chunk_pairs=1_000, workers=1, seed=2)
    meta = json.loads((path / ".zmetadata").read_text())["metadata"]  # consolidated
    vx = meta["vx/.zarray"]
    assert vx["zarr_format"] == 2 and vx["dtype"] == "<i2" and vx["fill_value"] is None
    assert vx["chunks"] == [1_000, 10, 10]  # several chunks along mid_date, 10 x 10 in space
    assert vx["compressor"]["cname"] == "zlib"
    assert meta["vx/.zattrs"]["missing_value"] == FILL

    raw = xr.open_zarr(path, mask_and_scale=False, decode_times=False)
    mid = raw["mid_date"].values
    assert not np.all(np.diff(mid) >= 0), "mid_date should be unsorted, as on S3"
    assert np.unique(mid).size < mid.size, "mid_date should repeat, as on S3"
    dt = raw["acquisition_date_img2"].values - raw["acquisition_date_img1"].values
    assert dt.min() >= 6 and dt.max() <= 548

    cube = xr_itslive.open_cube(path, variables=["vx", "vy", "vx_error"])
    valid = cube.vx.notnull().mean("mid_date").values
    assert valid.max() < 0.2 and np.count_nonzero(valid == 0) > 0  # a few percent; empty part
    assert 0.02 < made["valid_fraction"] < 0.15
    assert float(np.abs(cube.vx).max()) < 32_000  # the fill never reads as a velocity
    result = xr_itslive.invert(cube.isel(y=slice(0, 10), x=slice(0, 10)).compute(), step=30)
    assert int(result.n_obs.max()) > 30


def test_whole_cube_benchmark_runs():
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_whole_cube.py"),
            "--quick",
            "--composite",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "read + decode vx, vy:" in done.stdout and "invert (threads):" in done.stdout
    assert "composite (threads):" in done.stdout


def test_task_size_benchmark_runs(tmp_path, capsys):
    from bench_task_size import main

    path = tmp_path / "cube.zarr"
    make_cube(path, ny=20, nx=20, n_pairs=1_200, chunk_pairs=1_000, workers=1, seed=3)
    figures = main(["--cube", str(path), "--repeat", "1"])
    assert set(figures) == {10, 20}
    assert all(len(f["invert"]) == 1 and f["invert"][0] > 0 for f in figures.values())
    out = capsys.readouterr().out
    assert "10 x 10 tasks: read + decode" in out and "20 x 20 tasks" in out
