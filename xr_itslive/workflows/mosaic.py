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

Every cube keeps its pixel size: cubes whose pixel spacing differs from the output grid's (a
240 m cube among 120 m ones) are refused rather than resampled to another size (nearest
neighbour would repeat or drop their pixels without saying so).
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
from ..geo import design
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


def _check_step(invert_kwargs: Mapping[str, Any]) -> None:
    """Refuse a ``step`` before any cube is opened or inverted, with :func:`xr_itslive.invert`'s
    own check (:func:`~xr_itslive.geo.design.check_parameters`)."""
    step = invert_kwargs.get("step", DEFAULTS["step"])
    derivative = invert_kwargs.get("derivative", DEFAULTS["derivative"])
    design.check_parameters(step, 0.0, derivative)


def _spacing(ds: xr.Dataset) -> tuple[float, float]:
    """``(|dx|, |dy|)`` of a cube's pixels in its own CRS (0 along an axis of one pixel)."""
    return grid_spacing(np.asarray(ds["x"].values)), grid_spacing(np.asarray(ds["y"].values))


def _check_spacings(opened: Sequence[tuple[xr.Dataset, str]], kept: Sequence[int], base: int):
    """Refuse cubes whose pixel spacing differs from that of ``base``, the cube that sets the
    output grid: placing them would repeat (or drop) pixels by nearest neighbour, silently."""
    expected = _spacing(opened[base][0])
    for i in kept:
        found = _spacing(opened[i][0])
        differs = [
            not np.isclose(a, b, rtol=1e-6)
            for a, b in zip(found, expected, strict=True)
            if a > 0 and b > 0  # one row or column has no spacing to compare
        ]
        if any(differs):
            name, base_name = opened[i][1] or f"cube {i}", opened[base][1] or f"cube {base}"
            raise InvalidParameterError(
                f"{name} has {found[0]:g} m x {found[1]:g} m pixels, but the output grid (that "
                f"of {base_name}) has {expected[0]:g} m x {expected[1]:g} m: a mosaic keeps "
                "every cube's pixel size. Resample that cube to the grid's spacing first "
                "(e.g. ds.rio.reproject(crs, resolution=...) or odc-geo's xr_reproject), leave "
                "it out, or invert it on its own with xr_itslive.invert"
            )


def _mask_in_output_crs(mask: Any, crs: str | None, keys: Sequence[str | None]) -> Any:
    """A boolean grid that records no CRS, given the output CRS it is documented to be in.

    With its CRS written, :func:`_cube_mask` reprojects it for cubes in another CRS (odc-geo)
    and reindexes it for cubes in the same one, as for a mask that carries its own CRS.
    Without ``crs=`` the output CRS is only known once the mask is placed (it is the CRS of
    the cube holding most of its pixels), so a CRS-less grid is refused when the cubes' CRSs
    differ; with one CRS among the cubes it is that one.
    """
    if not isinstance(mask, xr.DataArray) or mask.dtype != bool or cube_crs(mask) is not None:
        return mask
    if crs is not None:
        return mask.rio.write_crs(crs)
    known = list(dict.fromkeys(k for k in keys if k is not None))
    if len(known) > 1:
        raise InvalidParameterError(
            f"the boolean mask records no CRS, and the cubes are in {len(known)} CRSs "
            f"({', '.join(known)}): the grid it is on is unknown. Give it its CRS with "
            f"mask.rio.write_crs({known[0]!r}) (rioxarray), or pass crs= (a mask without a CRS "
            "is taken in the output CRS)"
        )
    return mask.rio.write_crs(known[0]) if known else mask


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
        The output CRS (an EPSG code, ``"EPSG:32646"``, WKT or a ``pyproj.CRS``). Default: the
        CRS of the cube holding most of the mask's pixels, or of the first cube.
    mask
        Solve only these pixels, in every cube: a glacier outline (any form
        :func:`xr_itslive.glacier_mask` takes, a :class:`~xr_itslive.Glacier` among them) or
        a boolean ``(y, x)`` DataArray. A boolean grid that carries a CRS (rioxarray's
        ``mask.rio.write_crs(...)``) is taken in it; one without is taken in the output CRS
        (``crs=``, else the cubes' CRS when they share one; refused when they do not), and
        reprojected (nearest neighbour, odc-geo) onto the cubes in another CRS. Cubes the
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
        ``uncertainty``...); ``step`` is checked before any cube is opened.
        ``return_outliers`` has no meaning across cubes (their pairs differ) and is refused.

    Returns
    -------
    xarray.Dataset
        ``(time, y, x)`` as :func:`xr_itslive.invert` returns, on the output grid, with
        ``source`` (``(y, x)``, the index of the cube each pixel came from, -1 where none;
        the cubes' names in its ``flag_meanings`` and in the ``mosaic_cubes`` attribute).
        Its ``start``, ``end`` and ``step_days`` attributes are the shared time grid.

    Raises
    ------
    EmptySelectionError
        The mask misses every cube.
    InvalidParameterError
        No cube is given; ``crs`` cannot be resolved; ``step`` is not a positive number; a
        cube's pixel spacing differs from the output grid's (cubes are not resampled to
        another pixel size); a boolean mask without a CRS meets cubes in several CRSs; or an
        argument has no meaning for a mosaic.

    Notes
    -----
    **Predicting a cube's pairs** (:func:`xr_itslive.predict`, residuals). For a cube in the
    output CRS the mosaic's model is on the cube's own pixels:
    ``predict(cube, mosaic.sel(x=cube.x, y=cube.y))``. A cube in another CRS was inverted in
    its own grid and axes, then rotated and resampled, so the mosaic cannot be read back on
    its pixels; invert it alone on the mosaic's time grid, with the same options, and predict
    from that: ``own = invert(cube, start=mosaic.attrs["start"], end=mosaic.attrs["end"],
    step=mosaic.attrs["step_days"], ...)`` (the same ``variables``, ``weights``, ``lam``,
    ``robust``..., and the mask) gives that cube's part of the mosaic before rotation and
    resampling, on the same cells; then ``predict(cube, own)``.
    """
    check_cube_sequence(cubes, "invert_mosaic", "xr_itslive.invert")
    if invert_kwargs.get("return_outliers"):
        raise InvalidParameterError(
            "return_outliers=True has no meaning for a mosaic (each cube has its own pairs); "
            "invert the cubes one by one with xr_itslive.invert to get their outliers"
        )
    # Arguments every cube shares are checked before any cube is opened or inverted.
    _check_step(invert_kwargs)
    given_crs = None if crs is None else crs_key(crs)
    variables = [variables] if isinstance(variables, str) else list(variables)
    opened = [open_with_name(cube, variables, weights) for cube in cubes]
    for ds, _ in opened:
        check_cube(ds, variables)
    window = _pair_window([ds for ds, _ in opened])
    start = window[0] if start is None else start
    end = window[1] if end is None else end
    keys = [crs_key(cube_crs(ds)) if cube_crs(ds) is not None else None for ds, _ in opened]

    # Each cube's mask, and the cubes the mask leaves out.
    if isinstance(mask, str | os.PathLike):
        mask = read_any(mask)  # an outline file: read once, not once per cube
    mask = _mask_in_output_crs(mask, given_crs, keys)
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
    if given_crs is not None:
        target = given_crs
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
    in_target = [i for i in kept if keys[i] == target]
    _check_spacings(opened, kept, in_target[0] if in_target else kept[0])
    cropped = {i: _crop(opened[i][0], masks[i]) for i in kept}
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
    left_out = []
    for i in order:
        ds, cube_mask = cropped[i]
        try:
            result = invert(
                ds, variables, start=start, end=end, mask=cube_mask, weights=weights,
                **invert_kwargs,
            )  # fmt: skip
        except EmptySelectionError as error:
            # a cube that cannot give a pixel (too few pairs in the window for min_obs, ...)
            # is left out, as one that misses the mask is; the others still make the mosaic
            left_out.append(f"cube {opened[i][1] or i}: {error}")
            continue
        if not direct[i] and keys[i] != target:
            result = _rotate(result, _axis_angle(result, keys[i], target))
        placed.append((i, _place(result, xs, ys, target, resample=not direct[i])))

    if not placed:
        raise EmptySelectionError("no cube of the mosaic can be inverted: " + "; ".join(left_out))
    for reason in left_out:
        warnings.warn(f"{reason}; it is left out of the mosaic", UserWarning, stacklevel=2)

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
