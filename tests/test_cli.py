"""The ``xr-itslive`` command line: invert to a store, resume, refuse, outline, console entry."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import xarray as xr
from conftest import GLACIER_CUBE, ITSLIVE_DATA, REPO, requires_shared

import xr_itslive
from xr_itslive.cli import build_parser, main
from xr_itslive.workflows.store import MARKER_GROUP, store_status

OUTLINE = ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson"

pytestmark = requires_shared


@pytest.fixture(scope="module")
def edge_cube(tmp_path_factory):
    """4×6 real pixels at the glacier's edge (some inside the outline), all 47,892 pairs."""
    raw = xr.open_zarr(GLACIER_CUBE, consolidated=True, zarr_format=2)
    keep = ["vx", "vy", "vx_error", "vy_error", "acquisition_date_img1", "acquisition_date_img2"]
    keep += ["mapping"] if "mapping" in raw.variables else []
    sub = raw[keep].isel(y=slice(18, 22), x=slice(3, 9))
    for var in sub.variables.values():
        for key in ("chunks", "preferred_chunks", "compressor", "filters"):
            var.encoding.pop(key, None)
    path = tmp_path_factory.mktemp("cli") / "edge.zarr"
    # stored 1 x 2: open_cube's tasks are 2 x 2 of them, so the CLI writes 4 chunks
    sub.chunk({"mid_date": -1, "y": 1, "x": 2}).to_zarr(path, zarr_format=2, consolidated=True)
    return str(path)


def expected_result(source, **kwargs):
    cube = xr_itslive.open_cube(source, variables=["vx", "vy"])
    return xr_itslive.invert(cube, **kwargs).compute()


def test_invert_then_rerun_says_complete(edge_cube, tmp_path, capsys):
    out = str(tmp_path / "out.zarr")
    args = ["invert", edge_cube, "--out", out, "--step", "30", "--lam", "20", "--no-progress"]
    assert main(args) == 0
    assert "wrote 4 of 4 chunks" in capsys.readouterr().out
    written = xr.open_zarr(out).load()
    xr.testing.assert_identical(
        written.drop_attrs(), expected_result(edge_cube, step=30.0, lam=20.0).drop_attrs()
    )
    assert written.attrs["lam"] == 20.0 and written.attrs["step_days"] == 30.0

    assert main(args) == 0
    assert "already complete (4 chunks); nothing to do" in capsys.readouterr().out


def test_rerun_resumes_an_unfinished_store(edge_cube, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    args = ["invert", edge_cube, "--out", str(out), "--step", "60", "--no-progress"]
    assert main(args) == 0
    for marker in sorted((out / MARKER_GROUP / "done").iterdir())[:3]:
        marker.unlink()  # as if killed after one chunk
    capsys.readouterr()
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "wrote 3 of 4 chunks" in said and "1 were done before" in said
    assert store_status(out).complete
    xr.testing.assert_identical(
        xr.open_zarr(out).load().drop_attrs(), expected_result(edge_cube, step=60.0).drop_attrs()
    )


def test_other_parameters_need_overwrite(edge_cube, tmp_path, capsys):
    out = str(tmp_path / "out.zarr")
    base = ["invert", edge_cube, "--out", out, "--step", "60", "--no-progress"]
    assert main(base) == 0
    capsys.readouterr()
    assert main([*base, "--derivative", "1"]) == 1
    err = capsys.readouterr().err
    assert "derivative (store: 2, this run: 1)" in err and "--overwrite" in err
    assert main([*base, "--derivative", "1", "--overwrite"]) == 0
    assert store_status(out).parameters["derivative"] == 1


def test_outline_masks_pixels(edge_cube, tmp_path):
    out = str(tmp_path / "out.zarr")
    argv = ["invert", edge_cube, "--out", out, "--step", "60", "--mask", str(OUTLINE)]
    assert main([*argv, "--min-obs", "3", "--variables", "vx", "--no-progress"]) == 0
    written = xr.open_zarr(out).load()
    cube = xr_itslive.open_cube(edge_cube, variables=["vx"])
    inside = xr_itslive.glacier_mask(cube, str(OUTLINE))
    assert 0 < int(inside.sum()) < inside.size  # the window straddles the outline
    assert (written["n_obs"].where(~inside, 0) == 0).all()
    assert (written["n_obs"].where(inside, 1) > 0).all()
    assert written["vx"].where(~inside).isnull().all()
    assert written["vx"].where(inside).notnull().any()
    assert "vy" not in written and "v" not in written
    assert written.attrs["min_obs"] == 3
    recorded = store_status(out).parameters["mask"]  # the outline's path and content
    assert recorded["file"] == str(OUTLINE) and len(recorded["sha256"]) == 16


def test_every_inversion_parameter_is_a_flag():
    parser = build_parser()
    args = parser.parse_args(
        ["invert", "cube.zarr", "--out", "o.zarr", "--step", "6", "--lam", "1,10,100",
         "--derivative", "1", "--start", "2018-01-01", "--end", "2020-01-01", "--min-obs", "7",
         "--variables", "vx", "--mask", "g.geojson", "--weights", "error", "--robust",
         "huber", "--robust-iterations", "2", "--uncertainty", "--return-outliers",
         "--engine", "array", "--scheduler", "local", "--workers", "2", "--chunks", "5",
         "--no-progress", "--overwrite", "--storage-option", "anon=false"]
    )  # fmt: skip
    assert args.lam == [1.0, 10.0, 100.0] and args.storage_option == [("anon", False)]
    import inspect

    invert_parameters = set(inspect.signature(xr_itslive.invert).parameters) - {"ds"}
    flags = {action.dest for action in parser._subparsers._group_actions[0].choices[
        "invert"]._actions}  # fmt: skip
    assert invert_parameters <= flags, invert_parameters - flags


def test_argument_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["invert", "cube.zarr"])
    assert stop.value.code == 2 and "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["invert", "cube.zarr", "--out", "o.zarr", "--lam", "smooth"])
    assert stop.value.code == 2 and "'auto' or comma-separated" in capsys.readouterr().err


def test_library_errors_exit_1(edge_cube, tmp_path, capsys):
    out = str(tmp_path / "out.zarr")
    assert main(["invert", edge_cube, "--out", out, "--variables", "speed"]) == 1
    assert "speed" in capsys.readouterr().err
    assert main(["invert", edge_cube, "--out", out, "--scheduler", "nowhere"]) == 1
    assert "scheduler='nowhere'" in capsys.readouterr().err


def test_console_entry_runs(edge_cube, tmp_path):
    out = str(tmp_path / "out.zarr")
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    command = [sys.executable, "-m", "xr_itslive.cli", "invert", edge_cube, "--out", out,
               "--step", "60", "--scheduler", "threads"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "wrote 4 of 4 chunks" in done.stdout
    assert "chunk" in done.stderr  # the progress bar
    again = subprocess.run(
        [sys.executable, "-m", "xr_itslive", *command[3:]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0 and "already complete" in again.stdout


def test_old_flag_spellings_still_work_and_say_so(capsys):
    parser = build_parser()
    with pytest.warns(DeprecationWarning, match="--outline is deprecated.*use --mask"):
        old = parser.parse_args(
            ["invert", "c.zarr", "--out", "o.zarr", "--outline", "g.geojson", "--chunk-size", "5"]
        )
    err = capsys.readouterr().err
    assert "--outline is deprecated" in err and "--chunk-size is deprecated" in err
    new = parser.parse_args(["invert", "c.zarr", "--out", "o.zarr", "--mask", "g.geojson",
                             "--chunks", "5"])  # fmt: skip
    assert (old.mask, old.chunks) == (new.mask, new.chunks) == ("g.geojson", 5)
    assert "deprecated" not in capsys.readouterr().err


def test_cli_defaults_are_the_library_defaults():
    """The CLI restates no default: they come from xr_itslive.workflows.invert.DEFAULTS."""
    import inspect

    args = build_parser().parse_args(["invert", "c.zarr", "--out", "o.zarr"])
    signature = inspect.signature(xr_itslive.invert).parameters
    for name in ("step", "lam", "derivative", "min_obs"):
        assert getattr(args, name) == signature[name].default
    assert tuple(args.variables) == tuple(signature["variables"].default)
