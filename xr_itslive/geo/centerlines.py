"""Centerlines on cube grids: points along a line on the ground, and series along them."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import xarray as xr

from ..crs import LONLAT, crs_key, crs_key_or_none, cube_crs, local_metric_crs, reproject
from ..errors import EmptySelectionError, InvalidParameterError
from ..io.outlines import main_centerline
from .subset import extent_text, grid_spacing


def sample_line(line: Any, spacing: float, crs: Any = LONLAT) -> tuple[np.ndarray, Any, str]:
    """Points every ``spacing`` metres along a line, measured on the ground.

    Distances are measured in the local UTM zone (true metres to 0.04 %), whatever ``crs``.

    Returns
    -------
    distance : numpy.ndarray
        Metres from the line's start (OGGM lines start at the glacier's head).
    points : shapely MultiPoint
        The points, in ``crs``.
    crs : str
        The CRS of ``points``.
    """
    import shapely

    if not spacing or spacing <= 0:
        raise InvalidParameterError(f"spacing must be a positive number of metres, got {spacing!r}")
    key = crs_key(crs)
    if isinstance(line, shapely.MultiLineString):
        line = shapely.line_merge(line)
        if isinstance(line, shapely.MultiLineString):
            line = max(line.geoms, key=lambda g: g.length)
    if not isinstance(line, shapely.LineString):
        raise InvalidParameterError(f"a centerline must be a LineString, got {type(line).__name__}")
    metric = local_metric_crs(line, key)
    local = reproject(line, key, metric)
    distance = np.arange(0.0, local.length + 1e-9, float(spacing))
    points = shapely.MultiPoint([local.interpolate(d) for d in distance])
    return distance, reproject(points, metric, key), key


def centerline_series(
    ds: xr.Dataset,
    line: Any,
    *,
    spacing: float | None = None,
    crs: Any = None,
) -> xr.Dataset:
    """The cube's data at points along a centerline, with a ``distance`` dimension, lazily.

    Parameters
    ----------
    ds
        An ITS_LIVE cube.
    line
        A shapely LineString (in ``crs``), a GeoDataFrame/GeoSeries row (its own CRS), a
        :class:`~xr_itslive.GlacierCenterline`, or a centerline file (its main line is used).
    spacing
        Metres between points along the line (default: the cube's pixel size).
    crs
        CRS of a bare shapely ``line`` (default: the cube's).

    Returns
    -------
    xarray.Dataset
        Each ``(mid_date, y, x)`` variable becomes ``(mid_date, distance)`` (nearest pixel);
        coordinates ``distance`` (m from the line's start), ``x``/``y`` (the pixels),
        ``point_x``/``point_y`` (the points) and ``offset_m``. Points off the cube are left out
        (``attrs["n_points_outside"]``).
    """
    import shapely

    line_geom, line_crs = _line_and_crs(line, crs)
    target = cube_crs(ds)
    if line_crs is None:
        line_crs = crs_key(target) if target is not None else LONLAT
    if spacing is None:
        spacing = grid_spacing(ds["x"].values) or 120.0
    distance, points, _ = sample_line(line_geom, spacing, line_crs)
    if target is not None:
        points = reproject(points, line_crs, crs_key(target))
    coords = shapely.get_coordinates(points)
    px, py = coords[:, 0], coords[:, 1]
    xs, ys = ds["x"].values, ds["y"].values
    ix = np.abs(xs[None, :] - px[:, None]).argmin(axis=1)
    iy = np.abs(ys[None, :] - py[:, None]).argmin(axis=1)
    inside = (np.abs(xs[ix] - px) <= grid_spacing(xs) / 2 + 1e-6) & (
        np.abs(ys[iy] - py) <= grid_spacing(ys) / 2 + 1e-6
    )
    if not inside.any():
        raise EmptySelectionError(
            f"the centerline (bounds {tuple(round(b, 1) for b in points.bounds)} in the cube's "
            f"CRS) misses the cube ({extent_text(ds)}); open the cube that covers the glacier "
            "(xr_itslive.find_cubes(polygon=...))"
        )
    keep = np.flatnonzero(inside)
    out = ds.isel(
        x=xr.DataArray(ix[keep], dims="distance"), y=xr.DataArray(iy[keep], dims="distance")
    )
    offset = np.hypot(xs[ix[keep]] - px[keep], ys[iy[keep]] - py[keep])
    out = out.assign_coords(
        distance=("distance", distance[keep], {"units": "m", "description": "along the line"}),
        point_x=("distance", px[keep]),
        point_y=("distance", py[keep]),
        offset_m=("distance", offset),
    )
    out.attrs = dict(ds.attrs)
    out.attrs.update(spacing_m=float(spacing), n_points_outside=int((~inside).sum()))
    return out


def _line_and_crs(line: Any, crs: Any) -> tuple[Any, str | None]:
    import shapely

    if hasattr(line, "line") and hasattr(line, "crs"):  # a GlacierCenterline (duck-typed)
        return line.line, line.crs
    if isinstance(line, str | os.PathLike):
        row = main_centerline(line)
        return row.geometry.iloc[0], crs_key(row.crs)
    if hasattr(line, "geometry") and hasattr(line, "crs"):
        geoms = line.geometry
        if len(geoms) != 1:
            raise InvalidParameterError(
                f"pass one centerline, got {len(geoms)} rows; use main_centerline(...) first"
            )
        return geoms.iloc[0], (crs_key(line.crs) if line.crs else crs_key_or_none(crs))
    if isinstance(line, shapely.Geometry):
        return line, crs_key_or_none(crs)
    raise InvalidParameterError(
        f"cannot use a {type(line).__name__} as a centerline; pass a shapely LineString, a "
        "one-row GeoDataFrame, a GlacierCenterline or a centerline file"
    )
