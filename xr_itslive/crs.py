"""Coordinate reference systems: canonical keys, cached transforms, reprojection.

The base of the house (with :mod:`xr_itslive.errors`): the catalog, the outline readers and
the geometry code all speak about CRSs the same way, so they share these helpers. Only
pyproj and shapely here; no I/O.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import xarray as xr

from .errors import InvalidParameterError, OptionalDependencyError

LONLAT = "EPSG:4326"
# Query shapes are densified to this segment length (degrees) before reprojection.
_QUERY_SEGMENT_DEG = 0.01


def require_shapely():
    """The shapely module, or a clear error naming the install."""
    try:
        import shapely
    except ImportError as err:  # pragma: no cover - shapely is a core dependency
        raise OptionalDependencyError(
            "finding cubes needs shapely; install it with `pip install shapely`"
        ) from err
    return shapely


@lru_cache(maxsize=256)
def transformer(source: str, target: str):
    """A cached ``pyproj.Transformer`` (x, y order) between two CRS keys."""
    from pyproj import Transformer

    return Transformer.from_crs(source, target, always_xy=True)


#: What :func:`crs_key` accepts, for the message of a CRS it cannot resolve.
_CRS_FORMS = (
    'an EPSG code (crs=32646), "EPSG:<code>" text (crs="EPSG:32646"), WKT or PROJ text, or a '
    "pyproj.CRS (crs=pyproj.CRS.from_epsg(32646))"
)


def crs_key(crs: Any) -> str:
    """A hashable, canonical text for a CRS given as EPSG int, string or pyproj CRS.

    Parameters
    ----------
    crs
        An EPSG code, ``"EPSG:<code>"`` (or any text pyproj reads: WKT, PROJ), or a
        ``pyproj.CRS``.

    Returns
    -------
    str
        ``"EPSG:<code>"`` when the CRS has an EPSG code, else its WKT.

    Raises
    ------
    InvalidParameterError
        pyproj cannot resolve ``crs`` (an unknown EPSG code, unreadable text); the message
        names the value and the forms that work.
    """
    if isinstance(crs, int | np.integer):
        # an int is checked too: "EPSG:99999" would otherwise fail later, in a transformer
        return _key_of(int(crs))
    if isinstance(crs, str):
        return _key_of(crs)
    return _parse_key(crs)


@lru_cache(maxsize=256)
def _key_of(crs: int | str) -> str:
    """:func:`crs_key` of an EPSG code or a text, parsed once (the catalog asks per entry)."""
    return _parse_key(crs)


def _parse_key(crs: Any) -> str:
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        parsed = CRS.from_epsg(crs) if isinstance(crs, int) else CRS.from_user_input(crs)
    except CRSError as err:
        raise InvalidParameterError(
            f"crs={crs!r} is not a CRS that pyproj can resolve ({err}). Expected {_CRS_FORMS}."
        ) from err
    epsg = parsed.to_epsg()
    return f"EPSG:{epsg}" if epsg else parsed.to_wkt()


def crs_key_or_none(crs: Any) -> str | None:
    """:func:`crs_key`, or None for None."""
    return None if crs is None else crs_key(crs)


def check_lonlat(lon: float, lat: float) -> None:
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        swapped = " Did you swap them? Points are (lon, lat)." if abs(lon) <= 90 else ""
        raise InvalidParameterError(
            f"(lon={lon:g}, lat={lat:g}) is not a lon/lat position: expected -180 <= lon <= 180 "
            f"and -90 <= lat <= 90.{swapped} For projected coordinates pass crs= "
            "(e.g. crs='EPSG:32646')."
        )


def to_lonlat(geometry: Any, crs: Any) -> Any:
    key = crs_key(crs)
    if key == LONLAT:
        return geometry
    projected = reproject(geometry, key, LONLAT)
    if projected is None:
        raise InvalidParameterError(
            f"the query {geometry.wkt[:80]} could not be transformed from {crs} to lon/lat"
        )
    return projected


def reproject(geometry: Any, source: str, target: str) -> Any:
    """Transform a shapely geometry, densifying first so that curved edges stay faithful."""
    shapely = require_shapely()
    if source == target:
        return geometry
    if not isinstance(geometry, shapely.Point):
        segment = _QUERY_SEGMENT_DEG if source == LONLAT else 1000.0
        geometry = shapely.segmentize(geometry, segment)
    transform = transformer(source, target)
    result = shapely.transform(
        geometry, lambda xy: np.column_stack(transform.transform(xy[:, 0], xy[:, 1]))
    )
    coords = shapely.get_coordinates(result)
    if not np.all(np.isfinite(coords)):
        return None
    return result if result.is_valid else shapely.make_valid(result)


def crs_from_attributes(ds: xr.Dataset) -> Any:
    """The CRS an ITS_LIVE cube records in its ``mapping`` variable or attributes, or None."""
    from pyproj import CRS

    for name in ("mapping", "spatial_ref"):
        if name in ds.variables:
            attrs = ds[name].attrs
            for key in ("crs_wkt", "spatial_ref"):
                if attrs.get(key):
                    return CRS.from_wkt(attrs[key])
            if attrs.get("spatial_epsg"):
                return CRS.from_epsg(int(attrs["spatial_epsg"]))
    projection = ds.attrs.get("projection")
    if projection:
        return CRS.from_user_input(
            f"EPSG:{projection}" if str(projection).isdigit() else projection
        )
    return None


def cube_crs(ds: xr.Dataset | xr.DataArray) -> Any:
    """The cube's CRS (a ``pyproj.CRS``), or ``None`` when it records none."""
    try:
        import rioxarray  # noqa: F401  (registers .rio)

        crs = ds.rio.crs
    except Exception:  # rioxarray may fail on unusual grids; fall back to the attributes
        crs = None
    if crs is not None:
        from pyproj import CRS

        return CRS.from_user_input(crs)
    return crs_from_attributes(ds if isinstance(ds, xr.Dataset) else ds.to_dataset(name="_"))


def crs_text(crs: Any) -> str:
    """A CRS as ``EPSG:<code>`` (or its text) for messages."""
    if crs is None:
        return "the cube's CRS"
    epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
    return f"EPSG:{epsg}" if epsg else str(crs)


def local_metric_crs(geometry: Any, crs: str) -> str:
    """The UTM zone (or polar stereographic) around a geometry, for distances in metres."""
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    lonlat = reproject(geometry, crs, LONLAT) if crs != LONLAT else geometry
    lon, lat = lonlat.centroid.x, lonlat.centroid.y
    if lat > 84:
        return "EPSG:3413"
    if lat < -80:
        return "EPSG:3031"
    info = query_utm_crs_info(
        datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat)
    )
    return f"EPSG:{info[0].code}"
