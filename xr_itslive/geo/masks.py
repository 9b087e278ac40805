"""Glacier outlines on cube grids: any outline form to a geometry, and pixel masks.

An outline may be a glacier object (anything with ``outline`` and ``crs`` attributes, such
as :class:`xr_itslive.Glacier`), a GeoDataFrame/GeoSeries, a shapely geometry, a GeoJSON
mapping or a file path; it is reprojected to the cube's CRS before it meets the grid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from ..crs import crs_key, crs_key_or_none, cube_crs, reproject
from ..errors import EmptySelectionError, InvalidParameterError
from ..io.outlines import read_any
from .subset import extent_text, geometry_mask, grid_spacing


def _is_glacier(outline: Any) -> bool:
    """A glacier object: an ``outline`` geometry with its ``crs`` (duck-typed, so that this
    layer does not import the workflows that define :class:`xr_itslive.Glacier`)."""
    return (
        hasattr(outline, "outline")
        and hasattr(outline, "crs")
        and not hasattr(outline, "union_all")
    )


def outline_geometry(outline: Any, crs: Any = None) -> tuple[Any, str | None]:
    """A shapely geometry and its CRS (canonical text, or None) from any outline form.

    ``outline`` may be a :class:`~xr_itslive.Glacier`, a GeoDataFrame/GeoSeries (all rows merged), a
    shapely geometry or GeoJSON-like mapping (in ``crs``), or a file path.
    """
    import shapely

    if _is_glacier(outline):
        return outline.outline, outline.crs
    if isinstance(outline, str | os.PathLike):
        gdf = read_any(outline)
        return gdf.union_all(), crs_key(gdf.crs)
    if hasattr(outline, "union_all") and hasattr(outline, "crs"):
        return outline.union_all(), (crs_key(outline.crs) if outline.crs else crs_key_or_none(crs))
    if isinstance(outline, shapely.Geometry):
        return outline, crs_key_or_none(crs)
    if isinstance(outline, Mapping) or hasattr(outline, "__geo_interface__"):
        from shapely.geometry import shape

        mapping = outline if isinstance(outline, Mapping) else outline.__geo_interface__
        if mapping.get("type") == "FeatureCollection":
            geoms = [shape(f["geometry"]) for f in mapping["features"]]
            return shapely.union_all(geoms), crs_key_or_none(crs)
        if mapping.get("type") == "Feature":
            mapping = mapping["geometry"]
        return shape(mapping), crs_key_or_none(crs)
    raise InvalidParameterError(
        f"cannot use a {type(outline).__name__} as a glacier outline; pass a Glacier, a "
        "GeoDataFrame/GeoSeries, a shapely Polygon, a GeoJSON mapping, or a file path"
        + (
            "; a boolean array of pixels needs the cube's coordinates: "
            "xr.DataArray(array, dims=('y', 'x'), coords={'y': ds.y, 'x': ds.x})"
            if isinstance(outline, np.ndarray)
            else ""
        )
    )


def _is_geographic(key: str) -> bool:
    from pyproj import CRS

    return bool(CRS.from_user_input(key).is_geographic)


def _projected(ds: xr.Dataset | xr.DataArray) -> bool:
    """Whether the cube's x/y cannot be degrees (any beyond ±360 / ±90)."""
    x = np.asarray(ds["x"].values) if "x" in ds.coords else np.zeros(0)
    y = np.asarray(ds["y"].values) if "y" in ds.coords else np.zeros(0)
    return bool((np.abs(x) > 360).any() or (np.abs(y) > 90).any())


def outline_in_cube_crs(ds: xr.Dataset | xr.DataArray, outline: Any, crs: Any = None) -> Any:
    """The outline as a shapely geometry in the cube's CRS (bare geometries: ``crs``, default
    the cube's own)."""
    geometry, source = outline_geometry(outline, crs)
    target = cube_crs(ds)
    if source is not None and target is None and _is_geographic(source) and _projected(ds):
        raise InvalidParameterError(
            f"the outline is in {source} (degrees) but the cube records no CRS and its x/y "
            "are metres, so the outline cannot be placed on it. Give the cube its CRS, e.g. "
            "ds = ds.rio.write_crs('EPSG:32645') (ITS_LIVE cubes carry it in the 'mapping' "
            "variable: open them with xr_itslive.open_cube), or pass the outline in the cube's "
            "coordinates"
        )
    if source is None or target is None:
        return geometry
    target_key = crs_key(target)
    projected = reproject(geometry, source, target_key)
    if projected is None:
        raise InvalidParameterError(
            f"the outline could not be transformed from {source} to the cube's {target_key}"
        )
    return projected


def glacier_mask(
    ds: xr.Dataset | xr.DataArray,
    outline: Any,
    *,
    crs: Any = None,
    all_touched: bool = False,
) -> xr.DataArray:
    """Boolean ``(y, x)`` mask of the cube's pixels inside a glacier outline.

    Parameters
    ----------
    ds
        A cube (or anything with ``x``/``y`` coordinates and a CRS).
    outline
        A :class:`~xr_itslive.Glacier`, GeoDataFrame/GeoSeries, file path, shapely geometry or
        GeoJSON
        mapping. It is reprojected to the cube's CRS.
    crs
        CRS of a bare shapely/GeoJSON ``outline`` (default: the cube's).
    all_touched
        Count every pixel the outline touches, not only those whose centre is inside.

    Returns
    -------
    xarray.DataArray
        ``bool``, dims ``(y, x)``, numpy-backed (it is small), named ``glacier_mask``.

    Raises
    ------
    EmptySelectionError
        The outline misses the cube, or covers no pixel centre.

    Examples
    --------
    >>> mask = glacier_mask(ds, "N30E090_glacier_outline_rgi7.geojson")  # doctest: +SKIP
    >>> int(mask.sum())  # doctest: +SKIP
    707
    """
    import shapely

    geometry = outline_in_cube_crs(ds, outline, crs)
    xs, ys = ds["x"].values, ds["y"].values
    hx, hy = grid_spacing(xs) / 2, grid_spacing(ys) / 2
    extent = shapely.box(xs.min() - hx, ys.min() - hy, xs.max() + hx, ys.max() + hy)
    if geometry.is_empty or not geometry.intersects(extent):
        gx0, gy0, gx1, gy1 = geometry.bounds if not geometry.is_empty else (np.nan,) * 4
        hint = ""
        if (
            crs is None
            and isinstance(outline, shapely.Geometry)
            and (-180 <= gx0 <= gx1 <= 180 and -90 <= gy0 <= gy1 <= 90)
        ):
            hint = (
                " A bare shapely outline is taken to be in the cube's CRS; its coordinates "
                "look like lon/lat: pass crs='EPSG:4326'."
            )
        raise EmptySelectionError(
            f"the outline (bounds x {gx0:.1f}..{gx1:.1f}, y {gy0:.1f}..{gy1:.1f} in the cube's "
            f"CRS) misses the cube ({extent_text(ds)}).{hint} Open the cube that covers the "
            "glacier: xr_itslive.find_cubes(geometry=outline) or Glacier.from_rgi_id(...).open()."
        )
    mask = geometry_mask(ds, geometry, all_touched=all_touched)
    if not bool(mask.any()):
        raise EmptySelectionError(
            "the outline overlaps the cube but holds no pixel centre (the glacier is smaller "
            f"than a {grid_spacing(xs):.0f} m pixel, or lies on the edge); pass all_touched=True "
            "to count the pixels it touches"
        )
    mask.name = "glacier_mask"
    mask.attrs = {
        "description": "pixels inside the glacier outline",
        "all_touched": int(all_touched),
    }
    if _is_glacier(outline) and getattr(outline, "rgi_id", None):
        mask.attrs["rgi_id"] = outline.rgi_id
    return mask
