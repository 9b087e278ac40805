"""Bad input, table-driven: each case names the call, the exception and a fragment of the
message that says how to fix it (or, for input that has a right answer, checks the answer).

Plus property-based tests over random valid cubes (hypothesis): no finite value where a pixel
has no data, no NaN where it has ``min_obs`` pairs, and invariance to the order of ``mid_date``.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xr_itslive as xi
from xr_itslive.errors import (
    ChunkingError,
    DataAccessError,
    EmptySelectionError,
    InvalidParameterError,
    MissingVariableError,
    NotAnITSLiveCubeError,
    StoreConflictError,
)
from xr_itslive.synthetic import synthetic_cube

CUBE = synthetic_cube(n_pairs=240, ny=3, nx=4, seed=3)
RESULT = xi.invert(CUBE, step=30)


def cube(**changes: Any) -> xr.Dataset:
    """A copy of the shared small cube, with variables replaced by ``changes``."""
    ds = CUBE.copy()
    for name, value in changes.items():
        ds[name] = value
    return ds


def without(*names: str) -> xr.Dataset:
    return CUBE.drop_vars(list(names))


def ones(dims: tuple[str, ...] = ("mid_date", "y", "x"), **shift: float) -> xr.DataArray:
    da = xr.ones_like(CUBE.vx.transpose(*dims)) if len(dims) == 3 else None
    if da is None:
        da = xr.DataArray(
            np.ones(tuple(CUBE.sizes[d] for d in dims)),
            dims=dims,
            coords={d: CUBE[d] for d in dims},
        )
    return da.assign_coords({k: da[k] + v for k, v in shift.items()})


def bool_mask(**shift: float) -> xr.DataArray:
    return (ones(("y", "x"), **shift) > 0).astype(bool)


def undecoded() -> xr.Dataset:
    vx = CUBE.vx.fillna(-32767).astype("int16")
    return cube(vx=vx)


def lonlat_outline_on_cube_without_crs():
    import geopandas as gpd
    from shapely.geometry import box

    bare = CUBE.drop_vars([v for v in ("mapping", "spatial_ref") if v in CUBE.variables])
    for name in bare.variables:
        bare[name].attrs.pop("grid_mapping", None)
    bare.attrs = {}
    outline = gpd.GeoDataFrame(geometry=[box(85, 30, 86, 31)], crs=4326)
    return xi.invert(bare, mask=outline)


def outline_far_away():
    from shapely.geometry import box

    return xi.invert(CUBE, mask=box(0, 0, 10, 10))


def store_missing_chunk(tmp_path, key: str):
    """The cube as ITS_LIVE stores it (int16 ``vx`` with ``missing_value`` -32767 and zarr's
    ``fill_value`` null, zarr v2), with the chunk ``key`` deleted as a broken copy loses it."""
    path = tmp_path / "cube.zarr"
    encoded = CUBE[["vx"]].copy()
    encoded["vx"].encoding = {"dtype": "int16", "missing_value": -32767}
    encoded.to_zarr(path, zarr_format=2, consolidated=True)
    (path / key).unlink()
    return path


def swapped_dates() -> xr.Dataset:
    return cube(
        acquisition_date_img1=CUBE.acquisition_date_img2,
        acquisition_date_img2=CUBE.acquisition_date_img1,
    )


def nat_dates() -> xr.Dataset:
    img1 = CUBE.acquisition_date_img1.copy()
    img1[3] = np.datetime64("NaT", "ns")
    return cube(acquisition_date_img1=img1)


def negative_weights() -> xr.DataArray:
    w = ones()
    return w.where(w.mid_date != w.mid_date[0], -1.0)


def one_pixel() -> xr.Dataset:
    return CUBE.isel(y=0, x=0)


def few_pairs() -> xr.Dataset:
    return CUBE.isel(y=0, x=0, mid_date=slice(0, 2))


def to_store(tmp_path, **kwargs: Any):
    return xi.invert_to_zarr(CUBE, tmp_path / "out.zarr", progress=False, step=30, **kwargs)


def store_then_other_step(tmp_path):
    to_store(tmp_path)
    return xi.invert_to_zarr(CUBE, tmp_path / "out.zarr", progress=False, step=60)


def store_on_a_file(tmp_path):
    (tmp_path / "out.zarr").write_text("not a store")
    return to_store(tmp_path)


def store_local_with_options(tmp_path):
    return to_store(tmp_path, storage_options={"anon": True})


def cli(tmp_path, *args: str) -> tuple[int, str]:
    """Run ``xr-itslive`` in a subprocess: its exit status and what it printed."""
    source = tmp_path / "cube.zarr"
    if not source.exists():
        CUBE.to_zarr(source)
    argv = [str(a).replace("{cube}", str(source)).replace("{tmp}", str(tmp_path)) for a in args]
    run = subprocess.run(
        [sys.executable, "-m", "xr_itslive", *argv], capture_output=True, text=True, timeout=300
    )
    return run.returncode, run.stdout + run.stderr


@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[..., Any]  # takes tmp_path when ``needs_tmp``
    error: type[BaseException]
    fragment: str
    needs_tmp: bool = False


CASES = [
    # --- open_cube ------------------------------------------------------------------------
    Case(
        "open: no such path",
        lambda t: xi.open_cube(t / "missing.zarr"),
        DataAccessError,
        "missing.zarr': the path does not exist. Pass an existing local zarr path",
        True,
    ),
    Case(
        "open: unknown variable",
        lambda: xi.open_cube(xi.demo_cube_path(), ["speed"]),
        MissingVariableError,
        "Pass variables=(...) naming variables of the cube",
    ),
    Case(
        "open: lon without lat",
        lambda: xi.open_cube(lon=86.0),
        InvalidParameterError,
        "with both lon= and lat= (degrees), got lon=86.0, lat=None",
    ),
    Case(
        "open: lon out of range",
        lambda: xi.open_cube(lon=500.0, lat=30.0),
        InvalidParameterError,
        "expected -180 <= lon <= 180",
    ),
    Case(
        "open: lat out of range",
        lambda: xi.open_cube(lon=86.0, lat=95.0),
        InvalidParameterError,
        "Did you swap them? Points are (lon, lat)",
    ),
    Case(
        "open: nothing to open",
        lambda: xi.open_cube(),
        InvalidParameterError,
        "or pass a source (path or URL) instead",
    ),
    Case(
        "open: source and a point",
        lambda: xi.open_cube(xi.demo_cube_path(), lon=1, lat=2),
        InvalidParameterError,
        "pass either source or lon=/lat=, not both",
    ),
    Case(
        "find_cubes: no query",
        lambda: xi.find_cubes(),
        InvalidParameterError,
        "Example: find_cubes(point=(95.97, 29.91))",
    ),
    Case(
        "find_cubes: bad bbox",
        lambda: xi.find_cubes(bbox=(10, 10, 5, 5)),
        InvalidParameterError,
        "with xmin <= xmax and ymin <= ymax",
    ),
    Case(
        "open_composite: no year",
        lambda: xi.open_composite(),
        InvalidParameterError,
        "pass either source or both lon= and lat= (degrees)",
    ),
    Case(
        "open: a velocity chunk deleted",
        lambda t: xi.open_cube(store_missing_chunk(t, "vx/0.0.0"), ["vx"]),
        DataAccessError,
        "'vx' lacks 1 of its 1 chunks (vx/0.0.0), which zarr would read as zeros",
        True,
    ),
    Case(
        "open: a velocity chunk deleted (the fix)",
        lambda t: xi.open_cube(store_missing_chunk(t, "vx/0.0.0"), ["vx"]),
        DataAccessError,
        "Re-download the cube, or copy it again completely",
        True,
    ),
    Case(
        "open: a coordinate chunk deleted",
        lambda t: xi.open_cube(store_missing_chunk(t, "x/0"), ["vx"]),
        DataAccessError,
        "'x' lacks 1 of its 1 chunks (x/0), which zarr would read as NaN. A file was lost in a "
        "download or a copy (zarr does not complain about missing chunks). Re-download the cube",
        True,
    ),
    # --- invert: the cube ------------------------------------------------------------------
    Case(
        "invert: not a Dataset",
        lambda: xi.invert(np.zeros((3, 3))),
        NotAnITSLiveCubeError,
        "open one with xr_itslive.open_cube(...)",
    ),
    Case(
        "invert: a DataArray",
        lambda: xi.invert(CUBE.vx),
        NotAnITSLiveCubeError,
        "got DataArray; open one with xr_itslive.open_cube(...)",
    ),
    Case(
        "invert: no mid_date",
        lambda: xi.invert(CUBE.rename(mid_date="t")),
        NotAnITSLiveCubeError,
        "rename the pair dimension to 'mid_date'",
    ),
    Case(
        "invert: no acquisition dates",
        lambda: xi.invert(without("acquisition_date_img1")),
        NotAnITSLiveCubeError,
        "'acquisition_date_img1' not found",
    ),
    Case(
        "invert: no acquisition dates (the fix)",
        lambda: xi.invert(without("acquisition_date_img1")),
        NotAnITSLiveCubeError,
        "Each pair needs both acquisition dates (open the cube with xr_itslive.open_cube",
    ),
    Case(
        "invert: dates swapped",
        lambda: xi.invert(swapped_dates()),
        EmptySelectionError,
        "Swap them back",
    ),
    Case(
        "invert: no variables",
        lambda: xi.invert(CUBE, variables=()),
        InvalidParameterError,
        "variables=(",
    ),
    Case(
        "invert: unknown variable",
        lambda: xi.invert(CUBE, variables=["speed"]),
        MissingVariableError,
        "variables=(",
    ),
    Case(
        "invert: variable without pairs",
        lambda: xi.invert(cube(h=CUBE.vx.isel(mid_date=0)), variables=["h"]),
        NotAnITSLiveCubeError,
        "only per-pair variables (mid_date, y, x) can be inverted",
    ),
    Case(
        "invert: undecoded int16",
        lambda: xi.invert(undecoded()),
        NotAnITSLiveCubeError,
        "Open the cube with xr_itslive.open_cube (which decodes it)",
    ),
    Case(
        "invert: float data holding the -32767 fill",
        lambda: xi.invert(cube(vx=CUBE.vx.fillna(-32767.0))),
        NotAnITSLiveCubeError,
        "mask them: ds['vx'] = ds['vx'].where(ds['vx'] != -32767)",
    ),
    Case(
        "invert: several mid_date chunks",
        lambda: xi.invert(CUBE.chunk(mid_date=100)),
        ChunkingError,
        "ds.chunk({'mid_date': -1})",
    ),
    # --- invert: parameters ---------------------------------------------------------------
    Case("invert: step 0", lambda: xi.invert(CUBE, step=0), InvalidParameterError, "step=12"),
    Case(
        "invert: step negative",
        lambda: xi.invert(CUBE, step=-5),
        InvalidParameterError,
        "step must be a positive number of days, got step=-5; e.g. step=12",
    ),
    Case(
        "invert: step given as text",
        lambda: xi.invert(CUBE, step="12"),
        InvalidParameterError,
        "got step='12' (str); pass a number, e.g. step=12",
    ),
    Case(
        "invert: step NaN",
        lambda: xi.invert(CUBE, step=float("nan")),
        InvalidParameterError,
        "got step=nan; e.g. step=12",
    ),
    Case(
        "invert: step too fine",
        lambda: xi.invert(CUBE, step=1e-4),
        InvalidParameterError,
        "Use step >=",
    ),
    Case(
        "invert: lam negative",
        lambda: xi.invert(CUBE, lam=-1),
        InvalidParameterError,
        "e.g. lam=10.0 (0 turns the smoothness term off)",
    ),
    Case(
        "invert: lam NaN",
        lambda: xi.invert(CUBE, lam=float("nan")),
        InvalidParameterError,
        "lam=10",
    ),
    Case(
        "invert: lam a word",
        lambda: xi.invert(CUBE, lam="big"),
        InvalidParameterError,
        "lam must be a number >= 0, 'auto' or a sequence of candidates",
    ),
    Case(
        "invert: lam empty",
        lambda: xi.invert(CUBE, lam=[]),
        InvalidParameterError,
        "pass a number, 'auto' or candidates",
    ),
    Case(
        "invert: lam too small",
        lambda: xi.invert(CUBE, lam=1e-9),
        InvalidParameterError,
        "larger lam",
    ),
    Case(
        "invert: lam too large",
        lambda: xi.invert(CUBE, lam=1e14),
        InvalidParameterError,
        "smaller lam",
    ),
    Case(
        "invert: derivative 3",
        lambda: xi.invert(CUBE, derivative=3),
        InvalidParameterError,
        "derivative must be 1",
    ),
    Case(
        "invert: min_obs 0",
        lambda: xi.invert(CUBE, min_obs=0),
        InvalidParameterError,
        "positive integer",
    ),
    Case(
        "invert: min_obs float",
        lambda: xi.invert(CUBE, min_obs=2.5),
        InvalidParameterError,
        "positive integer",
    ),
    Case(
        "invert: min_obs above the number of pairs",
        lambda: xi.invert(CUBE, min_obs=CUBE.sizes["mid_date"] + 1),
        EmptySelectionError,
        "Pass a smaller min_obs (at most 240; the default is 5)",
    ),
    Case(
        "invert: robust unknown",
        lambda: xi.invert(CUBE, robust="maybe"),
        InvalidParameterError,
        "robust must be False, True, 'huber' or 'tukey'",
    ),
    Case(
        "invert: robust_iterations 0",
        lambda: xi.invert(CUBE, robust=True, robust_iterations=0),
        InvalidParameterError,
        "1 or more",
    ),
    Case(
        "invert: outliers without robust",
        lambda: xi.invert(CUBE, return_outliers=True),
        InvalidParameterError,
        "robust=True",
    ),
    Case(
        "invert: unknown engine",
        lambda: xi.invert(CUBE, engine="fortran"),
        InvalidParameterError,
        "engine must be one of ['numba', 'array'] or None",
    ),
    Case(
        "invert: start after end",
        lambda: xi.invert(CUBE, start="2020-01-01", end="2019-01-01"),
        InvalidParameterError,
        "start must be before end, got start=2020-01-01 and end=2019-01-01; swap them",
    ),
    Case(
        "invert: start not a date",
        lambda: xi.invert(CUBE, start="next spring"),
        InvalidParameterError,
        "start='next spring' as a date; pass an ISO date",
    ),
    Case(
        "composite: center_date not a date",
        lambda: xi.composite(CUBE, center_date="mid"),
        InvalidParameterError,
        "center_date='mid' as a date; pass an ISO date",
    ),
    Case(
        "filter: pairs_end not a date",
        lambda: xi.filter_pairs(CUBE, pairs_end=object()),
        InvalidParameterError,
        "as a date; pass an ISO date",
    ),
    Case(
        "invert: window without pairs",
        lambda: xi.invert(CUBE, start="1990-01-01", end="1991-01-01"),
        EmptySelectionError,
        "no image pair lies inside 1990-01-01..1991-01-08 (pairs span 2015-01-07..2022-12-13); "
        "widen start/end",
    ),
    # --- invert: weights and masks ---------------------------------------------------------
    Case(
        "invert: weights typo",
        lambda: xi.invert(CUBE, weights="errors"),
        InvalidParameterError,
        "'error'",
    ),
    Case(
        "invert: weights='error' without errors",
        lambda: xi.invert(without("vx_error"), weights="error"),
        MissingVariableError,
        "weights=None",
    ),
    Case(
        "invert: negative weights",
        lambda: xi.invert(CUBE, weights=negative_weights()).compute(),
        InvalidParameterError,
        "clip them at 0",
    ),
    Case(
        "invert: all weights zero",
        lambda: xi.invert(CUBE, weights=xr.zeros_like(CUBE.vx)),
        InvalidParameterError,
        "every pixel would come out NaN with n_obs 0. Pass positive weights",
    ),
    Case(
        "invert: weights='error' with no positive error",
        lambda: xi.invert(cube(vx_error=CUBE.vx_error * 0), weights="error"),
        InvalidParameterError,
        "weights='error' gives 'vx' no positive weight",
    ),
    Case(
        "invert: weights without mid_date",
        lambda: xi.invert(CUBE, weights=ones(("y", "x"))),
        InvalidParameterError,
        "pass a DataArray with dims ('mid_date',) or ('mid_date', 'y', 'x')",
    ),
    Case(
        "invert: weights misaligned",
        lambda: xi.invert(CUBE, weights=ones(x=1.0)),
        InvalidParameterError,
        "reindex_like",
    ),
    Case(
        "invert: weights of another grid",
        lambda: xi.invert(CUBE, weights=ones().isel(y=[0])),
        InvalidParameterError,
        "the cube's grid",
    ),
    Case(
        "invert: weights of other pairs",
        lambda: xi.invert(
            CUBE, weights=ones().drop_vars("pair_id", errors="ignore").isel(mid_date=slice(0, 10))
        ),
        InvalidParameterError,
        "same mid_date length",
    ),
    Case(
        "invert: mask not boolean",
        lambda: xi.invert(CUBE, mask=ones(("y", "x"))),
        InvalidParameterError,
        "mask > 0",
    ),
    Case(
        "invert: mask with other dims",
        lambda: xi.invert(CUBE, mask=bool_mask().expand_dims(band=2)),
        InvalidParameterError,
        "(y, x) mask",
    ),
    Case(
        "invert: mask misaligned",
        lambda: xi.invert(CUBE, mask=bool_mask(x=7.0)),
        InvalidParameterError,
        "glacier_mask",
    ),
    Case(
        "invert: mask a numpy array",
        lambda: xi.invert(CUBE, mask=np.ones((3, 4), bool)),
        InvalidParameterError,
        "xr.DataArray(array",
    ),
    Case(
        "invert: mask of the wrong type",
        lambda: xi.invert(CUBE, mask=42),
        InvalidParameterError,
        "GeoDataFrame",
    ),
    Case(
        "invert: outline far away",
        outline_far_away,
        EmptySelectionError,
        "xr_itslive.find_cubes(geometry=outline)",
    ),
    Case(
        "invert: lon/lat outline, cube without CRS",
        lonlat_outline_on_cube_without_crs,
        InvalidParameterError,
        "Give the cube its CRS, e.g. ds = ds.rio.write_crs(",
    ),
    Case(
        "invert: outline file missing",
        lambda t: xi.invert(CUBE, mask=str(t / "no.geojson")),
        DataAccessError,
        "no.geojson': it does not exist. Pass the path of a shapefile, GeoJSON",
        True,
    ),
    # --- predict ---------------------------------------------------------------------------
    Case(
        "predict: arguments swapped",
        lambda: xi.predict(RESULT, CUBE),
        InvalidParameterError,
        "takes the cube first and the inversion result second",
    ),
    Case(
        "predict: not a result",
        lambda: xi.predict(CUBE, CUBE.isel(mid_date=0)),
        InvalidParameterError,
        "pass the Dataset returned by invert()",
    ),
    Case(
        "predict: cube without dates",
        lambda: xi.predict(without("acquisition_date_img2"), RESULT),
        NotAnITSLiveCubeError,
        "'acquisition_date_img2' not found",
    ),
    Case(
        "predict: variable not inverted",
        lambda: xi.predict(CUBE, RESULT, variables=["v0"]),
        MissingVariableError,
        "Pass variables=(...) among those the result holds (the inverted ones)",
    ),
    # --- composite -------------------------------------------------------------------------
    Case(
        "composite: climatology without pairs",
        lambda: xi.composite(CUBE, climatology=(1990, 1995)),
        EmptySelectionError,
        "climatology=(2015, 2022)",
    ),
    Case(
        "composite: climatology reversed",
        lambda: xi.composite(CUBE, climatology=(2020, 2015)),
        InvalidParameterError,
        "first <= last",
    ),
    Case(
        "composite: center_date outside",
        lambda: xi.composite(CUBE, center_date="1980-01-01"),
        InvalidParameterError,
        "center_date=None",
    ),
    Case(
        "composite: unknown variable",
        lambda: xi.composite(CUBE, variables=("speed",)),
        MissingVariableError,
        "variables=(",
    ),
    Case(
        "composite: fewer pairs than min_obs",
        lambda: xi.composite(CUBE.isel(mid_date=slice(0, 20))),
        EmptySelectionError,
        "smaller min_obs",
    ),
    Case(
        "composite: weights typo",
        lambda: xi.composite(CUBE, weights="errors"),
        InvalidParameterError,
        "'error'",
    ),
    Case(
        "composite: robust typo",
        lambda: xi.composite(CUBE, robust="maybe"),
        InvalidParameterError,
        "'tukey'",
    ),
    Case(
        "composite: start after end",
        lambda: xi.composite(CUBE, start="2020-01-01", end="2019-01-01"),
        InvalidParameterError,
        "swap them",
    ),
    Case(
        "composite: undecoded int16",
        lambda: xi.composite(undecoded()),
        NotAnITSLiveCubeError,
        "Open the cube with xr_itslive.open_cube (which decodes it)",
    ),
    Case(
        "composite: float data holding the -32767 fill",
        lambda: xi.composite(cube(vx=CUBE.vx.fillna(-32767.0))),
        NotAnITSLiveCubeError,
        "mask them: ds['vx'] = ds['vx'].where(ds['vx'] != -32767)",
    ),
    Case(
        "composite: several mid_date chunks",
        lambda: xi.composite(CUBE.chunk(mid_date=100)),
        ChunkingError,
        "ds.chunk({'mid_date': -1})",
    ),
    Case(
        "composite: min_obs 0",
        lambda: xi.composite(CUBE, min_obs=0),
        InvalidParameterError,
        "positive integer",
    ),
    Case(
        "seasonal: given a cube",
        lambda: xi.seasonal(CUBE),
        InvalidParameterError,
        "xr_itslive.invert returns",
    ),
    Case(
        "seasonal: weights typo",
        lambda: xi.seasonal(RESULT, weights="error"),
        InvalidParameterError,
        "'std' or None",
    ),
    # --- invert_to_zarr --------------------------------------------------------------------
    Case(
        "store: resumed with other parameters",
        store_then_other_step,
        StoreConflictError,
        "Write to a new store, or pass overwrite=True (CLI: --overwrite)",
        True,
    ),
    Case(
        "store: the path is a file",
        store_on_a_file,
        StoreConflictError,
        "Write to a new store, or pass overwrite=True (CLI: --overwrite)",
        True,
    ),
    Case(
        "store: storage_options on a local path",
        store_local_with_options,
        InvalidParameterError,
        "they apply only to URLs such as 's3://bucket/out.zarr'",
        True,
    ),
    Case(
        "store: chunks of an unknown dim",
        lambda t: to_store(t, chunks={"band": 2}),
        InvalidParameterError,
        "pass e.g. chunks={'y': 20, 'x': 20}",
        True,
    ),
    Case(
        "store: bad parameter before writing",
        lambda t: to_store(t, lam=-1),
        InvalidParameterError,
        "got lam=-1.0; e.g. lam=10.0",
        True,
    ),
    # --- Gaussian process ------------------------------------------------------------------
    Case(
        "gp: several pixels",
        lambda: xi.gp_fit_series(CUBE, "vx"),
        NotAnITSLiveCubeError,
        "select a pixel first",
    ),
    Case(
        "gp: unknown variable",
        lambda: xi.gp_fit_series(one_pixel(), "speed"),
        MissingVariableError,
        "Pass variable=... naming the velocity",
    ),
    Case(
        "gp: too few pairs",
        lambda: xi.gp_fit_series(few_pairs(), "vx"),
        EmptySelectionError,
        "got 1 (of 2); select a longer period or another pixel",
    ),
    Case(
        "gp: missing error variable",
        lambda: xi.gp_fit_series(one_pixel().drop_vars("vx_error"), "vx", weights="error"),
        MissingVariableError,
        "weights=None",
    ),
    Case(
        "gp: unknown likelihood",
        lambda: xi.gp_fit_series(one_pixel(), "vx", likelihood="cauchy"),
        InvalidParameterError,
        "student-t",
    ),
    Case(
        "gp: no pairs",
        lambda: xi.gp_fit_series(one_pixel().isel(mid_date=slice(0, 0)), "vx"),
        EmptySelectionError,
        "got 0 (of 0); select a longer period or another pixel",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_a_clear_error(case: Case, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(case.error) as raised:
            case.call(tmp_path) if case.needs_tmp else case.call()
    assert case.fragment in str(raised.value), str(raised.value)


CLI_CASES = [
    (
        "no such source",
        ["invert", "{tmp}/missing.zarr", "--out", "{tmp}/o.zarr"],
        "missing.zarr': the path does not exist. Pass an existing local zarr path",
    ),
    ("bad step", ["invert", "{cube}", "--out", "{tmp}/o.zarr", "--step", "-3"], "step=12"),
    (
        "unknown variable",
        ["invert", "{cube}", "--out", "{tmp}/o.zarr", "--variables", "speed"],
        "Pass variables=(...) naming variables of the cube",
    ),
    (
        "bad lam",
        ["invert", "{cube}", "--out", "{tmp}/o.zarr", "--lam", "x"],
        "expected a number, 'auto' or comma-separated candidates such as '1,10,100'",
    ),
    (
        "unknown mission",
        ["invert", "{cube}", "--out", "{tmp}/o.zarr", "--missions", "S9"],
        "valid missions: 'S1' (Sentinel-1)",
    ),
    (
        "mask file missing",
        ["invert", "{cube}", "--out", "{tmp}/o.zarr", "--mask", "{tmp}/no.geojson"],
        "no.geojson': it does not exist. Pass the path of a shapefile, GeoJSON",
    ),
    ("no command", [], "the following arguments are required: COMMAND"),
    (
        "composite: climatology without pairs",
        ["composite", "{cube}", "--out", "{tmp}/c.zarr", "--climatology", "1990", "1995"],
        "Pass climatology=(first, last) years inside the data",
    ),
]


@pytest.mark.parametrize("argv,fragment", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input_exits_with_a_message_not_a_traceback(argv, fragment, tmp_path):
    code, printed = cli(tmp_path, *argv)
    assert code != 0
    assert "Traceback" not in printed, printed
    assert fragment in printed, printed


# --- input that has a right answer -------------------------------------------------------


def test_all_nan_pixel_gives_nan_and_no_pairs():
    vx = CUBE.vx.copy()
    vx[:, 0, 0] = np.nan
    result = xi.invert(cube(vx=vx), variables=["vx"], step=30)
    assert int(result.n_obs[0, 0]) == 0
    assert bool(result.vx[:, 0, 0].isnull().all())
    assert bool(result.vx[:, 1, 1].notnull().all())


def test_unsorted_mid_date_gives_the_sorted_answer():
    shuffled = CUBE.isel(mid_date=np.random.default_rng(0).permutation(CUBE.sizes["mid_date"]))
    xr.testing.assert_allclose(xi.invert(shuffled, step=30), RESULT, rtol=1e-5)


def test_pairs_with_a_missing_date_are_dropped_with_a_warning():
    with pytest.warns(UserWarning, match="missing date"):
        result = xi.invert(nat_dates(), step=30)
    expected = xi.invert(
        CUBE.isel(mid_date=[i for i in range(CUBE.sizes["mid_date"]) if i != 3]), step=30
    )
    xr.testing.assert_allclose(result.vx, expected.vx, rtol=1e-5)


def test_unsolvable_pixels_are_reported():
    # one column of pixels sees only the first half of the pairs: with so little smoothness
    # nothing carries its series across the second half, so it is NaN, and a warning says why
    cut = np.sort(CUBE.acquisition_date_img2.values)[120]
    sparse = CUBE.vx.where((CUBE.acquisition_date_img2 < cut) | (CUBE.x != CUBE.x[0]))
    with pytest.warns(xi.UnsolvedPixelsWarning, match="raise it"):
        result = xi.invert(cube(vx=sparse), variables=["vx"], step=30, lam=0.1, min_obs=3)
    unsolved = result.vx.isnull().all("time")
    assert bool(unsolved.isel(x=0).all()) and not bool(unsolved.isel(x=slice(1, None)).any())
    assert bool((result.n_obs.isel(x=0) >= 3).all())


# --- property-based: random valid cubes ------------------------------------------------------

cubes = st.builds(
    lambda seed, n_pairs, empty, gaps: synthetic_cube(
        n_pairs=n_pairs, ny=2, nx=3, seed=seed, empty_pixels=empty, gap_fraction=gaps
    ),
    seed=st.integers(0, 10_000),
    n_pairs=st.integers(40, 160),
    empty=st.integers(0, 2),
    gaps=st.floats(0.0, 0.6),
)
PROPERTIES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTIES
@given(ds=cubes, min_obs=st.integers(1, 12))
def test_no_value_without_data_and_no_nan_with_enough(ds, min_obs):
    result = xi.invert(ds, step=30, lam=10, min_obs=min_obs)
    n_valid = ds.vx.notnull().sum("mid_date")
    solved = result.vx.notnull().all("time")
    unsolved = result.vx.isnull().all("time")
    assert bool(unsolved.where(n_valid < min_obs, True).all()), "a value without enough data"
    assert bool(solved.where(n_valid >= min_obs, True).all()), "NaN despite enough pairs"
    np.testing.assert_array_equal(
        result.n_obs.where(n_valid >= min_obs, 0), n_valid.where(n_valid >= min_obs, 0)
    )


@PROPERTIES
@given(ds=cubes, seed=st.integers(0, 10_000), robust=st.sampled_from([False, True]))
def test_invariant_to_the_order_of_mid_date(ds, seed, robust):
    order = np.random.default_rng(seed).permutation(ds.sizes["mid_date"])
    first = xi.invert(ds, step=30, robust=robust)
    second = xi.invert(ds.isel(mid_date=order), step=30, robust=robust)
    xr.testing.assert_allclose(first, second, rtol=1e-4, atol=1e-3)
