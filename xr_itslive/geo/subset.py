"""Spatial subsets of ITS_LIVE cubes, all lazy in the pixel data.

A point's series, a k×k window, a bbox, an outline clip: index selections or ``where``
masks; nothing of the ``(mid_date, y, x)`` variables is read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..crs import LONLAT, crs_key, crs_text, cube_crs, transformer
from ..errors import EmptySelectionError, InvalidParameterError


def to_cube_xy(
    ds: xr.Dataset | xr.DataArray,
    lon: float | None = None,
    lat: float | None = None,
    *,
    x: float | None = None,
    y: float | None = None,
) -> tuple[float, float]:
    """A point given as ``lon, lat`` (degrees) or ``x, y`` (cube CRS) in the cube's CRS."""
    geographic = lon is not None or lat is not None
    projected = x is not None or y is not None
    if (
        geographic == projected
        or (geographic and (lon is None or lat is None))
        or (projected and (x is None or y is None))
    ):
        raise InvalidParameterError(
            f"give the point as lon=, lat= (degrees) or as x=, y= (the cube's CRS), not a mix; "
            f"got lon={lon!r}, lat={lat!r}, x={x!r}, y={y!r}"
        )
    if projected:
        return float(x), float(y)
    lon, lat = float(lon), float(lat)
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise InvalidParameterError(
            f"(lon={lon:g}, lat={lat:g}) is not a lon/lat position (expected -180..180, -90..90); "
            "for coordinates in the cube's CRS pass x=, y= instead"
        )
    crs = cube_crs(ds)
    if crs is None:
        raise InvalidParameterError(
            "the cube records no CRS, so lon/lat cannot be placed on its grid; pass x=, y= in "
            "its coordinates, or open it with xr_itslive.open_cube (which records the CRS)"
        )
    px, py = transformer(LONLAT, crs_key(crs)).transform(lon, lat)
    return float(px), float(py)


def grid_spacing(coord: np.ndarray) -> float:
    if coord.size < 2:
        return 0.0
    return float(np.median(np.abs(np.diff(coord))))


def extent_text(ds: xr.Dataset | xr.DataArray) -> str:
    xs, ys = ds["x"].values, ds["y"].values
    return (
        f"x {xs.min():.1f}..{xs.max():.1f}, y {ys.min():.1f}..{ys.max():.1f} in "
        f"{crs_text(cube_crs(ds))}"
    )


def nearest_pixel(ds: xr.Dataset | xr.DataArray, x: float, y: float) -> tuple[int, int, float]:
    """Indices ``(ix, iy)`` of the pixel whose centre is nearest ``(x, y)`` and the offset (m).

    Raises
    ------
    EmptySelectionError
        The point lies outside the cube's pixels (more than half a pixel past the edge).
    """
    xs, ys = ds["x"].values, ds["y"].values
    ix, iy = int(np.abs(xs - x).argmin()), int(np.abs(ys - y).argmin())
    half_x, half_y = grid_spacing(xs) / 2, grid_spacing(ys) / 2
    if abs(xs[ix] - x) > half_x + 1e-6 or abs(ys[iy] - y) > half_y + 1e-6:
        dx = max(0.0, abs(xs[ix] - x) - half_x)
        dy = max(0.0, abs(ys[iy] - y) - half_y)
        raise EmptySelectionError(
            f"the point (x={x:.1f}, y={y:.1f}) is {np.hypot(dx, dy):.0f} m outside the cube "
            f"({extent_text(ds)}). Open the cube that covers it: xr_itslive.find_cubes(point="
            "(lon, lat)) or xr_itslive.open_cube(lon=..., lat=...)."
        )
    return ix, iy, float(np.hypot(xs[ix] - x, ys[iy] - y))


# --- spatial subsets ---


def point_series(
    ds: xr.Dataset,
    lon: float | None = None,
    lat: float | None = None,
    *,
    x: float | None = None,
    y: float | None = None,
    max_offset: float | None = None,
) -> xr.Dataset:
    """The series of the pixel nearest a point, lazily.

    Parameters
    ----------
    ds
        An ITS_LIVE cube.
    lon, lat
        The point in degrees; or
    x, y
        the point in the cube's CRS.
    max_offset
        Refuse pixels whose centre is farther than this (metres) from the point.

    Returns
    -------
    xarray.Dataset
        Dims ``(mid_date,)``; scalar ``x``, ``y`` coordinates of the pixel. ``attrs``:
        ``point_x``, ``point_y`` (the point in the cube's CRS), ``point_lon``/``point_lat``
        when given, ``offset_m`` (distance from the point to the pixel centre).

    Examples
    --------
    >>> series = point_series(ds, lon=95.97, lat=29.91)  # doctest: +SKIP
    >>> series.attrs["offset_m"]  # doctest: +SKIP
    49.9
    """
    px, py = to_cube_xy(ds, lon, lat, x=x, y=y)
    ix, iy, offset = nearest_pixel(ds, px, py)
    if max_offset is not None and offset > max_offset:
        raise EmptySelectionError(
            f"the nearest pixel centre is {offset:.1f} m from the point, more than "
            f"max_offset={max_offset!r} m; raise max_offset or pick a point nearer a pixel centre"
        )
    out = ds.isel(x=ix, y=iy)
    out.attrs = dict(ds.attrs)
    out.attrs.update(point_x=px, point_y=py, offset_m=offset)
    if lon is not None:
        out.attrs.update(point_lon=float(lon), point_lat=float(lat))
    return out


def window(
    ds: xr.Dataset,
    lon: float | None = None,
    lat: float | None = None,
    *,
    x: float | None = None,
    y: float | None = None,
    size: int = 3,
    clip_edges: bool = False,
) -> xr.Dataset:
    """The ``size × size`` pixels centred on the pixel nearest a point, lazily.

    Parameters
    ----------
    ds
        An ITS_LIVE cube.
    lon, lat, x, y
        The point, as for :func:`~xr_itslive.point_series`.
    size
        Odd window width in pixels (3 gives the 3×3 neighbourhood).
    clip_edges
        Near the cube's edge, return the part of the window inside the cube instead of
        raising.

    Returns
    -------
    xarray.Dataset
        Dims ``(mid_date, y, x)`` with ``size`` pixels each way; ``attrs`` as for
        :func:`~xr_itslive.point_series`.
    """
    if not isinstance(size, int | np.integer) or size < 1 or size % 2 == 0:
        raise InvalidParameterError(
            f"size must be a positive odd number of pixels (1, 3, 5, ...), got size={size!r}"
        )
    px, py = to_cube_xy(ds, lon, lat, x=x, y=y)
    ix, iy, offset = nearest_pixel(ds, px, py)
    half = size // 2
    nx, ny = ds.sizes["x"], ds.sizes["y"]
    x0, x1, y0, y1 = ix - half, ix + half + 1, iy - half, iy + half + 1
    if (x0 < 0 or y0 < 0 or x1 > nx or y1 > ny) and not clip_edges:
        raise EmptySelectionError(
            f"the {size}×{size} window around pixel (x index {ix}, y index {iy}) reaches past "
            f"the cube's edge (the cube has {nx} × {ny} pixels); use a smaller size, a point "
            "farther from the edge, or clip_edges=True"
        )
    out = ds.isel(x=slice(max(x0, 0), min(x1, nx)), y=slice(max(y0, 0), min(y1, ny)))
    out.attrs = dict(ds.attrs)
    out.attrs.update(point_x=px, point_y=py, offset_m=offset, window_size=int(size))
    if lon is not None:
        out.attrs.update(point_lon=float(lon), point_lat=float(lat))
    return out


def bbox(
    ds: xr.Dataset,
    bounds: Sequence[float],
    *,
    crs: Any = None,
) -> xr.Dataset:
    """The pixels whose centres fall in a box, lazily.

    Parameters
    ----------
    ds
        An ITS_LIVE cube.
    bounds
        ``(xmin, ymin, xmax, ymax)``; in lon/lat that is ``(west, south, east, north)``.
    crs
        CRS of ``bounds``: ``None`` for the cube's own, or e.g. ``"EPSG:4326"`` (the box is
        then the projected extent of the lon/lat box).

    Returns
    -------
    xarray.Dataset
    """
    try:
        xmin, ymin, xmax, ymax = (float(v) for v in bounds)
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(
            f"bounds must be (xmin, ymin, xmax, ymax), got bounds={bounds!r}"
        ) from err
    if xmin > xmax or ymin > ymax:
        raise InvalidParameterError(
            f"bounds must be (xmin, ymin, xmax, ymax) with xmin <= xmax and ymin <= ymax, "
            f"got {bounds!r}"
        )
    if crs is not None:
        target = cube_crs(ds)
        if target is None:
            raise InvalidParameterError(
                f"bounds are in {crs} but the cube records no CRS; pass them in the cube's "
                "coordinates (crs=None)"
            )
        from pyproj import Transformer

        transformer = Transformer.from_crs(crs, target, always_xy=True)
        xmin, ymin, xmax, ymax = transformer.transform_bounds(
            xmin, ymin, xmax, ymax, densify_pts=21
        )
    xs, ys = ds["x"].values, ds["y"].values
    ix = np.flatnonzero((xs >= xmin) & (xs <= xmax))
    iy = np.flatnonzero((ys >= ymin) & (ys <= ymax))
    if ix.size == 0 or iy.size == 0:
        raise EmptySelectionError(
            f"the box (x {xmin:.1f}..{xmax:.1f}, y {ymin:.1f}..{ymax:.1f}) holds no pixel "
            f"centre of the cube ({extent_text(ds)}); check the bounds and their crs= "
            "(None means the cube's CRS, 'EPSG:4326' lon/lat)"
        )
    return ds.isel(x=slice(ix[0], ix[-1] + 1), y=slice(iy[0], iy[-1] + 1))


def geometry_mask(
    ds: xr.Dataset | xr.DataArray, geometry: Any, *, all_touched: bool = False
) -> xr.DataArray:
    """Boolean ``(y, x)`` mask of the pixels inside ``geometry`` (given in the cube's CRS).

    Regular grids are rasterized with rasterio (pixel centre inside, or any touch with
    ``all_touched``); irregular grids test the pixel centres with shapely.
    """
    import shapely

    xs, ys = np.asarray(ds["x"].values, float), np.asarray(ds["y"].values, float)
    regular = (
        xs.size > 1
        and ys.size > 1
        and np.allclose(np.diff(xs), xs[1] - xs[0])
        and np.allclose(np.diff(ys), ys[1] - ys[0])
    )
    if regular:
        from affine import Affine
        from rasterio.features import geometry_mask as rasterio_mask

        dx, dy = xs[1] - xs[0], ys[1] - ys[0]
        transform = Affine(dx, 0.0, xs[0] - dx / 2, 0.0, dy, ys[0] - dy / 2)
        outside = rasterio_mask(
            [shapely.geometry.mapping(geometry)],
            out_shape=(ys.size, xs.size),
            transform=transform,
            all_touched=all_touched,
        )
        inside = ~outside
    else:
        grid_x, grid_y = np.meshgrid(xs, ys)
        inside = shapely.contains_xy(geometry, grid_x, grid_y)
    return xr.DataArray(inside, dims=("y", "x"), coords={"x": ds["x"], "y": ds["y"]}, name="mask")


def apply_mask(ds: xr.Dataset, mask: xr.DataArray) -> xr.Dataset:
    """Set pixels outside ``mask`` to NaN in the ``(y, x)``-shaped variables only, lazily."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        if {"x", "y"} <= set(var.dims) and np.issubdtype(var.dtype, np.floating):
            out[name] = var.where(mask)
    return out
