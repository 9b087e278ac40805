"""Glacier outline and centerline files, and the GLIMS web service.

Outlines come from a user's file (shapefile, GeoJSON, GeoPackage or GeoParquet, with RGI6
``RGIId`` or RGI7 ``rgi_id`` attributes) or, online, from the GLIMS web feature service.
geopandas is needed to read files (``pip install 'xr_itslive[glaciers]'``).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from ..crs import LONLAT, check_lonlat, crs_key, reproject
from ..errors import (
    DataAccessError,
    EmptySelectionError,
    InvalidParameterError,
    OptionalDependencyError,
)
from .download import download

#: The GLIMS web feature service (WFS) that :func:`fetch_glims_outline` asks by default.
GLIMS_WFS_URL = "https://www.glims.org/geoserver/ows"
#: Environment variable naming another WFS endpoint to ask instead (a mirror, a local server).
GLIMS_URL_ENV = "XR_ITSLIVE_GLIMS_URL"
#: The GLIMS feature type (layer) holding the glacier outlines.
GLIMS_LAYER = "GLIMS:GLIMS_Glacier_Outlines"
#: Degrees around the point of the WFS query's bounding box.
GLIMS_BBOX_HALF_DEG = 0.05

#: Normalized column names (lower case, no ``_``) that hold ids and names, by convention.
RGI_ID_KEYS = ("rgiid",)  # RGI7 rgi_id, RGI6 RGIId, RGI5 RGIID
GLIMS_ID_KEYS = ("glimsid", "glacid", "glimsidcr")  # RGI glims_id / GLIMSId, GLIMS glac_id
_NAME_KEYS = ("glacname", "name")  # RGI7 glac_name, RGI6 Name
_MAIN_KEYS = ("main",)  # OGGM centerlines: MAIN == 1 on the main flowline


def geopandas_module():
    try:
        import geopandas
    except ImportError as err:
        raise OptionalDependencyError(
            "reading glacier outline files needs geopandas (and pyogrio); install them with "
            "pip install 'xr_itslive[glaciers]'"
        ) from err
    return geopandas


def column_key(column: Any) -> str:
    return re.sub(r"[\s_\-]", "", str(column)).lower()


def find_column(columns: Any, keys: tuple[str, ...]) -> str | None:
    by_key = {column_key(c): c for c in columns}
    for key in keys:
        if key in by_key:
            return by_key[key]
    return None


def clean_value(value: Any) -> str | None:
    if value is None:
        return None
    try:
        if np.isnan(value):
            return None
    except TypeError:
        pass
    text = str(value).strip()
    return text or None


def path_text(source: Any) -> str:
    return str(source) if isinstance(source, str | os.PathLike) else f"<{type(source).__name__}>"


def read_any(source: Any):
    """A GeoDataFrame from a GeoDataFrame, a path (any OGR format or GeoParquet)."""
    gpd = geopandas_module()
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
                f"{path_text(source)} records no CRS and its coordinates are not lon/lat "
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
    gdf = read_any(source)
    id_col = id_column or find_column(gdf.columns, RGI_ID_KEYS)
    if id_col is None or id_col not in gdf.columns:
        found = [c for c in gdf.columns if c != gdf.geometry.name]
        raise InvalidParameterError(
            f"{path_text(source)} has no RGI id attribute: expected a column 'rgi_id' (RGI7) "
            f"or 'RGIId' (RGI6), found {found}. Use an RGI outline file, or pass id_column= "
            "naming the column that holds glacier ids."
        )
    glims_col = find_column(gdf.columns, GLIMS_ID_KEYS)
    name_col = find_column(gdf.columns, _NAME_KEYS)
    gdf = gdf.copy()
    gdf["rgi_id"] = [clean_value(v) for v in gdf[id_col]]
    gdf["glims_id"] = [clean_value(v) for v in gdf[glims_col]] if glims_col else None
    gdf["glacier_name"] = [clean_value(v) for v in gdf[name_col]] if name_col else None
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
            f"RGI id {rgi_id!r} is not in {path_text(source)} ({len(gdf)} outlines; "
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

    check_lonlat(float(lon), float(lat))
    gdf = read_outlines(source, id_column=id_column)
    point = reproject(shapely.Point(float(lon), float(lat)), LONLAT, crs_key(gdf.crs))
    hit = gdf[gdf.geometry.covers(point)]
    if hit.empty:
        distances = gdf.geometry.distance(point)
        nearest = gdf.loc[distances.idxmin()]
        units = "m" if gdf.crs.is_projected else "degrees"
        raise EmptySelectionError(
            f"no glacier outline of {path_text(source)} contains (lon={lon:g}, lat={lat:g}); "
            f"the nearest is {nearest['rgi_id']!r}, {distances.min():.4g} {units} away. Click "
            "inside a glacier, or use an outline file that covers this point."
        )
    if len(hit) > 1:  # nested or duplicated outlines: the smallest is the most specific
        hit = hit.iloc[[int(np.argmin(hit.geometry.area.to_numpy()))]]
    return hit.iloc[[0]]


def glims_url(url: str | None = None) -> str:
    """The GLIMS WFS endpoint to ask: ``url`` when given, else ``$XR_ITSLIVE_GLIMS_URL``, else
    :data:`GLIMS_WFS_URL`.

    Parameters
    ----------
    url : str, optional
        An endpoint chosen by the caller (it wins over the environment).

    Returns
    -------
    str
    """
    if url:
        return str(url)
    return os.environ.get(GLIMS_URL_ENV, "").strip() or GLIMS_WFS_URL


def _service_exception(payload: bytes) -> str | None:
    # GeoServer answers a refused query with an XML ServiceExceptionReport.
    text = payload[:4000].decode("utf-8", "replace")
    if "ServiceException" not in text:
        return None
    tag = r"<(?:\w+:)?(?:ServiceException|ExceptionText)(?:\s[^>]*)?>"
    found = re.search(tag + r"(.*?)</", text, re.S)
    return " ".join((found.group(1) if found else text).split())[:300]


def fetch_glims_outline(
    lon: float,
    lat: float,
    *,
    url: str | None = None,
    layer: str = GLIMS_LAYER,
    timeout: float = 30.0,
    attempts: int = 2,
):
    """The GLIMS outline containing ``(lon, lat)``, from the GLIMS web feature service.

    Needs the network (or a local stand-in: ``url=`` or ``$XR_ITSLIVE_GLIMS_URL``). The query
    is a WFS 1.0.0 ``GetFeature`` of ``layer`` in a box of ±0.05° around the point, as
    GeoJSON; the outline covering the point is kept, the newest analysis when GLIMS holds
    several.

    Parameters
    ----------
    lon, lat
        The point, in degrees.
    url
        The WFS endpoint; default :func:`glims_url` (``$XR_ITSLIVE_GLIMS_URL``, else
        :data:`GLIMS_WFS_URL`).
    layer
        The WFS feature type.
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
        The service could not be reached, refused the query, or answered something else than
        a GeoJSON FeatureCollection.
    EmptySelectionError
        No GLIMS glacier contains the point.
    """
    import requests
    import shapely

    check_lonlat(float(lon), float(lat))
    lon, lat = float(lon), float(lat)
    gpd = geopandas_module()
    url = glims_url(url)
    half = GLIMS_BBOX_HALF_DEG
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
    request_url = f"{url}{'&' if '?' in url else '?'}{query}"
    offline = (
        "Without the network, pass outlines= a local RGI file (shapefile, GeoJSON or "
        f"GeoParquet) instead of asking GLIMS, or point ${GLIMS_URL_ENV} at a reachable mirror."
    )
    try:  # bounded tries with backoff (requests/urllib3), not cached: a live query
        payload = download(request_url, timeout, max(1, attempts), what="the GLIMS outline")
    except DataAccessError as err:
        cause = err.__cause__ or err
        response = getattr(cause, "response", None)
        if isinstance(cause, requests.HTTPError) and response is not None:
            refused = _service_exception(response.content or b"") or response.reason
            raise DataAccessError(
                f"the GLIMS service at {url!r} answered HTTP {response.status_code} to the query "
                f"for layer {layer!r} ({refused}); check url= and layer=. {offline}"
            ) from cause
        raise DataAccessError(
            f"could not reach the GLIMS service at {url!r} after {max(1, attempts)} tries "
            f"({type(cause).__name__}: {str(cause)[:300]}). {offline}"
        ) from cause
    refused = _service_exception(payload)
    if refused is not None:
        raise DataAccessError(
            f"the GLIMS service at {url!r} refused the query for layer {layer!r}: {refused}. "
            "Check url= and layer=, or pass outlines= a local RGI file"
        )
    try:
        answer = json.loads(payload)
        features = answer["features"]
        if not isinstance(features, list):
            raise TypeError(f"'features' is a {type(features).__name__}, not a list")
        gdf = gpd.GeoDataFrame.from_features(features, crs=LONLAT) if features else None
    except Exception as err:  # json, shapely and geopandas raise their own types
        raise DataAccessError(
            f"the GLIMS service at {url!r} did not answer GeoJSON (got {payload[:120]!r}: "
            f"{type(err).__name__}: {str(err)[:120]}); the service may have changed: pass "
            "url=/layer=, or outlines= a local RGI file"
        ) from err
    if gdf is None:
        raise EmptySelectionError(
            f"GLIMS holds no glacier within {half:g}° of (lon={lon:g}, lat={lat:g}); check "
            "the point (lon, lat order), or click inside a glacier"
        )
    hit = gdf[gdf.geometry.covers(shapely.Point(lon, lat))]
    if hit.empty:
        raise EmptySelectionError(
            f"no GLIMS glacier outline contains (lon={lon:g}, lat={lat:g}) ({len(gdf)} outlines "
            "nearby); click inside a glacier"
        )
    date_col = find_column(hit.columns, ("srcdate", "anlystime"))
    if date_col is not None and len(hit) > 1:
        hit = hit.sort_values(date_col, ascending=False, kind="stable")
    hit = hit.iloc[[0]].copy()
    rgi_col = find_column(hit.columns, RGI_ID_KEYS)
    glims_col = find_column(hit.columns, GLIMS_ID_KEYS)
    name_col = find_column(hit.columns, _NAME_KEYS)
    hit["rgi_id"] = clean_value(hit[rgi_col].iloc[0]) if rgi_col else None
    hit["glims_id"] = clean_value(hit[glims_col].iloc[0]) if glims_col else None
    hit["glacier_name"] = clean_value(hit[name_col].iloc[0]) if name_col else None
    return hit.reset_index(drop=True)


def read_centerlines(source: Any):
    """Glacier centerlines (e.g. OGGM's ``centerlines.shp``) as a GeoDataFrame of lines."""
    gdf = read_any(source)
    lines = gdf[gdf.geometry.geom_type.isin(["LineString", "MultiLineString"])]
    if lines.empty:
        raise InvalidParameterError(
            f"{path_text(source)} holds no line geometries (found "
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
        id_cols = [c for c in gdf.columns if c != gdf.geometry.name and "id" in column_key(c)]
        hit = np.zeros(len(gdf), dtype=bool)
        for col in id_cols:
            hit |= (
                gdf[col].astype(str).str.strip().str.lower().eq(str(glacier_id).lower()).to_numpy()
            )
        if not hit.any():
            raise EmptySelectionError(
                f"no centerline of {path_text(source)} belongs to {glacier_id!r} (id columns "
                f"{id_cols}); check the id or drop glacier_id="
            )
        gdf = gdf[hit]
    main_col = find_column(gdf.columns, _MAIN_KEYS)
    if main_col is not None:
        main = gdf[gdf[main_col].astype(float) == 1]
        if len(main) > 1:
            raise InvalidParameterError(
                f"{path_text(source)} holds {len(main)} main centerlines (several glaciers); "
                "pass glacier_id= to pick one"
            )
        if len(main) == 1:
            return main
    metric = gdf.to_crs(gdf.estimate_utm_crs()) if gdf.crs.is_geographic else gdf
    return gdf.iloc[[int(np.argmax(metric.geometry.length.to_numpy()))]]
