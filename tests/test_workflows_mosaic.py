"""invert_mosaic: glaciers over several cubes, on one time grid and one spatial grid.

The real glacier cube cut in two halves; one half moved into the neighbouring UTM zone (its
components rotated into that zone's axes, independently of the library's own rotation); a
uniform eastward flow across a UTM seam; overlaps, masks and bad input.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pyproj
import pytest
import xarray as xr
from conftest import (
    GLACIER_CUBE,
    ITSLIVE_DATA,
    REPO,
    make_public_bucket,
    raise_if_dask_computes,
    requires_shared,
    upload_tree,
)
from pyproj import Transformer

import xr_itslive
from xr_itslive.errors import EmptySelectionError, InvalidParameterError
from xr_itslive.io.cf import read_list_attribute  # lists are JSON text (netCDF)

pytestmark = requires_shared
OUTLINE = ITSLIVE_DATA / "N30E090_glacier_outline_rgi7.geojson"
KWARGS = dict(step=12.0, lam=10.0, weights="error", robust=True, uncertainty=True)
NAMES = ["vx", "vy", "vx_error", "vy_error"]


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return xr_itslive.open_cube(GLACIER_CUBE, variables=NAMES)


@pytest.fixture(scope="module")
def whole(cube) -> xr.Dataset:
    return xr_itslive.invert(cube, **KWARGS).compute()


def test_two_halves_equal_the_whole_cube(cube, whole):
    left, right = cube.isel(x=slice(0, 17)), cube.isel(x=slice(17, None))
    with raise_if_dask_computes():  # building the graph reads no pixel
        lazy = xr_itslive.invert_mosaic([right, left], **KWARGS)
    assert lazy["vx"].chunks is not None
    mosaic = lazy.compute()
    assert mosaic["vx"].dims == whole["vx"].dims == ("time", "y", "x")
    np.testing.assert_array_equal(mosaic["time"].values, whole["time"].values)
    np.testing.assert_array_equal(mosaic["x"].values, whole["x"].values)
    for name in ("vx", "vy", "v", "vx_std", "vy_std", "n_obs"):
        np.testing.assert_array_equal(mosaic[name].values, whole[name].values, err_msg=name)
    # each pixel says where it came from: the right half was given first
    source = mosaic["source"].values
    solved = whole["n_obs"].values >= 5
    assert set(np.unique(source[:, 17:][solved[:, 17:]])) == {0}
    assert set(np.unique(source[:, :17][solved[:, :17]])) == {1}
    assert (source[whole["n_obs"].values == 0] == -1).all()
    assert (
        mosaic.rio.crs.to_epsg() == 32646
        and read_list_attribute(mosaic.attrs, "mosaic_resampled") == []
    )


def _move_cube(cube: xr.Dataset, target: str) -> xr.Dataset:
    """The pair cube in another CRS, made independently of the library: components rotated
    into the target's axes (from the true-east direction of each grid, through lon/lat),
    then each target pixel takes its nearest source pixel (pyproj, by hand)."""
    xs, ys = np.meshgrid(cube["x"].values, cube["y"].values)
    to_lonlat = Transformer.from_crs("EPSG:32646", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(xs, ys)

    def east_angle(crs):  # angle of geographic east in a grid's axes
        forward = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        x0, y0 = forward.transform(lon, lat)
        x1, y1 = forward.transform(lon + 1e-4, lat)
        return np.arctan2(y1 - y0, x1 - x0)

    theta = east_angle(target) - east_angle("EPSG:32646")  # source axes -> target axes
    grid = {"y": cube.y, "x": cube.x}
    cos = xr.DataArray(np.cos(theta), dims=("y", "x"), coords=grid)
    sin = xr.DataArray(np.sin(theta), dims=("y", "x"), coords=grid)
    rotated = cube.assign(
        vx=cube["vx"] * cos - cube["vy"] * sin, vy=cube["vx"] * sin + cube["vy"] * cos
    )
    # the target lattice (120 m, centres at 60 + k 120) over the source's extent
    there = Transformer.from_crs("EPSG:32646", target, always_xy=True)
    tx, ty = there.transform(xs, ys)
    new_x = np.arange(np.floor(tx.min() / 120) * 120 + 60, tx.max() + 60, 120.0)
    new_y = np.arange(np.ceil(ty.max() / 120) * 120 - 60, ty.min() - 60, -120.0)
    gx, gy = np.meshgrid(new_x, new_y)
    back = Transformer.from_crs(target, "EPSG:32646", always_xy=True)
    sx, sy = back.transform(gx, gy)
    x0, y0 = float(cube.x[0]), float(cube.y[0])
    ix = np.rint((sx - x0) / 120.0).astype(int)
    iy = np.rint((y0 - sy) / 120.0).astype(int)
    inside = (ix >= 0) & (ix < cube.sizes["x"]) & (iy >= 0) & (iy < cube.sizes["y"])
    pick = {
        "x": xr.DataArray(np.where(inside, ix, 0), dims=("y", "x")),
        "y": xr.DataArray(np.where(inside, iy, 0), dims=("y", "x")),
    }
    keep = xr.DataArray(inside, dims=("y", "x"), coords={"y": new_y, "x": new_x})
    moved = xr.Dataset(
        {
            name: rotated[name]
            .drop_vars(["x", "y", "spatial_ref"], errors="ignore")
            .isel(pick)
            .assign_coords(y=new_y, x=new_x)
            .where(keep)
            for name in ("vx", "vy")
        }
    )
    for name in ("vx_error", "vy_error"):
        moved[name] = cube[name]
    moved = moved.chunk({"mid_date": -1, "y": 10, "x": 10}).rio.write_crs(target)
    return moved.transpose("mid_date", "y", "x")


def test_a_half_in_the_neighbouring_utm_zone_is_rotated_and_resampled(cube):
    # A linear fit (no reweighting, equal weights): rotating the pairs' components then
    # commutes with the inversion, so the round trip can be checked to round-off. (Robust
    # reweighting and per-component error weights are not rotation-invariant.)
    linear = dict(step=12.0, lam=10.0, uncertainty=True)
    whole = xr_itslive.invert(cube, **linear).compute()
    left, right = cube.isel(x=slice(0, 20)), cube.isel(x=slice(20, None))
    moved = _move_cube(right, "EPSG:32645")
    assert moved.rio.crs.to_epsg() == 32645
    mosaic = xr_itslive.invert_mosaic([left, moved], crs="EPSG:32646", **linear).compute()
    _check_rotated_stds(mosaic, moved, linear)
    assert (
        read_list_attribute(mosaic.attrs, "mosaic_resampled") and mosaic.rio.crs.to_epsg() == 32646
    )
    assert np.isin(mosaic["source"].values, (-1, 0, 1)).all()
    # the rotated footprint of the moved half reaches a little past the cube: a larger grid
    # on the same lattice, holding the cube's
    assert set(whole["x"].values) <= set(mosaic["x"].values)
    assert set(whole["y"].values) <= set(mosaic["y"].values)
    mosaic = mosaic.sel(x=whole["x"], y=whole["y"])
    # the left half is placed as it is
    for name in ("vx", "vy"):
        np.testing.assert_array_equal(mosaic[name].values[..., :20], whole[name].values[..., :20])
    # the right half went to UTM 45 and back: the same velocities where the round trip
    # landed on the same pixel (most of them), rotated back into UTM 46's axes
    a = whole.isel(x=slice(20, None))
    b = mosaic.isel(x=slice(20, None))
    both = np.isfinite(a["vx"].values) & np.isfinite(b["vx"].values)
    assert both.sum() > 0.5 * np.isfinite(a["vx"].values).sum()
    speed = np.hypot(a["vx"].values, a["vy"].values)[both]
    error = np.hypot(a["vx"].values - b["vx"].values, a["vy"].values - b["vy"].values)[both]
    # where the round trip came back to the same pixel (n_obs equal), the same velocities to
    # float32 round-off; a missing or reversed rotation (about 3 degrees between the zones
    # here) would leave errors of ~5% (~10%) of the speed
    same = (a["n_obs"].values == b["n_obs"].values)[None] & both
    assert same.sum() > 0.9 * both.sum()
    relative = np.hypot(a["vx"].values - b["vx"].values, a["vy"].values - b["vy"].values)
    relative = relative / np.maximum(np.hypot(a["vx"].values, a["vy"].values), 1.0)
    assert np.median(relative[same]) < 1e-5 and np.percentile(relative[same], 99) < 1e-3
    assert np.median(error / speed) < 1e-3, np.median(error / speed)
    direction = np.degrees(
        np.arctan2(a["vy"].values, a["vx"].values) - np.arctan2(b["vy"].values, b["vx"].values)
    )[both]
    assert abs(np.median((direction + 180) % 360 - 180)) < 0.1


def _check_rotated_stds(mosaic: xr.Dataset, moved: xr.Dataset, options: dict) -> None:
    """The moved cube's part of ``mosaic``, rebuilt by hand from that cube inverted alone on
    the mosaic's time grid (the docstring's way to predict a cube in another CRS): at each
    output pixel it took, the source pixel (the nearest, through pyproj), its components
    rotated by the angle between the grids (from geographic east in each, through lon/lat)
    and its variances propagated through that rotation:
    σx'² = σx² cos²θ + σy² sin²θ, σy'² = σx² sin²θ + σy² cos²θ."""
    grid = {"start": mosaic.attrs["start"], "end": mosaic.attrs["end"]}
    own = xr_itslive.invert(moved, **grid, **{**options, "step": mosaic.attrs["step_days"]})
    own = own.compute()
    np.testing.assert_array_equal(own["time"].values, mosaic["time"].values)  # the same cells
    predicted = xr_itslive.predict(moved, own)  # per cube, in its own CRS
    assert predicted["vx"].dims == ("mid_date", "y", "x")
    assert np.isfinite(predicted["vx"].values).any()

    rows, cols = np.nonzero(mosaic["source"].values == 1)  # pixels from the moved cube
    tx, ty = mosaic["x"].values[cols], mosaic["y"].values[rows]
    sx, sy = Transformer.from_crs(32646, 32645, always_xy=True).transform(tx, ty)
    ix = np.rint((sx - float(moved.x[0])) / 120.0).astype(int)
    iy = np.rint((float(moved.y[0]) - sy) / 120.0).astype(int)
    assert ((ix >= 0) & (ix < moved.sizes["x"]) & (iy >= 0) & (iy < moved.sizes["y"])).all()
    lon, lat = Transformer.from_crs(32645, 4326, always_xy=True).transform(
        moved.x.values[ix], moved.y.values[iy]
    )

    def east_angle(crs):  # angle of geographic east in a grid's axes
        forward = Transformer.from_crs(4326, crs, always_xy=True)
        x0, y0 = forward.transform(lon, lat)
        x1, y1 = forward.transform(lon + 1e-4, lat)
        return np.arctan2(y1 - y0, x1 - x0)

    theta = east_angle(32646) - east_angle(32645)  # moved cube's axes -> output axes
    cos, sin = np.cos(theta), np.sin(theta)

    def at_source(name):  # (time, pixel) of the moved cube's own result
        return own[name].values[:, iy, ix].astype(float)

    def in_mosaic(name):
        return mosaic[name].values[:, rows, cols].astype(float)

    vx, vy = at_source("vx"), at_source("vy")
    rotated_vx, rotated_vy = vx * cos - vy * sin, vx * sin + vy * cos
    # the pixels where odc-geo's nearest neighbour took the same source pixel as pyproj's
    # (all but those whose centre falls within round-off of a pixel edge)
    scale = np.maximum(np.hypot(vx, vy), 1.0)
    same = np.abs(rotated_vx - in_mosaic("vx")) / scale < 1e-5
    same &= np.abs(rotated_vy - in_mosaic("vy")) / scale < 1e-5
    solved = np.isfinite(vx) & np.isfinite(in_mosaic("vx_std"))
    assert (same | ~solved).all(axis=0).mean() > 0.95, (same | ~solved).all(axis=0).mean()
    keep = same & solved
    assert keep.sum() > 1000
    var_x, var_y = at_source("vx_std") ** 2, at_source("vy_std") ** 2
    expected_x = np.sqrt(var_x * cos**2 + var_y * sin**2)
    expected_y = np.sqrt(var_x * sin**2 + var_y * cos**2)
    for name, expected in (("vx_std", expected_x), ("vy_std", expected_y)):
        got = in_mosaic(name)
        relative = np.abs(got - expected)[keep] / expected[keep]
        assert np.max(relative) < 2e-6, (name, np.max(relative))
    # the check can tell: the stds before the rotation differ from the rotated ones by far
    # more than the tolerance where the two components' stds differ (about 3 degrees here)
    unrotated = np.abs(at_source("vx_std") - in_mosaic("vx_std"))[keep] / expected_x[keep]
    assert np.median(unrotated) > 50 * 2e-6, np.median(unrotated)


def _flow_cube(crs: str, lon: tuple[float, float], lat: tuple[float, float]) -> xr.Dataset:
    """A cube of a uniform flow of 100 m/yr towards geographic east, in its own grid's axes."""
    forward = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    x0, y0 = forward.transform(lon[0], lat[0])
    x1, y1 = forward.transform(lon[1], lat[1])
    xs = np.arange(np.floor(x0 / 120) * 120 + 60, x1, 120.0)
    ys = np.arange(np.ceil(y1 / 120) * 120 - 60, y0, -120.0)
    gx, gy = np.meshgrid(xs, ys)
    back = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    glon, glat = back.transform(gx, gy)
    ex, ey = forward.transform(glon + 1e-4, glat)
    angle = np.arctan2(ey - gy, ex - gx)
    rng = np.random.default_rng(0)
    n = 80
    img1 = np.datetime64("2018-01-01") + rng.integers(0, 700, n).astype("timedelta64[D]")
    img2 = img1 + rng.integers(6, 200, n).astype("timedelta64[D]")
    ones = np.ones((n, ys.size, xs.size))
    ds = xr.Dataset(
        {
            "vx": (("mid_date", "y", "x"), 100 * np.cos(angle) * ones),
            "vy": (("mid_date", "y", "x"), 100 * np.sin(angle) * ones),
        },
        coords={
            "mid_date": img1 + (img2 - img1) / 2,
            "acquisition_date_img1": ("mid_date", img1.astype("datetime64[ns]")),
            "acquisition_date_img2": ("mid_date", img2.astype("datetime64[ns]")),
            "x": xs,
            "y": ys,
        },
    )
    return ds.rio.write_crs(crs).chunk({"mid_date": -1, "y": 8, "x": 8})


def test_a_uniform_eastward_flow_stays_eastward_across_the_seam():
    # UTM zones 45 and 46 meet at 90°E; at 30°N their grids differ by about 3 degrees
    west = _flow_cube("EPSG:32645", (89.93, 90.0), (30.0, 30.05))
    east = _flow_cube("EPSG:32646", (90.0, 90.07), (30.0, 30.05))
    mosaic = xr_itslive.invert_mosaic([east, west], step=30.0).compute()
    assert mosaic.rio.crs.to_epsg() == 32646
    assert set(np.unique(mosaic["source"].values)) >= {0, 1}
    # geographic east in UTM 46's axes at every output pixel
    gx, gy = np.meshgrid(mosaic["x"].values, mosaic["y"].values)
    back = Transformer.from_crs("EPSG:32646", "EPSG:4326", always_xy=True)
    forward = Transformer.from_crs("EPSG:4326", "EPSG:32646", always_xy=True)
    lon, lat = back.transform(gx, gy)
    ex, ey = forward.transform(lon + 1e-4, lat)
    expected = np.degrees(np.arctan2(ey - gy, ex - gx))
    got = np.degrees(np.arctan2(mosaic["vy"].values, mosaic["vx"].values))
    valid = np.isfinite(got)
    assert valid[:, mosaic["source"].values == 1].any()  # the resampled cube contributes
    assert np.nanmax(np.abs(got - expected[None])[valid]) < 0.01
    np.testing.assert_allclose(mosaic["v"].values[valid], 100.0, rtol=1e-4)


def test_overlap_goes_to_the_cube_with_more_pairs(cube):
    small = cube[["vx", "vy"]].isel(x=slice(5, 25), y=slice(5, 25))
    fewer = small.isel(mid_date=slice(0, None, 3))  # a third of the pairs, same pixels
    mosaic = xr_itslive.invert_mosaic([fewer, small], step=60.0).compute()
    expected = xr_itslive.invert(small, step=60.0, start=mosaic.attrs["start"]).compute()
    solved = mosaic["n_obs"].values > 0
    assert (mosaic["source"].values[solved] == 1).all()
    np.testing.assert_array_equal(mosaic["vx"].values, expected["vx"].values)
    tie = xr_itslive.invert_mosaic([small, small], step=60.0).compute()
    assert (tie["source"].values[tie["n_obs"].values > 0] == 0).all()  # ties: the first


def test_mask_limits_the_solve(cube):
    left, right = cube.isel(x=slice(0, 20)), cube.isel(x=slice(20, None))
    mosaic = xr_itslive.invert_mosaic([left, right], mask=OUTLINE, step=60.0).compute()
    inside = xr_itslive.glacier_mask(cube, OUTLINE)
    window = inside.sel(x=mosaic.x, y=mosaic.y)
    assert (mosaic["n_obs"].values[~window.values] == 0).all()
    assert (mosaic["n_obs"].values[window.values] > 0).any()
    # a cube the outline misses is left out with a warning; all missed is an error
    far = cube.assign_coords(x=cube.x + 500_000.0)
    with pytest.warns(UserWarning, match="holds no pixel of the mask and is left out"):
        xr_itslive.invert_mosaic([left, far], mask=OUTLINE, step=60.0)
    with pytest.raises(EmptySelectionError, match="the mask misses every cube"):
        xr_itslive.invert_mosaic([far], mask=OUTLINE, step=60.0)


def test_bad_input_names_the_fix(cube):
    with pytest.raises(InvalidParameterError, match="sequence of cubes"):
        xr_itslive.invert_mosaic(cube)
    with pytest.raises(InvalidParameterError, match="cubes is empty"):
        xr_itslive.invert_mosaic([])
    with pytest.raises(InvalidParameterError, match="return_outliers=True has no meaning"):
        xr_itslive.invert_mosaic([cube], robust=True, return_outliers=True)
    with pytest.raises(InvalidParameterError, match="hold Datasets, paths, URLs"):
        xr_itslive.invert_mosaic([42])
    counts = xr.ones_like(cube["x"] * cube["y"], dtype=int)
    with pytest.raises(InvalidParameterError, match=r"got dtype int64; use e.g. mask > 0"):
        xr_itslive.invert_mosaic([cube], mask=counts)
    bare = cube[["vx", "vy"]].isel(x=slice(0, 3), y=slice(0, 3))
    bare = bare.drop_vars(["spatial_ref", "mapping"], errors="ignore")
    bare.attrs.pop("projection", None)
    with pytest.raises(InvalidParameterError, match=r"record no CRS.*open_cube.*crs="):
        xr_itslive.invert_mosaic([bare], step=60.0)
    with pytest.raises(InvalidParameterError, match=r"gpu=True solves one cube at a time"):
        xr_itslive.invert_to_zarr([cube, cube], "unused.zarr", gpu=True)


def test_a_crs_that_cannot_be_resolved_names_the_fix(cube):
    fix = r"crs='EPSG:99999' is not a CRS that pyproj can resolve .*crs=\"EPSG:32646\""
    with pytest.raises(InvalidParameterError, match=fix):
        xr_itslive.invert_mosaic([cube], crs="EPSG:99999")
    with pytest.raises(InvalidParameterError, match=r"crs=99999 is not a CRS .*pyproj\.CRS"):
        xr_itslive.invert_mosaic([cube], crs=99999)
    # the forms the message names work (the graph only: nothing is computed)
    small = cube[["vx", "vy"]].isel(x=slice(0, 4), y=slice(0, 4))
    for crs in (32646, "EPSG:32646", pyproj.CRS.from_epsg(32646)):
        assert xr_itslive.invert_mosaic([small], crs=crs, step=60.0).rio.crs.to_epsg() == 32646


def test_step_is_checked_before_any_cube_is_read(tmp_path):
    missing = str(tmp_path / "not_there.zarr")  # never opened: the step is refused first
    with pytest.raises(InvalidParameterError, match=r"got step='12' \(str\); pass a number"):
        xr_itslive.invert_mosaic([missing, missing], step="12")
    for bad in (0, -5.0, float("nan")):  # the range check is invert's own
        with pytest.raises(InvalidParameterError, match=r"step must be a positive number"):
            xr_itslive.invert_mosaic([missing], step=bad)
    with pytest.raises(InvalidParameterError, match=r"step must be a positive number"):
        xr_itslive.invert_mosaic([missing], step=True)


def test_cubes_on_another_pixel_spacing_are_refused(cube):
    fine = cube[["vx", "vy"]].isel(x=slice(0, 20))
    coarse = cube[["vx", "vy"]].isel(x=slice(20, None, 2), y=slice(0, None, 2))  # 240 m
    with pytest.raises(
        InvalidParameterError,
        match=r"has 240 m x 240 m pixels, but the output grid .* has 120 m x 120 m: a mosaic "
        r"keeps every cube's pixel size\. Resample",
    ):
        xr_itslive.invert_mosaic([fine, coarse], step=60.0)
    # the output grid is the first cube's in the output CRS: the other order names the 120 m
    with pytest.raises(InvalidParameterError, match=r"has 120 m x 120 m pixels.*240 m x 240 m"):
        xr_itslive.invert_mosaic([coarse, fine], step=60.0)
    # in another CRS too (not resampled to another size either)
    moved = _move_cube(cube.isel(x=slice(20, None)), "EPSG:32645")
    moved = moved.isel(x=slice(0, None, 2), y=slice(0, None, 2))
    with pytest.raises(InvalidParameterError, match=r"has 240 m x 240 m pixels"):
        xr_itslive.invert_mosaic([fine, moved], crs="EPSG:32646", step=60.0)


def test_a_boolean_mask_without_a_crs_is_in_the_output_crs(cube):
    few = cube.isel(mid_date=slice(0, 5000))
    left, right = few.isel(x=slice(0, 20)), few.isel(x=slice(20, None))
    moved = _move_cube(right, "EPSG:32645")
    inside = xr_itslive.glacier_mask(cube, OUTLINE)  # on the UTM 46 grid, no CRS recorded
    assert inside.rio.crs is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no cube is "missed" by the mask
        mosaic = xr_itslive.invert_mosaic(
            [left, moved], crs="EPSG:32646", mask=inside, step=60.0
        ).compute()
    # reprojected for the UTM 45 cube: it solves glacier pixels, and none off the glacier
    assert (mosaic["source"].values == 1).sum() > 50
    window = inside.reindex(x=mosaic.x, y=mosaic.y, fill_value=False).values
    assert (mosaic["n_obs"].values[~window] == 0).all()
    solved = mosaic["n_obs"].values > 0
    assert solved[window].mean() > 0.9
    # with no crs= and cubes in two CRSs, the grid the mask is on is unknown: refused
    with pytest.raises(
        InvalidParameterError,
        match=r"records no CRS, and the cubes are in 2 CRSs \(EPSG:32646, EPSG:32645\).*"
        r"mask\.rio\.write_crs\('EPSG:32646'\).*or pass crs=",
    ):
        xr_itslive.invert_mosaic([left, moved], mask=inside, step=60.0)
    # with its CRS written, it is taken in it (no crs= needed)
    placed = xr_itslive.invert_mosaic(
        [left, moved], mask=inside.rio.write_crs("EPSG:32646"), step=60.0
    ).compute()
    np.testing.assert_array_equal(placed["n_obs"].values, mosaic["n_obs"].values)


@pytest.fixture(scope="module")
def two_cubes_on_s3(s3_server, tmp_path_factory):
    """Two cubes cut from the real glacier cube (its west and east halves), on moto S3 in
    today's layout, and a GeoJSON catalog that lists both with their exact boxes."""
    import json

    raw = xr.open_zarr(GLACIER_CUBE, consolidated=True, zarr_format=2)
    keep = ["vx", "vy", "vx_error", "vy_error", "acquisition_date_img1", "acquisition_date_img2"]
    keep += ["mapping"] if "mapping" in raw.variables else []
    root = tmp_path_factory.mktemp("halves")
    client = make_public_bucket(s3_server, "its-live-halves")
    features, urls = [], []
    for name, window in (("X784000", slice(0, 20)), ("X786500", slice(20, None))):
        half = raw[keep].isel(x=window)
        for var in half.variables.values():
            for key in ("chunks", "preferred_chunks", "compressor", "filters"):
                var.encoding.pop(key, None)
        path = root / f"ITS_LIVE_vel_EPSG32646_G0120_{name}_Y3314000.zarr"
        half.chunk({"mid_date": 20000, "y": 10, "x": 10}).to_zarr(
            path, zarr_format=2, consolidated=True
        )
        key = f"datacubes/v2-updated-october2024/N30E090/{path.name}"
        upload_tree(client, path, "its-live-halves", key)
        url = f"https://its-live-halves.s3.amazonaws.com/{key}"
        urls.append(url)
        x0, x1 = float(half.x.min()) - 60, float(half.x.max()) + 60
        y0, y1 = float(half.y.min()) - 60, float(half.y.max()) + 60
        to_lonlat = Transformer.from_crs(32646, 4326, always_xy=True)
        ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [
                [list(to_lonlat.transform(x, y)) for x, y in ring]]},
            "properties": {"zarr_url": url, "epsg": 32646, "geometry_epsg": {
                "type": "Polygon", "coordinates": [[list(p) for p in ring]]}},
        })  # fmt: skip
    catalog = root / "halves.json"
    catalog.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return urls, catalog


def test_a_glacier_over_two_cubes_on_s3(two_cubes_on_s3, cube, tmp_path):
    from xr_itslive.workflows.store import store_status

    urls, catalog = two_cubes_on_s3
    glacier = xr_itslive.Glacier.from_rgi_id("RGI2000-v7.0-G-15-16257", OUTLINE, catalog=catalog)
    assert sorted(glacier.cubes) == sorted(urls)  # the outline touches both
    assert sorted(glacier.covering_cubes) == sorted(urls)  # and needs both
    expected = xr_itslive.invert(cube, mask=glacier, **KWARGS).compute()
    result = glacier.invert(**KWARGS)
    assert result["vx"].chunks is not None
    result = result.compute()
    assert set(np.unique(result["source"].values)) == {-1, 0, 1}
    aligned = expected.sel(x=result.x, y=result.y)
    for name in ("vx", "vy", "vx_std", "n_obs"):
        np.testing.assert_array_equal(result[name].values, aligned[name].values, err_msg=name)
    # resumable and distributed like one cube: the same mosaic written chunk by chunk
    store = tmp_path / "mosaic.zarr"
    summary = xr_itslive.invert_to_zarr(urls, store, mask=glacier, progress=False, **KWARGS)
    assert summary.complete and store_status(store).complete
    again = xr_itslive.invert_to_zarr(urls, store, mask=glacier, progress=False, **KWARGS)
    assert again.already_complete
    written = xr.open_zarr(store)
    np.testing.assert_array_equal(written["vx"].values, result["vx"].values)
    # predict per cube: the mosaic's model over one cube's pairs
    half = xr_itslive.open_cube(urls[1], variables=["vx", "vy"])
    predicted = xr_itslive.predict(half, result.sel(x=half.x, y=half.y))
    assert predicted["vx"].dims == ("mid_date", "y", "x")
    assert np.isfinite(predicted["vx"].values).any()


def test_benchmark_runs_once():
    # the benchmark's two runs, each in its own process, on --quick's tiny cut of the cube
    spec = importlib.util.spec_from_file_location(
        "bench_mosaic", REPO / "benchmarks" / "bench_mosaic.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.run(repeat=1, quick=True)
    assert figures["same_shape"] and figures["max_vx_difference"] == 0.0
    assert figures["whole_s"] > 0 and figures["mosaic_s"] > 0
    assert figures["ratio"] == pytest.approx(figures["mosaic_s"] / figures["whole_s"])
    for kind in ("whole", "mosaic"):  # each run's own peak, at least its warm-up's
        assert figures[f"{kind}_peak_mb"] >= figures[f"{kind}_warm_peak_mb"] > 50


def test_a_cube_too_thin_for_min_obs_is_left_out_with_a_warning(cube, whole):
    # invert refuses a cube with fewer pairs than min_obs; the mosaic leaves such a cube out
    # (as one that misses the mask) and still makes the mosaic of the others
    left, right = cube.isel(x=slice(0, 17)), cube.isel(x=slice(17, None))
    thin = right.isel(mid_date=slice(0, 3))
    with pytest.warns(
        UserWarning, match=r"cube .*: min_obs=5 but the cube has 3 pairs.*left out of the mosaic"
    ):
        mosaic = xr_itslive.invert_mosaic([thin, left], **KWARGS).compute()
    np.testing.assert_array_equal(mosaic["vx"].values[:, :, :17], whole["vx"].values[:, :, :17])
    assert np.isnan(mosaic["vx"].values[:, :, 17:]).all()
    assert set(np.unique(mosaic["source"].values)) <= {-1, 1}
    with pytest.raises(EmptySelectionError, match=r"no cube of the mosaic can be inverted"):
        xr_itslive.invert_mosaic([thin, left.isel(mid_date=slice(0, 3))], **KWARGS)


def test_a_mosaic_written_on_a_local_cluster_and_plotted(cube, whole, tmp_path):
    # the mosaic works with invert_to_zarr on a cluster of worker processes (the same numbers
    # as the whole cube on threads) and with the plots (a pixel's series, a map)
    pytest.importorskip("distributed")
    import matplotlib

    matplotlib.use("Agg")
    from xr_itslive.workflows.cluster import scheduler_context

    left, right = cube.isel(x=slice(0, 17)), cube.isel(x=slice(17, None))
    store = tmp_path / "mosaic.zarr"
    with scheduler_context("local", n_workers=2, threads_per_worker=1) as client:
        summary = xr_itslive.invert_to_zarr([right, left], store, scheduler=client, **KWARGS)
    assert summary.complete
    written = xr.open_zarr(store).load()
    for name in ("vx", "vy", "vx_std", "n_obs"):
        np.testing.assert_array_equal(written[name].values, whole[name].values, err_msg=name)
    y, x = np.unravel_index(int(written["n_obs"].values.argmax()), written["n_obs"].shape)
    point = cube.isel(y=int(y), x=int(x)).compute()
    png = tmp_path / "series.png"
    xr_itslive.plot_series(point, "vx", inverted=written.isel(y=int(y), x=int(x)), path=png)
    assert png.stat().st_size > 10_000
    mesh = written["v"].sel(time="2020").mean("time").plot()
    mesh.figure.savefig(tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 10_000
