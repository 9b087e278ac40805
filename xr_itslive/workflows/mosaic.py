"""Glaciers over several cubes: invert each cube, then place them on one time and one space grid.

Large glaciers (Bering, Malaspina, Baltoro...) span two or more ITS_LIVE cubes. Each cube is
inverted on **one shared time grid** (the same origin, ``step`` and end for every cube: by
default the union of their pairs), so that the cells of all cubes are the same cells; the
results are then placed on **one spatial grid in one CRS**:

- a cube in the target CRS on the target's 120 m lattice is placed as it is (an index
  selection, no resampling): the mosaic of two halves of a cube is the inversion of the whole
  cube;
- a cube in another CRS (a neighbouring UTM zone) is inverted in its own grid, its ``vx``/``vy``
  (and ``*_std``) rotated by the local angle between the two grids' axes, and resampled
  (nearest neighbour, odc-geo, chunk by chunk and lazily) onto the target grid.

Where cubes overlap, each pixel comes from the cube with the most valid pairs there (``n_obs``),
ties going to the cube placed without resampling, then to the earlier cube in the order
given; the ``source`` variable says which cube each pixel came from.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..crs import crs_key, cube_crs, reproject, transformer
from ..errors import EmptySelectionError, InvalidParameterError
from ..geo.masks import glacier_mask
from ..geo.subset import grid_spacing
from ..io.cf import to_cf
from ..io.format import PAIR_DIM, TIME_DIM
from ..io.outlines import read_any
from .common import check_cube_sequence, open_with_name
from .invert import DEFAULTS, check_cube, invert
from .speed import speed_variables

#: Variables with components along the grid's x and y axes, rotated between CRSs.
_COMPONENTS = (("vx", "vy"), ("vx_std", "vy_std"))


def _pair_window(cubes: Sequence[xr.Dataset]) -> tuple[np.datetime64, np.datetime64]:
    """The union of the cubes' pairs: the shared time grid's default ``start``..``end``
    (the same rule as :func:`xr_itslive.geo.design.time_grid` for one cube)."""
    firsts, lasts = [], []
    for ds in cubes:
        img1 = np.asarray(ds["acquisition_date_img1"].values, dtype="datetime64[ns]")
        img2 = np.asarray(ds["acquisition_date_img2"].values, dtype="datetime64[ns]")
        valid = img2 > img1
        if valid.any():
            firsts.append(img1[valid].min())
            lasts.append(img2[valid].max())
    if not firsts:
        raise EmptySelectionError(
            "no cube holds an image pair with acquisition_date_img2 > acquisition_date_img1"
        )
    start = np.datetime64(min(firsts).astype("datetime64[D]"), "ns")
    return start, max(lasts)


def _cube_mask(ds: xr.Dataset, mask: Any) -> xr.DataArray | None:
    """``mask`` on this cube's grid (None: no mask; all False: the cube misses it)."""
    if mask is None:
        return None
    if not isinstance(mask, xr.DataArray):
        try:
            return glacier_mask(ds, mask)
        except EmptySelectionError:
            return xr.zeros_like(ds["x"] * ds["y"], dtype=bool).transpose("y", "x")
    if mask.dtype != bool:
        raise InvalidParameterError(
            f"mask must be a boolean (y, x) DataArray or a glacier outline, got dtype "
            f"{mask.dtype}; use e.g. mask > 0, or pass the outline itself"
        )
    own, source = cube_crs(ds), cube_crs(mask)
    if source is None or own is None or crs_key(source) == crs_key(own):
        tolerance = grid_spacing(ds["x"].values) / 2
        return (
            mask.reindex(x=ds["x"], y=ds["y"], method="nearest", tolerance=tolerance)
            .fillna(False)
            .astype(bool)
        )
    from odc.geo.xr import xr_reproject  # the optional resampling engine: imported when used

    placed = xr_reproject(mask.astype("uint8"), _geobox(ds), resampling="nearest", dst_nodata=0)
    return placed.rename({placed.odc.spatial_dims[0]: "y", placed.odc.spatial_dims[1]: "x"}) > 0


def _crop(ds: xr.Dataset, mask: xr.DataArray | None) -> tuple[xr.Dataset, xr.DataArray | None]:
    """The rows and columns of ``ds`` that hold mask pixels (all of it without a mask)."""
    if mask is None:
        return ds, None
    inside = np.asarray(mask.values, dtype=bool)
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    window = {"y": slice(rows[0], rows[-1] + 1), "x": slice(cols[0], cols[-1] + 1)}
    return ds.isel(window), mask.isel(window)


def _geobox(ds: xr.Dataset | xr.DataArray, crs: Any = None):
    """The odc-geo GeoBox of a regular (y, x) grid."""
    from affine import Affine
    from odc.geo.geobox import GeoBox

    xs, ys = np.asarray(ds["x"].values, float), np.asarray(ds["y"].values, float)
    dx = xs[1] - xs[0] if xs.size > 1 else grid_spacing(xs) or 120.0
    dy = ys[1] - ys[0] if ys.size > 1 else -(grid_spacing(ys) or 120.0)
    transform = Affine(dx, 0.0, xs[0] - dx / 2, 0.0, dy, ys[0] - dy / 2)
    return GeoBox((ys.size, xs.size), transform, crs_key(crs or cube_crs(ds)))


def _axis_angle(ds: xr.Dataset, source: str, target: str) -> xr.DataArray:
    """Per pixel, the angle (radians) from the target grid's x axis to the source grid's x
    axis: a vector with source components (a, b) has target components
    (a cos θ - b sin θ, a sin θ + b cos θ)."""
    xs, ys = np.meshgrid(np.asarray(ds["x"].values, float), np.asarray(ds["y"].values, float))
    step = 10.0  # metres along the source x axis
    forward = transformer(source, target)
    x0, y0 = forward.transform(xs, ys)
    x1, y1 = forward.transform(xs + step, ys)
    angle = np.arctan2(np.asarray(y1) - y0, np.asarray(x1) - x0)
    return xr.DataArray(angle, dims=("y", "x"), coords={"y": ds["y"], "x": ds["x"]})


def _rotate(result: xr.Dataset, angle: xr.DataArray) -> xr.Dataset:
    """Components along the source axes → along the target axes (standard deviations as the
    square roots of the rotated variances, the components taken as independent)."""
    cos, sin = np.cos(angle), np.sin(angle)
    out = result.copy()
    vx, vy = "vx", "vy"
    if vx in result and vy in result:
        out[vx] = (result[vx] * cos - result[vy] * sin).assign_attrs(result[vx].attrs)
        out[vy] = (result[vx] * sin + result[vy] * cos).assign_attrs(result[vy].attrs)
    sx, sy = "vx_std", "vy_std"
    if sx in result and sy in result:
        var_x, var_y = result[sx] ** 2, result[sy] ** 2
        out[sx] = np.sqrt(var_x * cos**2 + var_y * sin**2).assign_attrs(result[sx].attrs)
        out[sy] = np.sqrt(var_x * sin**2 + var_y * cos**2).assign_attrs(result[sy].attrs)
    return out


def _same_lattice(ds: xr.Dataset, reference: xr.Dataset) -> bool:
    """Whether ``ds``'s pixel centres lie on ``reference``'s lattice (same spacing and phase)."""
    for dim in ("x", "y"):
        a, b = np.asarray(ds[dim].values, float), np.asarray(reference[dim].values, float)
        if a.size < 2 or b.size < 2:
            return a.size == b.size == 1 and bool(np.isclose(a[0], b[0]))
        step = b[1] - b[0]
        if not np.isclose(a[1] - a[0], step):
            return False
        offset = (a[0] - b[0]) / step
        if abs(offset - round(offset)) > 1e-6:
            return False
    return True


def _target_axes(
    pieces: list[tuple[xr.Dataset, bool]], target: str, reference: xr.Dataset
) -> tuple[np.ndarray, np.ndarray]:
    """x (ascending) and y (descending) pixel centres of the target grid: the reference
    lattice over the union of every piece's extent in the target CRS."""
    import shapely

    dx = float(reference["x"].values[1] - reference["x"].values[0])
    dy = float(reference["y"].values[1] - reference["y"].values[0])
    x_ref, y_ref = float(reference["x"].values[0]), float(reference["y"].values[0])
    boxes = []
    for ds, in_target in pieces:
        xs, ys = np.asarray(ds["x"].values, float), np.asarray(ds["y"].values, float)
        hx, hy = abs(dx) / 2, abs(dy) / 2
        box = shapely.box(xs.min() - hx, ys.min() - hy, xs.max() + hx, ys.max() + hy)
        if not in_target:
            box = reproject(box, crs_key(cube_crs(ds)), target)
        boxes.append(box.bounds)
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    # pixel centres on the lattice x_ref + k dx whose cells meet [x0, x1] (y likewise)
    k0 = int(np.ceil((x0 - x_ref) / abs(dx) - 0.5 + 1e-9))
    k1 = int(np.floor((x1 - x_ref) / abs(dx) + 0.5 - 1e-9))
    xs = x_ref + abs(dx) * np.arange(k0, k1 + 1)
    j0 = int(np.ceil((y_ref - y1) / abs(dy) - 0.5 + 1e-9))
    j1 = int(np.floor((y_ref - y0) / abs(dy) + 0.5 - 1e-9))
    ys = y_ref - abs(dy) * np.arange(j0, j1 + 1)
    return xs, ys


def _place(result: xr.Dataset, xs: np.ndarray, ys: np.ndarray, target: str, resample: bool):
    """``result``'s (y, x) variables on the target grid: an index selection on the same
    lattice, nearest-neighbour resampling (odc-geo, lazy) otherwise."""
    spatial = [n for n, v in result.data_vars.items() if {"y", "x"} <= set(v.dims)]
    other = {n: v for n, v in result.data_vars.items() if n not in spatial}  # time_bounds
    fill = {n: (0 if result[n].dtype.kind in "iu" else np.nan) for n in spatial}
    if not resample:
        tolerance = abs(float(xs[1] - xs[0])) / 4 if xs.size > 1 else 1.0
        placed = result[spatial].reindex(
            x=xs, y=ys, method="nearest", tolerance=tolerance, fill_value=fill
        )
        return placed.assign(other).assign_coords(x=xs, y=ys)
    # The resampling geometry comes from odc-geo, once per cube: a raster of the source pixels'
    # flat indices warped (nearest neighbour) onto the target grid. Every variable is then
    # gathered through that map, lazily: one 2-D warp, not one per time cell.
    from odc.geo.xr import xr_reproject  # the optional resampling engine: imported when used

    grid = xr.Dataset(coords={"y": ys, "x": xs})
    geobox = _geobox(grid, target)
    ny, nx = result.sizes["y"], result.sizes["x"]
    flat = xr.DataArray(
        np.arange(ny * nx, dtype=np.float64).reshape(ny, nx),
        dims=("y", "x"),
        coords={"y": result["y"], "x": result["x"]},
    ).rio.write_crs(cube_crs(result))
    warped = xr_reproject(flat, geobox, resampling="nearest", dst_nodata=np.nan)
    index = np.asarray(warped.values)
    covered = np.isfinite(index)
    take = xr.DataArray(np.where(covered, index, 0).astype(np.int64), dims=("y", "x"))
    inside = xr.DataArray(covered, dims=("y", "x"), coords={"y": ys, "x": xs})
    moved = {}
    for name in spatial:
        stacked = result[name].stack(pixel=("y", "x")).drop_vars(["pixel", "y", "x"])
        out = stacked.isel(pixel=take).assign_coords(y=ys, x=xs)
        moved[name] = out.where(inside, fill[name]).astype(result[name].dtype)
    placed = xr.Dataset(moved, attrs=result.attrs)
    return placed.assign(other)


def invert_mosaic(
    cubes: Sequence[Any],
    *,
    crs: Any = None,
    mask: Any = None,
    variables: Sequence[Hashable] | str = DEFAULTS["variables"],
    start: Any = None,
    end: Any = None,
    weights: Any = None,
    chunks: Mapping[str, int] | None = None,
    **invert_kwargs: Any,
) -> xr.Dataset:
    """Invert several cubes onto one time grid and one spatial grid in one CRS, lazily.

    Parameters
    ----------
    cubes
        The cubes: Datasets (:func:`xr_itslive.open_cube`), paths, URLs or catalog entries
        (:func:`xr_itslive.find_cubes`), in priority order for ties.
    crs
        The output CRS. Default: the CRS of the cube holding most of the mask's pixels, or of
        the first cube.
    mask
        Solve only these pixels, in every cube: a glacier outline (any form
        :func:`xr_itslive.glacier_mask` takes, a :class:`~xr_itslive.Glacier` among them) or
        a boolean ``(y, x)`` DataArray (in the output CRS, or carrying its own). Cubes the
        mask misses are left out with a warning.
    variables
        Per-pair variables to invert (as for :func:`xr_itslive.invert`).
    start, end
        The shared time window, as for :func:`xr_itslive.invert`; by default the union of
        every cube's pairs, so that all cubes share the same cells.
    weights
        As for :func:`xr_itslive.invert`.
    chunks
        Spatial chunks of the output (``{"y": n, "x": n}``); default: those of the first
        cube in the output CRS. Even chunks, as :func:`xr_itslive.write_resumable` needs.
    **invert_kwargs
        Passed to :func:`xr_itslive.invert` for every cube (``step``, ``lam``, ``robust``,
        ``uncertainty``...). ``return_outliers`` has no meaning across cubes (their pairs
        differ) and is refused.

    Returns
    -------
    xarray.Dataset
        ``(time, y, x)`` as :func:`xr_itslive.invert` returns, on the output grid, with
        ``source`` (``(y, x)``, the index of the cube each pixel came from, -1 where none;
        the cubes' names in its ``flag_meanings`` and in the ``mosaic_cubes`` attribute).

    Raises
    ------
    EmptySelectionError
        The mask misses every cube.
    InvalidParameterError
        No cube is given, or an argument has no meaning for a mosaic.
    """
    check_cube_sequence(cubes, "invert_mosaic", "xr_itslive.invert")
    if invert_kwargs.get("return_outliers"):
        raise InvalidParameterError(
            "return_outliers=True has no meaning for a mosaic (each cube has its own pairs); "
            "invert the cubes one by one with xr_itslive.invert to get their outliers"
        )
    variables = [variables] if isinstance(variables, str) else list(variables)
    opened = [open_with_name(cube, variables, weights) for cube in cubes]
    for ds, _ in opened:
        check_cube(ds, variables)
    window = _pair_window([ds for ds, _ in opened])
    start = window[0] if start is None else start
    end = window[1] if end is None else end

    # Each cube's mask, and the cubes the mask leaves out.
    if isinstance(mask, str | os.PathLike):
        mask = read_any(mask)  # an outline file: read once, not once per cube
    masks = [_cube_mask(ds, mask) for ds, _ in opened]
    kept = [i for i, m in enumerate(masks) if m is None or bool(np.asarray(m.values, bool).any())]
    if not kept:
        names = [name or f"cube {i}" for i, (_, name) in enumerate(opened)]
        raise EmptySelectionError(
            f"the mask misses every cube ({', '.join(names)}); pass the cubes the glacier "
            "lies in: xr_itslive.find_cubes(geometry=outline) lists them"
        )
    for i in sorted(set(range(len(opened))) - set(kept)):
        warnings.warn(
            f"cube {opened[i][1] or i} holds no pixel of the mask and is left out",
            UserWarning,
            stacklevel=2,
        )

    # The output CRS and its reference lattice.
    keys = [crs_key(cube_crs(ds)) if cube_crs(ds) is not None else None for ds, _ in opened]
    if crs is not None:
        target = crs_key(crs)
    elif mask is not None:
        counts = {}
        for i in kept:
            count = int(np.asarray(masks[i].values).sum()) if masks[i] is not None else 0
            counts[keys[i]] = counts.get(keys[i], 0) + count
        target = max(counts, key=lambda k: (counts[k], -keys.index(k)))  # ties: first cube
    else:
        target = keys[kept[0]]
    if target is None:
        raise InvalidParameterError(
            "the cubes record no CRS; open them with xr_itslive.open_cube (which records it) "
            "or pass crs="
        )
    cropped = {i: _crop(opened[i][0], masks[i]) for i in kept}
    in_target = [i for i in kept if keys[i] == target]
    reference = cropped[in_target[0]][0] if in_target else None
    if reference is None:  # no cube in the output CRS: the first one's resolution there
        from odc.geo.xr import xr_reproject  # the optional resampling engine

        probe = cropped[kept[0]][0]["x"] * 0 + cropped[kept[0]][0]["y"] * 0
        probe = probe.rio.write_crs(keys[kept[0]])
        moved = xr_reproject(probe.astype("float32"), target, resampling="nearest")
        reference = moved.rename(dict(zip(moved.odc.spatial_dims, ("y", "x"), strict=True)))
    direct = {i: keys[i] == target and _same_lattice(cropped[i][0], reference) for i in kept}
    xs, ys = _target_axes([(cropped[i][0], keys[i] == target) for i in kept], target, reference)

    # Invert every cube on the shared time grid and place it on the output grid.
    placed = []
    order = sorted(kept, key=lambda i: (not direct[i], i))  # ties: unresampled first
    for i in order:
        ds, cube_mask = cropped[i]
        result = invert(
            ds, variables, start=start, end=end, mask=cube_mask, weights=weights, **invert_kwargs
        )
        if not direct[i] and keys[i] != target:
            result = _rotate(result, _axis_angle(result, keys[i], target))
        placed.append((i, _place(result, xs, ys, target, resample=not direct[i])))

    # Per pixel: the cube with the most valid pairs (ties: the earlier in `order`).
    first_index, out = placed[0]
    best = out["n_obs"]
    source = xr.where(best > 0, first_index, -1)
    names = [n for n in out.data_vars if {"y", "x"} <= set(out[n].dims)]
    for index, other in placed[1:]:
        better = other["n_obs"] > best
        for name in names:
            if name in other:
                out[name] = xr.where(better, other[name], out[name], keep_attrs=True)
        best = xr.where(better, other["n_obs"], best)
        source = xr.where(better, index, source)
    if "vx" in out and "vy" in out:
        # from the placed (and, across CRSs, rotated and resampled) components, as invert does
        stds = (out.get("vx_std"), out.get("vy_std"))
        for name, value in speed_variables(out["vx"], out["vy"], *stds).items():
            out[name] = value.assign_attrs(out[name].attrs) if name in out else value
    out["n_obs"] = best.astype("int64").assign_attrs(out["n_obs"].attrs)
    labels = [(name or f"cube_{i}").replace(" ", "_") for i, (_, name) in enumerate(opened)]
    out["source"] = source.astype("int16").assign_attrs(
        long_name="index of the cube each pixel came from (-1: none)",
        flag_values=list(range(len(opened))),
        flag_meanings=" ".join(labels),
    )
    out = out.assign_coords(x=xs, y=ys).rio.write_crs(target)
    out.attrs.update(
        title="ITS_LIVE velocities of several cubes inverted to one time series grid (xr_itslive)",
        mosaic_cubes=labels,
        mosaic_crs=target,
        mosaic_rule=(
            "per pixel, the cube with the most valid pairs (n_obs); ties: cubes placed "
            "without resampling first, then the order given"
        ),
        mosaic_resampled=[labels[i] for i in kept if not direct[i]],
    )
    for key in ("source_url", "source_s3", "source_projection"):
        out.attrs.pop(key, None)
    lazy = out["n_obs"].chunks is not None
    if lazy:
        base = cropped[in_target[0]][0] if in_target else cropped[kept[0]][0]
        sizes = dict(chunks or {})
        for dim in ("y", "x"):
            if dim not in sizes:
                chunked = base[variables[0]].chunksizes.get(dim)
                sizes[dim] = int(chunked[0]) if chunked else out.sizes[dim]
        out = out.chunk({TIME_DIM: -1, "y": sizes["y"], "x": sizes["x"]})
    out = out.transpose(TIME_DIM, "y", "x", ...).drop_vars([PAIR_DIM], errors="ignore")
    # CF-1.8, and writable by every netCDF writer and zarr, with one grid mapping in the output
    # CRS (xr_itslive/io/cf.py)
    source = "ITS_LIVE image-pair velocities of the cubes listed in mosaic_cubes"
    return to_cf(out, crs=target, history="xr_itslive.invert_mosaic", source=source)
