"""invert_mosaic: glaciers over several cubes, on one time grid and one spatial grid.

The real glacier cube cut in two halves; one half moved into the neighbouring UTM zone (its
components rotated into that zone's axes, independently of the library's own rotation); a
uniform eastward flow across a UTM seam; overlaps, masks and bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import (
    GLACIER_CUBE,
    ITSLIVE_DATA,
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
    linear = dict(step=12.0, lam=10.0)
    whole = xr_itslive.invert(cube, **linear).compute()
    left, right = cube.isel(x=slice(0, 20)), cube.isel(x=slice(20, None))
    moved = _move_cube(right, "EPSG:32645")
    assert moved.rio.crs.to_epsg() == 32645
    mosaic = xr_itslive.invert_mosaic([left, moved], crs="EPSG:32646", **linear).compute()
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
