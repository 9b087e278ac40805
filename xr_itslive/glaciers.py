"""Glaciers: RGI outlines, masks on cube grids, OGGM centerlines, and glacier objects.

Outlines come from a user's file (shapefile, GeoJSON, GeoPackage or GeoParquet, with RGI6
``RGIId`` or RGI7 ``rgi_id`` attributes) or, online, from the GLIMS web feature service.
Everything is reprojected to the cube's CRS before it meets the cube's grid.

:class:`Glacier`, :class:`GlacierPoint` and :class:`GlacierCenterline` keep a glacier's name,
ids, geometry, cube URL and data together; they are frozen dataclasses, so methods that load
data return a new object (``dataclasses.replace``).

geopandas is needed to read files (``pip install 'xr_itslive[glaciers]'``); shapely geometries
and masks work without it.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .catalog import LONLAT, _check_lonlat, _crs_key, _reproject
from .errors import (
    DataAccessError,
    EmptySelectionError,
    InvalidParameterError,
    OptionalDependencyError,
)
from .subset import _extent_text, _spacing, cube_crs, geometry_mask

#: GLIMS web feature service (WFS 1.0.0, GeoJSON output) and its glacier-outline layer.
GLIMS_WFS_URL = "https://www.glims.org/geoserver/ows"
GLIMS_LAYER = "GLIMS:GLIMS_Glacier_Outlines"

#: Normalized column names (lower case, no ``_``) that hold ids and names, by convention.
_RGI_ID_KEYS = ("rgiid",)  # RGI7 rgi_id, RGI6 RGIId, RGI5 RGIID
_GLIMS_ID_KEYS = ("glimsid", "glacid", "glimsidcr")  # RGI glims_id / GLIMSId, GLIMS glac_id
_NAME_KEYS = ("glacname", "name")  # RGI7 glac_name, RGI6 Name
_MAIN_KEYS = ("main",)  # OGGM centerlines: MAIN == 1 on the main flowline


def _gpd():
    try:
        import geopandas
    except ImportError as err:
        raise OptionalDependencyError(
            "reading glacier outline files needs geopandas (and pyogrio); install them with "
            "pip install 'xr_itslive[glaciers]'"
        ) from err
    return geopandas


def _key(column: Any) -> str:
    return re.sub(r"[\s_\-]", "", str(column)).lower()


def _find_column(columns: Any, keys: tuple[str, ...]) -> str | None:
    by_key = {_key(c): c for c in columns}
    for key in keys:
        if key in by_key:
            return by_key[key]
    return None


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    try:
        if np.isnan(value):
            return None
    except TypeError:
        pass
    text = str(value).strip()
    return text or None


def _path_text(source: Any) -> str:
    return str(source) if isinstance(source, str | os.PathLike) else f"<{type(source).__name__}>"


def _read_any(source: Any):
    """A GeoDataFrame from a GeoDataFrame, a path (any OGR format or GeoParquet)."""
    gpd = _gpd()
    if isinstance(source, gpd.GeoDataFrame):
        gdf = source
    elif isinstance(source, gpd.GeoSeries):
        gdf = gpd.GeoDataFrame(geometry=source)
    elif isinstance(source, str | os.PathLike):
        path = Path(source).expanduser()
        if not path.exists():
            raise DataAccessError(
                f"no outline file at {str(source)!r}: it does not exist. Pass the path of a "
                "shapefile, GeoJSON, GeoPackage or GeoParquet file (e.g. an RGI region file)."
            )
        try:
            if path.suffix.lower() in (".parquet", ".geoparquet"):
                gdf = gpd.read_parquet(path)
            else:
                gdf = gpd.read_file(path)
        except Exception as err:  # pyogrio / pyarrow raise their own types
            raise DataAccessError(
                f"could not read {str(source)!r} as glacier outlines: {type(err).__name__}: "
                f"{err}. Expected a shapefile, GeoJSON, GeoPackage or GeoParquet file."
            ) from err
    else:
        raise InvalidParameterError(
            f"outlines must be a file path or a GeoDataFrame, got {type(source).__name__}"
        )
    if gdf.crs is None:
        xmin, ymin, xmax, ymax = gdf.total_bounds
        if -180 <= xmin <= xmax <= 180 and -90 <= ymin <= ymax <= 90:
            gdf = gdf.set_crs(LONLAT)  # GeoJSON without crs is lon/lat by the standard
        else:
            raise InvalidParameterError(
                f"{_path_text(source)} records no CRS and its coordinates are not lon/lat "
                f"(bounds {tuple(round(b, 2) for b in gdf.total_bounds)}); set one with "
                "gdf.set_crs(...) and pass the GeoDataFrame"
            )
    return gdf


def read_outlines(source: Any, *, id_column: str | None = None):
    """Glacier outlines with standard ``rgi_id``, ``glims_id`` and ``glacier_name`` columns.

    Parameters
    ----------
    source
        A path (shapefile, GeoJSON, GeoPackage, GeoParquet) or a GeoDataFrame.
    id_column
        The column holding glacier ids, when it is not RGI's (``rgi_id`` in RGI7, ``RGIId`` in
        RGI6, ``RGIID`` in RGI5).

    Returns
    -------
    geopandas.GeoDataFrame
        The file's rows and columns, plus ``rgi_id``, ``glims_id`` and ``glacier_name``
        (strings or None), in the file's CRS.

    Raises
    ------
    InvalidParameterError
        The file has no RGI id attribute (and ``id_column`` is not given).
    """
    gdf = _read_any(source)
    id_col = id_column or _find_column(gdf.columns, _RGI_ID_KEYS)
    if id_col is None or id_col not in gdf.columns:
        found = [c for c in gdf.columns if c != gdf.geometry.name]
        raise InvalidParameterError(
            f"{_path_text(source)} has no RGI id attribute: expected a column 'rgi_id' (RGI7) "
            f"or 'RGIId' (RGI6), found {found}. Use an RGI outline file, or pass id_column= "
            "naming the column that holds glacier ids."
        )
    glims_col = _find_column(gdf.columns, _GLIMS_ID_KEYS)
    name_col = _find_column(gdf.columns, _NAME_KEYS)
    gdf = gdf.copy()
    gdf["rgi_id"] = [_clean(v) for v in gdf[id_col]]
    gdf["glims_id"] = [_clean(v) for v in gdf[glims_col]] if glims_col else None
    gdf["glacier_name"] = [_clean(v) for v in gdf[name_col]] if name_col else None
    return gdf


def outline_by_id(rgi_id: str, source: Any, *, id_column: str | None = None):
    """The outline (a one-row GeoDataFrame) of glacier ``rgi_id`` in ``source``.

    Raises
    ------
    EmptySelectionError
        No outline has this id; the message lists the closest ids of the file.
    """
    gdf = read_outlines(source, id_column=id_column)
    ids = gdf["rgi_id"].astype(str)
    hit = gdf[ids == str(rgi_id).strip()]
    if hit.empty:
        hit = gdf[ids.str.lower() == str(rgi_id).strip().lower()]
    if hit.empty:
        close = difflib.get_close_matches(str(rgi_id), ids.tolist(), n=3, cutoff=0.6)
        sample = close or ids.head(3).tolist()
        raise EmptySelectionError(
            f"RGI id {rgi_id!r} is not in {_path_text(source)} ({len(gdf)} outlines; "
            f"{'closest ids' if close else 'ids look like'} {sample}). Check the id (RGI6 "
            "'RGI60-11.00897', RGI7 'RGI2000-v7.0-G-11-03116') and that the file covers its "
            "region."
        )
    return hit.iloc[[0]]


def outline_at(lon: float, lat: float, source: Any, *, id_column: str | None = None):
    """The outline (a one-row GeoDataFrame) containing the point ``(lon, lat)``.

    Raises
    ------
    EmptySelectionError
        No outline contains the point; the message names the nearest one.
    """
    import shapely

    _check_lonlat(float(lon), float(lat))
    gdf = read_outlines(source, id_column=id_column)
    point = _reproject(shapely.Point(float(lon), float(lat)), LONLAT, _crs_key(gdf.crs))
    hit = gdf[gdf.geometry.covers(point)]
    if hit.empty:
        distances = gdf.geometry.distance(point)
        nearest = gdf.loc[distances.idxmin()]
        units = "m" if gdf.crs.is_projected else "degrees"
        raise EmptySelectionError(
            f"no glacier outline of {_path_text(source)} contains (lon={lon:g}, lat={lat:g}); "
            f"the nearest is {nearest['rgi_id']!r}, {distances.min():.4g} {units} away. Click "
            "inside a glacier, or use an outline file that covers this point."
        )
    if len(hit) > 1:  # nested or duplicated outlines: the smallest is the most specific
        hit = hit.iloc[[int(np.argmin(hit.geometry.area.to_numpy()))]]
    return hit.iloc[[0]]


def fetch_glims_outline(
    lon: float,
    lat: float,
    *,
    url: str = GLIMS_WFS_URL,
    layer: str = GLIMS_LAYER,
    timeout: float = 30.0,
    attempts: int = 2,
):
    """The GLIMS outline containing ``(lon, lat)``, from the GLIMS web feature service.

    Needs the network. The newest analysis is returned when GLIMS holds several.

    Parameters
    ----------
    lon, lat
        The point, in degrees.
    url, layer
        The WFS endpoint and feature type.
    timeout, attempts
        Bounds on the request: seconds per try, number of tries.

    Returns
    -------
    geopandas.GeoDataFrame
        One row in lon/lat, with ``rgi_id`` (None: GLIMS ids are not RGI ids), ``glims_id``
        and ``glacier_name`` columns.

    Raises
    ------
    DataAccessError
        The service could not be reached or answered something else than GeoJSON.
    EmptySelectionError
        No GLIMS glacier contains the point.
    """
    import shapely

    _check_lonlat(float(lon), float(lat))
    gpd = _gpd()
    half = 0.05
    query = urllib.parse.urlencode(
        {
            "service": "WFS",
            "version": "1.0.0",
            "request": "GetFeature",
            "typeName": layer,
            "outputFormat": "application/json",
            "bbox": f"{lon - half},{lat - half},{lon + half},{lat + half}",
            "maxFeatures": 200,
        }
    )
    request_url = f"{url}?{query}"
    errors = []
    payload = None
    for attempt in range(max(1, attempts)):
        try:
            with urllib.request.urlopen(request_url, timeout=timeout) as response:  # noqa: S310
                payload = response.read()
            break
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            errors.append(f"{type(err).__name__}: {getattr(err, 'reason', err)}")
            if attempt + 1 < attempts:
                time.sleep(0.5 * 2**attempt)
    if payload is None:
        raise DataAccessError(
            f"could not reach the GLIMS service at {url!r} after {attempts} tries "
            f"({'; '.join(errors)}). Without the network, pass outlines= a local RGI file "
            "(shapefile, GeoJSON or GeoParquet) instead of online=True."
        )
    try:
        features = json.loads(payload)["features"]
    except (ValueError, KeyError, TypeError) as err:
        raise DataAccessError(
            f"the GLIMS service at {url!r} did not answer GeoJSON (got {payload[:120]!r}); "
            "the service may have changed: pass url=/layer=, or outlines= a local RGI file"
        ) from err
    if not features:
        raise EmptySelectionError(
            f"GLIMS holds no glacier within 0.05° of (lon={lon:g}, lat={lat:g}); check the "
            "point (lon, lat order)"
        )
    gdf = gpd.GeoDataFrame.from_features(features, crs=LONLAT)
    hit = gdf[gdf.geometry.covers(shapely.Point(lon, lat))]
    if hit.empty:
        raise EmptySelectionError(
            f"no GLIMS glacier outline contains (lon={lon:g}, lat={lat:g}) ({len(gdf)} outlines "
            "nearby); click inside a glacier"
        )
    date_col = _find_column(hit.columns, ("srcdate", "anlystime"))
    if date_col is not None and len(hit) > 1:
        hit = hit.sort_values(date_col, ascending=False)
    hit = hit.iloc[[0]].copy()
    rgi_col = _find_column(hit.columns, _RGI_ID_KEYS)
    glims_col = _find_column(hit.columns, _GLIMS_ID_KEYS)
    name_col = _find_column(hit.columns, _NAME_KEYS)
    hit["rgi_id"] = _clean(hit[rgi_col].iloc[0]) if rgi_col else None
    hit["glims_id"] = _clean(hit[glims_col].iloc[0]) if glims_col else None
    hit["glacier_name"] = _clean(hit[name_col].iloc[0]) if name_col else None
    return hit


# --- outlines on cube grids ---


def outline_geometry(outline: Any, crs: Any = None) -> tuple[Any, str | None]:
    """A shapely geometry and its CRS (canonical text, or None) from any outline form.

    ``outline`` may be a :class:`Glacier`, a GeoDataFrame/GeoSeries (all rows merged), a
    shapely geometry or GeoJSON-like mapping (in ``crs``), or a file path.
    """
    import shapely

    if isinstance(outline, Glacier):
        return outline.outline, outline.crs
    if isinstance(outline, str | os.PathLike):
        gdf = _read_any(outline)
        return gdf.union_all(), _crs_key(gdf.crs)
    if hasattr(outline, "union_all") and hasattr(outline, "crs"):
        return outline.union_all(), (_crs_key(outline.crs) if outline.crs else _key_or_none(crs))
    if isinstance(outline, shapely.Geometry):
        return outline, _key_or_none(crs)
    if isinstance(outline, Mapping) or hasattr(outline, "__geo_interface__"):
        from shapely.geometry import shape

        mapping = outline if isinstance(outline, Mapping) else outline.__geo_interface__
        if mapping.get("type") == "FeatureCollection":
            geoms = [shape(f["geometry"]) for f in mapping["features"]]
            return shapely.union_all(geoms), _key_or_none(crs)
        if mapping.get("type") == "Feature":
            mapping = mapping["geometry"]
        return shape(mapping), _key_or_none(crs)
    raise InvalidParameterError(
        f"cannot use a {type(outline).__name__} as a glacier outline; pass a Glacier, a "
        "GeoDataFrame/GeoSeries, a shapely Polygon, a GeoJSON mapping, or a file path"
    )


def _key_or_none(crs: Any) -> str | None:
    return None if crs is None else _crs_key(crs)


def outline_in_cube_crs(ds: xr.Dataset | xr.DataArray, outline: Any, crs: Any = None) -> Any:
    """The outline as a shapely geometry in the cube's CRS (bare geometries: ``crs``, default
    the cube's own)."""
    geometry, source = outline_geometry(outline, crs)
    target = cube_crs(ds)
    if source is None or target is None:
        return geometry
    target_key = _crs_key(target)
    projected = _reproject(geometry, source, target_key)
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
        A :class:`Glacier`, GeoDataFrame/GeoSeries, file path, shapely geometry or GeoJSON
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
    hx, hy = _spacing(xs) / 2, _spacing(ys) / 2
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
            f"CRS) misses the cube ({_extent_text(ds)}).{hint} Open the cube that covers the "
            "glacier: xr_itslive.find_cubes(polygon=outline) or Glacier.from_rgi_id(...).open()."
        )
    mask = geometry_mask(ds, geometry, all_touched=all_touched)
    if not bool(mask.any()):
        raise EmptySelectionError(
            "the outline overlaps the cube but holds no pixel centre (the glacier is smaller "
            f"than a {_spacing(xs):.0f} m pixel, or lies on the edge); pass all_touched=True "
            "to count the pixels it touches"
        )
    mask.name = "glacier_mask"
    mask.attrs = {
        "description": "pixels inside the glacier outline",
        "all_touched": int(all_touched),
    }
    if isinstance(outline, Glacier) and outline.rgi_id:
        mask.attrs["rgi_id"] = outline.rgi_id
    return mask


# --- centerlines ---


def read_centerlines(source: Any):
    """Glacier centerlines (e.g. OGGM's ``centerlines.shp``) as a GeoDataFrame of lines."""
    gdf = _read_any(source)
    lines = gdf[gdf.geometry.geom_type.isin(["LineString", "MultiLineString"])]
    if lines.empty:
        raise InvalidParameterError(
            f"{_path_text(source)} holds no line geometries (found "
            f"{sorted(set(gdf.geometry.geom_type))}); expected glacier centerlines such as "
            "OGGM's centerlines.shp"
        )
    return lines


def main_centerline(source: Any, *, glacier_id: str | None = None):
    """The main centerline (a one-row GeoDataFrame) of a glacier.

    The main line is the one OGGM flags with ``MAIN == 1``; without that column, the longest.

    Parameters
    ----------
    source
        A centerline file or GeoDataFrame.
    glacier_id
        Keep only the lines of this glacier: matched against every id-like column
        (``RGIID``, ``rgi_id``, ``GLIMSID``, ...). Needed when the file holds several glaciers.
    """
    gdf = read_centerlines(source)
    if glacier_id is not None:
        id_cols = [c for c in gdf.columns if c != gdf.geometry.name and "id" in _key(c)]
        hit = np.zeros(len(gdf), dtype=bool)
        for col in id_cols:
            hit |= (
                gdf[col].astype(str).str.strip().str.lower().eq(str(glacier_id).lower()).to_numpy()
            )
        if not hit.any():
            raise EmptySelectionError(
                f"no centerline of {_path_text(source)} belongs to {glacier_id!r} (id columns "
                f"{id_cols}); check the id or drop glacier_id="
            )
        gdf = gdf[hit]
    main_col = _find_column(gdf.columns, _MAIN_KEYS)
    if main_col is not None:
        main = gdf[gdf[main_col].astype(float) == 1]
        if len(main) > 1:
            raise InvalidParameterError(
                f"{_path_text(source)} holds {len(main)} main centerlines (several glaciers); "
                "pass glacier_id= to pick one"
            )
        if len(main) == 1:
            return main
    metric = gdf.to_crs(gdf.estimate_utm_crs()) if gdf.crs.is_geographic else gdf
    return gdf.iloc[[int(np.argmax(metric.geometry.length.to_numpy()))]]


def _local_metric_crs(geometry: Any, crs: str) -> str:
    """The UTM zone (or polar stereographic) around a geometry, for distances in metres."""
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    lonlat = _reproject(geometry, crs, LONLAT) if crs != LONLAT else geometry
    lon, lat = lonlat.centroid.x, lonlat.centroid.y
    if lat > 84:
        return "EPSG:3413"
    if lat < -80:
        return "EPSG:3031"
    info = query_utm_crs_info(
        datum_name="WGS 84", area_of_interest=AreaOfInterest(lon, lat, lon, lat)
    )
    return f"EPSG:{info[0].code}"


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
    crs_key = _crs_key(crs)
    if isinstance(line, shapely.MultiLineString):
        line = shapely.line_merge(line)
        if isinstance(line, shapely.MultiLineString):
            line = max(line.geoms, key=lambda g: g.length)
    if not isinstance(line, shapely.LineString):
        raise InvalidParameterError(f"a centerline must be a LineString, got {type(line).__name__}")
    metric = _local_metric_crs(line, crs_key)
    local = _reproject(line, crs_key, metric)
    distance = np.arange(0.0, local.length + 1e-9, float(spacing))
    points = shapely.MultiPoint([local.interpolate(d) for d in distance])
    return distance, _reproject(points, metric, crs_key), crs_key


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
        :class:`GlacierCenterline`, or a centerline file (its main line is used).
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
        line_crs = _crs_key(target) if target is not None else LONLAT
    if spacing is None:
        spacing = _spacing(ds["x"].values) or 120.0
    distance, points, _ = sample_line(line_geom, spacing, line_crs)
    if target is not None:
        points = _reproject(points, line_crs, _crs_key(target))
    coords = shapely.get_coordinates(points)
    px, py = coords[:, 0], coords[:, 1]
    xs, ys = ds["x"].values, ds["y"].values
    ix = np.abs(xs[None, :] - px[:, None]).argmin(axis=1)
    iy = np.abs(ys[None, :] - py[:, None]).argmin(axis=1)
    inside = (np.abs(xs[ix] - px) <= _spacing(xs) / 2 + 1e-6) & (
        np.abs(ys[iy] - py) <= _spacing(ys) / 2 + 1e-6
    )
    if not inside.any():
        raise EmptySelectionError(
            f"the centerline (bounds {tuple(round(b, 1) for b in points.bounds)} in the cube's "
            f"CRS) misses the cube ({_extent_text(ds)}); open the cube that covers the glacier "
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

    if isinstance(line, GlacierCenterline):
        return line.line, line.crs
    if isinstance(line, str | os.PathLike):
        row = main_centerline(line)
        return row.geometry.iloc[0], _crs_key(row.crs)
    if hasattr(line, "geometry") and hasattr(line, "crs"):
        geoms = line.geometry
        if len(geoms) != 1:
            raise InvalidParameterError(
                f"pass one centerline, got {len(geoms)} rows; use main_centerline(...) first"
            )
        return geoms.iloc[0], (_crs_key(line.crs) if line.crs else _key_or_none(crs))
    if isinstance(line, shapely.Geometry):
        return line, _key_or_none(crs)
    raise InvalidParameterError(
        f"cannot use a {type(line).__name__} as a centerline; pass a shapely LineString, a "
        "one-row GeoDataFrame, a GlacierCenterline or a centerline file"
    )


# --- glacier objects ---


def _geodesic_area_km2(geometry: Any, crs: str) -> float:
    from pyproj import Geod

    lonlat = _reproject(geometry, crs, LONLAT) if crs != LONLAT else geometry
    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(lonlat)
    return abs(area) / 1e6


def _data_text(data: xr.Dataset | None) -> str:
    if data is None:
        return "not loaded"
    dims = " × ".join(f"{k}: {v}" for k, v in data.sizes.items())
    return f"<{dims}, {len(data.data_vars)} variables>"


def _cube_name(url: str | None) -> str | None:
    return None if url is None else str(url).rstrip("/").rsplit("/", 1)[-1]


def _find_cube_url(geometry: Any, crs: str, catalog: Any) -> str:
    from .catalog import find_cubes

    return find_cubes(polygon=geometry, crs=crs, catalog=catalog)[0].zarr_url


def _open(url: str | None, variables: Any, what: str, **kwargs: Any) -> xr.Dataset:
    from .access import open_cube

    if url is None:
        raise InvalidParameterError(
            f"this {what} has no cube_url; build it with find_cube=True (and a catalog), pass "
            "cube_url=, or give the data with .with_data(ds)"
        )
    return open_cube(url, variables, **kwargs)


@dataclass(frozen=True, repr=False, eq=False)
class Glacier:
    """A glacier: ids, name, outline, the cube that covers it, and (once opened) its data.

    Build one with :meth:`from_rgi_id`, :meth:`from_point`, :meth:`from_click` or
    :meth:`from_outline`; open its cube with :meth:`open`.

    Attributes
    ----------
    rgi_id
        RGI id (None for GLIMS-only outlines).
    name
        Glacier name, when the inventory has one.
    outline
        Shapely (Multi)Polygon, in ``crs``.
    crs
        The outline's CRS as text (``"EPSG:4326"``, ``"EPSG:32646"``...).
    cube_url
        URL or path of the ITS_LIVE cube covering the glacier.
    data
        The opened cube (lazy), or None.
    glims_id
        GLIMS id, when known.
    attributes
        The inventory's other attributes.

    Examples
    --------
    >>> g = Glacier.from_rgi_id("RGI2000-v7.0-G-15-16257", "outlines.geojson")  # doctest: +SKIP
    >>> g = g.open(variables=["vx", "vy"])  # doctest: +SKIP
    >>> result = g.invert(step=30)  # doctest: +SKIP
    """

    rgi_id: str | None
    name: str | None
    outline: Any
    crs: str
    cube_url: str | None = None
    data: xr.Dataset | None = None
    glims_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    # constructors

    @classmethod
    def from_outline(
        cls,
        row: Any,
        *,
        catalog: Any = None,
        cube_url: str | None = None,
        find_cube: bool = True,
    ) -> Glacier:
        """From a one-row GeoDataFrame as :func:`read_outlines` returns.

        With ``find_cube`` (and no ``cube_url``), the catalog cube covering most of the
        outline is recorded (see :func:`xr_itslive.find_cubes`).
        """
        if len(row) != 1:
            raise InvalidParameterError(f"from_outline takes one outline row, got {len(row)}")
        record = row.iloc[0]
        geometry = row.geometry.iloc[0]
        crs = _crs_key(row.crs) if row.crs is not None else LONLAT
        skip = {row.geometry.name, "rgi_id", "glims_id", "glacier_name"}
        attributes = {k: v for k, v in record.items() if k not in skip}
        if cube_url is None and find_cube:
            cube_url = _find_cube_url(geometry, crs, catalog)
        return cls(
            rgi_id=_clean(record.get("rgi_id")),
            name=_clean(record.get("glacier_name")),
            outline=geometry,
            crs=crs,
            cube_url=None if cube_url is None else str(cube_url),
            glims_id=_clean(record.get("glims_id")),
            attributes=attributes,
        )

    @classmethod
    def from_rgi_id(
        cls,
        rgi_id: str,
        outlines: Any,
        *,
        catalog: Any = None,
        cube_url: str | None = None,
        find_cube: bool = True,
    ) -> Glacier:
        """The glacier ``rgi_id`` of an outline file (RGI6 or RGI7 attributes)."""
        return cls.from_outline(
            outline_by_id(rgi_id, outlines), catalog=catalog, cube_url=cube_url, find_cube=find_cube
        )

    @classmethod
    def from_point(
        cls,
        lon: float,
        lat: float,
        outlines: Any = None,
        *,
        online: bool = False,
        catalog: Any = None,
        cube_url: str | None = None,
        find_cube: bool = True,
    ) -> Glacier:
        """The glacier whose outline contains ``(lon, lat)``: from ``outlines`` (a file or
        GeoDataFrame) or, with ``online=True``, from the GLIMS service."""
        if outlines is not None:
            row = outline_at(lon, lat, outlines)
        elif online:
            row = fetch_glims_outline(lon, lat)
        else:
            raise InvalidParameterError(
                "Glacier.from_point needs outlines= (an RGI file or GeoDataFrame), or "
                "online=True to ask the GLIMS service"
            )
        return cls.from_outline(row, catalog=catalog, cube_url=cube_url, find_cube=find_cube)

    @classmethod
    def from_click(cls, coordinates: Any = None, *, outlines: Any = None, **kwargs: Any) -> Glacier:
        """From an ipyleaflet click: ``coordinates`` is ``(lat, lon)`` as ipyleaflet sends it.

        Accepts the keyword arguments of an ``on_interaction`` callback (``type``,
        ``coordinates``...) and those of :meth:`from_point`.
        """
        lat, lon = _click_lat_lon(coordinates)
        options = {
            k: v for k, v in kwargs.items() if k in ("online", "catalog", "cube_url", "find_cube")
        }
        return cls.from_point(lon, lat, outlines, **options)

    # views

    @property
    def area_km2(self) -> float:
        """Outline area on the WGS84 ellipsoid, km²."""
        return _geodesic_area_km2(self.outline, self.crs)

    @property
    def __geo_interface__(self) -> dict[str, Any]:
        """GeoJSON Feature in lon/lat (for maps, e.g. ipyleaflet.GeoJSON)."""
        import shapely

        return {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(self.outline_in(LONLAT)),
            "properties": {"rgi_id": self.rgi_id, "name": self.name, "glims_id": self.glims_id},
        }

    def outline_in(self, crs: Any) -> Any:
        """The outline reprojected to ``crs``."""
        return _reproject(self.outline, self.crs, _crs_key(crs))

    def to_crs(self, crs: Any) -> Glacier:
        """The same glacier with its outline in ``crs``."""
        key = _crs_key(crs)
        return replace(self, outline=self.outline_in(key), crs=key)

    def to_geodataframe(self):
        """A one-row GeoDataFrame of the outline and ids."""
        gpd = _gpd()
        return gpd.GeoDataFrame(
            {"rgi_id": [self.rgi_id], "glims_id": [self.glims_id], "glacier_name": [self.name]},
            geometry=[self.outline],
            crs=self.crs,
        )

    # data

    def open(self, variables: Any = None, **kwargs: Any) -> Glacier:
        """A copy holding the lazily opened cube (see :func:`xr_itslive.open_cube`), with the
        outline in the cube's CRS."""
        ds = _open(self.cube_url, variables, "glacier", **kwargs)
        return self.with_data(ds)

    def with_data(self, ds: xr.Dataset) -> Glacier:
        """A copy holding ``ds`` (outline moved to its CRS when it has one)."""
        crs = cube_crs(ds)
        glacier = replace(self, data=ds)
        return glacier.to_crs(crs) if crs is not None else glacier

    def _require_data(self) -> xr.Dataset:
        if self.data is None:
            raise InvalidParameterError(
                f"{self.rgi_id or 'this glacier'} has no data yet; call .open() (or "
                ".with_data(ds)) first"
            )
        return self.data

    def mask(self, *, all_touched: bool = False) -> xr.DataArray:
        """Boolean ``(y, x)`` mask of the glacier's pixels in its cube."""
        return glacier_mask(self._require_data(), self, all_touched=all_touched)

    def clip(self, **kwargs: Any) -> xr.Dataset:
        """The cube cropped to the glacier, NaN outside (see :func:`xr_itslive.subset.clip`)."""
        from .subset import clip

        return clip(self._require_data(), self, **kwargs)

    def invert(self, **kwargs: Any) -> xr.Dataset:
        """Invert the glacier's pixels only (:func:`xr_itslive.invert` with ``mask=self``)."""
        from .invert import invert

        return invert(self._require_data(), mask=self, **kwargs)

    def point(self, lon: float, lat: float) -> GlacierPoint:
        """A :class:`GlacierPoint` on this glacier (with its series when data is loaded)."""
        point = GlacierPoint(
            lon=float(lon), lat=float(lat), rgi_id=self.rgi_id, name=self.name,
            cube_url=self.cube_url, glacier=self,
        )  # fmt: skip
        return point.load(self.data) if self.data is not None else point

    def centerline(self, source: Any, *, spacing: float | None = None) -> GlacierCenterline:
        """This glacier's main centerline from an OGGM centerline file."""
        return GlacierCenterline.from_file(source, glacier=self, spacing=spacing)

    def __repr__(self) -> str:
        return (
            f"Glacier(rgi_id={self.rgi_id!r}, name={self.name!r}, "
            f"area={self.area_km2:.2f} km², crs={self.crs}, cube={_cube_name(self.cube_url)!r}, "
            f"data={_data_text(self.data)})"
        )


def _click_lat_lon(coordinates: Any) -> tuple[float, float]:
    try:
        lat, lon = (float(v) for v in coordinates)
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(
            f"a map click gives coordinates=(lat, lon), got coordinates={coordinates!r}"
        ) from err
    return lat, lon


@dataclass(frozen=True, repr=False, eq=False)
class GlacierPoint:
    """A point on a glacier and, once loaded, the cube's series at its nearest pixel.

    Attributes
    ----------
    lon, lat
        The point, degrees.
    rgi_id, name
        The glacier it lies on, when known.
    cube_url
        The cube covering it.
    data
        The series at the nearest pixel (see :func:`xr_itslive.subset.point_series`), or None.
    glacier
        The :class:`Glacier`, when known.
    """

    lon: float
    lat: float
    rgi_id: str | None = None
    name: str | None = None
    cube_url: str | None = None
    data: xr.Dataset | None = None
    glacier: Glacier | None = None

    @classmethod
    def from_point(
        cls,
        lon: float,
        lat: float,
        *,
        outlines: Any = None,
        catalog: Any = None,
        cube_url: str | None = None,
        find_cube: bool = True,
    ) -> GlacierPoint:
        """A point; with ``outlines``, the glacier it lies on; with ``find_cube``, its cube."""
        from .catalog import find_cubes

        glacier = None
        if outlines is not None:
            glacier = Glacier.from_point(lon, lat, outlines, catalog=catalog, find_cube=False)
        if cube_url is None and find_cube:
            cube_url = find_cubes(point=(lon, lat), catalog=catalog)[0].zarr_url
        if glacier is not None:
            glacier = replace(glacier, cube_url=cube_url)
        return cls(
            lon=float(lon), lat=float(lat),
            rgi_id=glacier.rgi_id if glacier else None, name=glacier.name if glacier else None,
            cube_url=cube_url, glacier=glacier,
        )  # fmt: skip

    @classmethod
    def from_click(cls, coordinates: Any = None, **kwargs: Any) -> GlacierPoint:
        """From an ipyleaflet click (``coordinates=(lat, lon)``); see :meth:`from_point`."""
        lat, lon = _click_lat_lon(coordinates)
        options = {k: v for k, v in kwargs.items()
                   if k in ("outlines", "catalog", "cube_url", "find_cube")}  # fmt: skip
        return cls.from_point(lon, lat, **options)

    @property
    def offset_m(self) -> float | None:
        """Distance from the point to the centre of the pixel its series comes from."""
        return None if self.data is None else float(self.data.attrs["offset_m"])

    def load(
        self, ds: xr.Dataset | None = None, variables: Any = None, **kwargs: Any
    ) -> GlacierPoint:
        """A copy holding the series at the nearest pixel of ``ds`` (default: the opened cube)."""
        from .subset import point_series

        if ds is None:
            ds = _open(self.cube_url, variables, "point", **kwargs)
        return replace(self, data=point_series(ds, lon=self.lon, lat=self.lat))

    def __repr__(self) -> str:
        offset = "" if self.data is None else f", offset={self.offset_m:.1f} m"
        return (
            f"GlacierPoint(lon={self.lon:.5f}, lat={self.lat:.5f}, rgi_id={self.rgi_id!r}, "
            f"name={self.name!r}, cube={_cube_name(self.cube_url)!r}, "
            f"data={_data_text(self.data)}{offset})"
        )


@dataclass(frozen=True, repr=False, eq=False)
class GlacierCenterline:
    """A glacier's main centerline and, once loaded, the cube's series along it.

    Attributes
    ----------
    line
        Shapely LineString in ``crs`` (OGGM lines run from the head to the terminus).
    crs
        The line's CRS as text.
    rgi_id, name, glims_id
        The glacier, when known.
    spacing
        Metres between sampled points (None: the cube's pixel size).
    cube_url
        The cube covering the glacier.
    data
        The series along the line (dims ``mid_date, distance``), or None.
    """

    line: Any
    crs: str
    rgi_id: str | None = None
    name: str | None = None
    glims_id: str | None = None
    spacing: float | None = None
    cube_url: str | None = None
    data: xr.Dataset | None = None

    @classmethod
    def from_file(
        cls,
        source: Any,
        *,
        glacier: Glacier | None = None,
        glacier_id: str | None = None,
        spacing: float | None = None,
        catalog: Any = None,
        cube_url: str | None = None,
        find_cube: bool = False,
    ) -> GlacierCenterline:
        """The main centerline of an OGGM centerline file.

        With ``glacier``, its ids pick the lines (``glacier_id`` does the same by hand) and
        its cube URL is kept; with ``find_cube``, the catalog cube covering the line is
        recorded.
        """
        lines = read_centerlines(source)
        if glacier_id is None and glacier is not None:
            for candidate in (glacier.rgi_id, glacier.glims_id):
                if candidate is None:
                    continue
                try:
                    main_centerline(lines, glacier_id=candidate)
                except EmptySelectionError:
                    continue
                glacier_id = candidate
                break
        if glacier_id is None and glacier is not None:
            # No shared id: keep the lines inside the glacier's outline.
            outline = glacier.outline_in(lines.crs)
            lines = lines[lines.geometry.intersects(outline)]
            if lines.empty:
                raise EmptySelectionError(
                    f"no centerline of {_path_text(source)} meets the outline of "
                    f"{glacier.rgi_id or glacier.glims_id!r}; is it the same glacier?"
                )
        row = main_centerline(lines, glacier_id=glacier_id)
        crs = _crs_key(row.crs)
        record = row.iloc[0]
        if cube_url is None and glacier is not None:
            cube_url = glacier.cube_url
        if cube_url is None and find_cube:
            cube_url = _find_cube_url(row.geometry.iloc[0], crs, catalog)
        glims_col = _find_column(row.columns, _GLIMS_ID_KEYS)
        return cls(
            line=row.geometry.iloc[0],
            crs=crs,
            rgi_id=glacier.rgi_id
            if glacier
            else _clean(record.get(_find_column(row.columns, _RGI_ID_KEYS))),
            name=glacier.name if glacier else None,
            glims_id=glacier.glims_id
            if glacier and glacier.glims_id
            else (_clean(record[glims_col]) if glims_col else None),
            spacing=spacing,
            cube_url=cube_url,
        )

    @property
    def length_m(self) -> float:
        """Length along the ground (local UTM), metres."""
        metric = _local_metric_crs(self.line, self.crs)
        return float(_reproject(self.line, self.crs, metric).length)

    def points(self, spacing: float | None = None, crs: Any = None) -> tuple[np.ndarray, Any]:
        """``(distance, MultiPoint)``: points every ``spacing`` metres (default: this
        centerline's spacing, else 120 m), in ``crs`` (default the line's)."""
        spacing = spacing or self.spacing or 120.0
        distance, points, _ = sample_line(self.line, spacing, self.crs)
        if crs is not None:
            points = _reproject(points, self.crs, _crs_key(crs))
        return distance, points

    def load(
        self, ds: xr.Dataset | None = None, variables: Any = None, **kwargs: Any
    ) -> GlacierCenterline:
        """A copy holding the series along the line in ``ds`` (default: the opened cube)."""
        if ds is None:
            ds = _open(self.cube_url, variables, "centerline", **kwargs)
        return replace(self, data=centerline_series(ds, self, spacing=self.spacing))

    def __repr__(self) -> str:
        return (
            f"GlacierCenterline(rgi_id={self.rgi_id!r}, glims_id={self.glims_id!r}, "
            f"name={self.name!r}, length={self.length_m / 1000:.1f} km, crs={self.crs}, "
            f"cube={_cube_name(self.cube_url)!r}, data={_data_text(self.data)})"
        )
