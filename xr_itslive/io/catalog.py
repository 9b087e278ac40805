"""Find ITS_LIVE datacubes: the catalog GeoJSON, a spatial index, and point → cube.

The ITS_LIVE catalog (``catalog_v02.json``) lists every datacube with its URL, its EPSG code,
its footprint in lon/lat (``geometry``) and its exact box in its own projection
(``geometry_epsg``). The lon/lat footprints overlap (neighbouring UTM zones cover the same
ground), so the index only proposes candidates; membership is decided with the projected box
in each candidate's own EPSG.

Nothing here touches the network at import time. The catalog is read when first needed, from
(in this order) the ``catalog=`` argument, the ``XR_ITSLIVE_CATALOG`` environment variable,
a cached copy, or the public URL (then cached).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..crs import (
    LONLAT,
    check_lonlat,
    crs_key,
    reproject,
    require_shapely,
    to_lonlat,
    transformer,
)
from ..errors import (
    DataAccessError,
    EmptySelectionError,
    InvalidParameterError,
    OptionalDependencyError,
)
from .cube import open_source
from .download import CATALOG_ENV, DOWNLOAD_ATTEMPTS, DOWNLOAD_TIMEOUT, cache_dir, download
from .urls import to_s3_url

#: The public catalog of ITS_LIVE v2 datacubes.
DEFAULT_CATALOG_URL = "https://its-live-data.s3.amazonaws.com/datacubes/catalog_v02.json"

# Points per edge when a projected box is turned into a lon/lat search envelope: edges of a
# polar-stereographic box are curves in lon/lat, so the four corners alone can miss ground.
_EDGE_POINTS = 32
# Margin (degrees) added around search envelopes and query shapes; the exact test follows.
_ENVELOPE_MARGIN = 0.01
# Query shapes are densified to this segment length (degrees) before reprojection.


@dataclass(frozen=True, repr=False)
class CubeEntry:
    """One datacube of the ITS_LIVE catalog.

    Entries are built by :meth:`~xr_itslive.io.catalog.Catalog.from_geojson`; each parameter is kept as the attribute
    of the same name.

    Parameters
    ----------
    zarr_url : str
        The URL as the catalog gives it (``http://its-live-data.s3.amazonaws.com/...``).
    s3_url : str
        The same as ``s3://`` (what :func:`xr_itslive.open_cube` reads; the bucket's current
        prefix is tried when the catalog's ``datacubes/v2/`` path is gone).
    epsg : int
        EPSG code of the cube's projection.
    footprint : shapely.Polygon
        The catalog's lon/lat footprint (for maps).
    box : shapely.Polygon
        The cube's exact extent in its own projection (what :meth:`contains` and
        :func:`~xr_itslive.find_cubes` test against).
    properties : mapping, optional
        The catalog's other attributes (``RGI_CODE``, ``FULL_NAME``, ...); default empty.
    """

    zarr_url: str
    s3_url: str
    epsg: int
    footprint: Any
    box: Any
    properties: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The cube's file name, e.g. ``ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr``."""
        return self.zarr_url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def crs(self) -> str:
        """The cube's CRS as ``"EPSG:<code>"``."""
        return f"EPSG:{self.epsg}"

    def contains(self, lon: float, lat: float) -> bool:
        """Whether the point (lon/lat) lies in the cube's projected box.

        Parameters
        ----------
        lon, lat : float
            The point, in degrees.
        """
        shapely = require_shapely()
        x, y = transformer(LONLAT, self.crs).transform(lon, lat)
        return bool(np.isfinite(x) and np.isfinite(y) and self.box.covers(shapely.Point(x, y)))

    def open(self, variables: Iterable[str] | None = None, **kwargs: Any):
        """Open this cube lazily with :func:`xr_itslive.open_cube` (keywords passed on).

        Parameters
        ----------
        variables : iterable of str, optional
            Variables to keep (default: all); the pair dates are always kept.
        **kwargs
            ``storage_options`` and ``chunks``, as for :func:`xr_itslive.open_cube`.
        """
        return open_source(self.zarr_url, variables, **kwargs)

    def __repr__(self) -> str:
        xmin, ymin, xmax, ymax = self.box.bounds
        region = self.properties.get("FULL_NAME")
        region = f", region={region!r}" if region else ""
        return (
            f"CubeEntry({self.name!r}, epsg={self.epsg}, "
            f"box=({xmin:.0f}, {ymin:.0f}, {xmax:.0f}, {ymax:.0f}){region})"
        )


def _search_envelope(box_coords: np.ndarray, epsg: int) -> tuple[float, float, float, float]:
    """A lon/lat rectangle sure to contain the projected box (poles and antimeridian included)."""
    (xmin, ymin), (xmax, ymax) = box_coords.min(axis=0), box_coords.max(axis=0)
    t = np.linspace(0.0, 1.0, _EDGE_POINTS)
    xs = np.concatenate([xmin + (xmax - xmin) * t, np.full_like(t, xmax),
                         xmax - (xmax - xmin) * t, np.full_like(t, xmin)])  # fmt: skip
    ys = np.concatenate([np.full_like(t, ymin), ymin + (ymax - ymin) * t,
                         np.full_like(t, ymax), ymax - (ymax - ymin) * t])  # fmt: skip
    lon, lat = transformer(f"EPSG:{epsg}", LONLAT).transform(xs, ys)
    lon, lat = np.asarray(lon), np.asarray(lat)
    ok = np.isfinite(lon) & np.isfinite(lat)
    lon, lat = lon[ok], lat[ok]
    lat_min, lat_max = float(lat.min()), float(lat.max())
    lon_min, lon_max = float(lon.min()), float(lon.max())
    to_box = transformer(LONLAT, f"EPSG:{epsg}")
    for pole in (90.0, -90.0):
        px, py = to_box.transform(0.0, pole)
        if np.isfinite(px) and xmin <= px <= xmax and ymin <= py <= ymax:
            lon_min, lon_max = -180.0, 180.0
            lat_min, lat_max = min(lat_min, pole), max(lat_max, pole)
    # A ring that jumps across the antimeridian: take every longitude (the exact test follows).
    if np.any(np.abs(np.diff(lon)) > 180.0):
        lon_min, lon_max = -180.0, 180.0
    m = _ENVELOPE_MARGIN
    return (lon_min - m, max(lat_min - m, -90.0), lon_max + m, min(lat_max + m, 90.0))


class Catalog:
    """The ITS_LIVE datacube catalog with a spatial index.

    Build it with :func:`load_catalog` (or :meth:`~xr_itslive.io.catalog.Catalog.from_geojson` for an already-parsed
    GeoJSON dict). Query it with :meth:`find` or :func:`~xr_itslive.find_cubes`.

    Parameters
    ----------
    entries : sequence of CubeEntry
        The catalog's cubes (kept as the tuple ``entries``; the index follows their order).
    source : str, optional
        Where the entries came from, shown in ``repr`` and error messages.

    Examples
    --------
    >>> catalog = load_catalog("catalog_v02.json")  # doctest: +SKIP
    >>> catalog.find(point=(95.97, 29.91))[0].name  # doctest: +SKIP
    'ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr'
    """

    def __init__(self, entries: Sequence[CubeEntry], source: str = "<memory>") -> None:
        shapely = require_shapely()
        self.entries: tuple[CubeEntry, ...] = tuple(entries)
        self.source = source
        envelopes = [
            _search_envelope(np.asarray(e.box.exterior.coords), e.epsg) for e in self.entries
        ]
        self._envelopes = shapely.box(*np.asarray(envelopes, dtype=float).T) if envelopes else []
        self._tree = shapely.STRtree(self._envelopes)

    @classmethod
    def from_geojson(cls, geojson: Mapping[str, Any], source: str = "<memory>") -> Catalog:
        """Build the catalog from the parsed GeoJSON FeatureCollection.

        Parameters
        ----------
        geojson : mapping
            The parsed ``catalog_v02.json``: features with ``zarr_url``, ``epsg`` and
            ``geometry_epsg`` properties and a lon/lat ``geometry``.
        source : str, optional
            Where the GeoJSON came from, shown in ``repr`` and error messages.
        """
        shapely = require_shapely()
        from shapely.geometry import shape

        features = geojson.get("features") if isinstance(geojson, Mapping) else None
        if not features:
            raise DataAccessError(
                f"the catalog {source!r} has no features; expected the ITS_LIVE GeoJSON "
                "FeatureCollection (catalog_v02.json) with zarr_url, epsg and geometry_epsg. "
                f"Pass catalog= a valid copy or unset {CATALOG_ENV}."
            )
        entries = []
        for i, feature in enumerate(features):
            props = dict(feature.get("properties") or {})
            missing = [k for k in ("zarr_url", "epsg", "geometry_epsg") if k not in props]
            if missing or not feature.get("geometry"):
                raise DataAccessError(
                    f"catalog {source!r} feature {i} lacks {missing or ['geometry']}; expected "
                    "the ITS_LIVE catalog format (zarr_url, epsg, geometry_epsg, geometry). "
                    f"Pass catalog= a valid copy of {DEFAULT_CATALOG_URL}."
                )
            zarr_url = str(props.pop("zarr_url"))
            epsg = int(props.pop("epsg"))
            box = shapely.make_valid(shape(props.pop("geometry_epsg")))
            footprint = shape(feature["geometry"])
            entries.append(CubeEntry(zarr_url, to_s3_url(zarr_url), epsg, footprint, box, props))
        return cls(entries, source)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CubeEntry]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> CubeEntry:
        return self.entries[index]

    def __repr__(self) -> str:
        return f"Catalog({len(self)} cubes from {self.source!r})"

    def to_geodataframe(self, entries: Iterable[CubeEntry] | None = None):
        """The entries as a GeoDataFrame of lon/lat footprints (needs geopandas).

        Parameters
        ----------
        entries : iterable of CubeEntry, optional
            The entries to include (e.g. a :meth:`find` result); default: all of them.
        """
        try:
            import geopandas as gpd
        except ImportError as err:
            raise OptionalDependencyError(
                "to_geodataframe needs geopandas: pip install 'xr_itslive[glaciers]'"
            ) from err
        rows = list(self.entries if entries is None else entries)
        return gpd.GeoDataFrame(
            {
                "name": [e.name for e in rows],
                "zarr_url": [e.zarr_url for e in rows],
                "s3_url": [e.s3_url for e in rows],
                "epsg": [e.epsg for e in rows],
                "entry": rows,
            },
            geometry=[e.footprint for e in rows],
            crs=LONLAT,
        )

    def find(
        self,
        point: tuple[float, float] | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        polygon: Any = None,
        *,
        crs: Any = LONLAT,
        allow_empty: bool = False,
    ) -> list[CubeEntry]:
        """Catalog entries whose projected box holds ``point`` or meets ``bbox``/``polygon``.

        Results are best first: for a point, the cube in which it lies deepest (farthest from
        the edge); for a shape, the cube covering most of it.

        Parameters
        ----------
        point, bbox, polygon
            The query, exactly one of them: ``(lon, lat)``, ``(west, south, east, north)``, or
            a shapely geometry, GeoSeries/GeoDataFrame or GeoJSON-like object.
        crs : optional
            CRS of the query, default lon/lat (EPSG:4326). Unlike :func:`~xr_itslive.find_cubes`, this
            method does not read a GeoSeries' own CRS: pass it here.
        allow_empty : bool, optional
            Return ``[]`` instead of raising :class:`~xr_itslive.EmptySelectionError` when no
            cube matches.
        """
        shapely = require_shapely()
        query, description = _query_geometry(point, bbox, polygon, crs)
        query_lonlat = to_lonlat(query, crs)
        candidates = self._tree.query(query_lonlat.buffer(_ENVELOPE_MARGIN))
        centre = query_lonlat.centroid
        native = _utm_epsg(centre.x, centre.y)
        scored = []
        for index in np.asarray(candidates, dtype=int):
            entry = self.entries[index]
            local = reproject(query, crs_key(crs), entry.crs)
            if local is None or local.is_empty:
                continue
            if isinstance(local, shapely.Point):
                if not entry.box.covers(local):
                    continue
                coverage = 1.0
            else:
                if not entry.box.intersects(local):
                    continue
                area = local.area
                coverage = entry.box.intersection(local).area / area if area > 0 else 1.0
            # Best first: covering most of the query, then in the query's own UTM zone (least
            # distortion; neighbouring zones' cubes overlap), then deepest inside the box.
            depth = entry.box.exterior.distance(local.centroid)
            score = (round(coverage, 6), entry.epsg == native, depth)
            scored.append((score, int(index), entry))
        scored.sort(key=lambda item: (tuple(-v for v in item[0]), item[1]))
        found = [entry for _, _, entry in scored]
        if not found and not allow_empty:
            raise EmptySelectionError(self._nothing_found_message(query_lonlat, description))
        return found

    def _nothing_found_message(self, query_lonlat: Any, description: str) -> str:
        centroid = query_lonlat.centroid
        nearest = self._tree.query_nearest(centroid)
        hint = ""
        if len(nearest):
            entry = self.entries[int(nearest[0])]
            distance_km = _distance_km(centroid, entry)
            hint = f" The nearest cube is {entry.name} (about {distance_km:.0f} km away)."
        swapped = ""
        lon, lat = centroid.x, centroid.y
        if abs(lon) <= 90 and self.find(point=(lat, lon), allow_empty=True):
            swapped = (
                f" Note that (lon={lat:g}, lat={lon:g}) does fall in a cube: did you swap "
                "lon and lat? Points are (lon, lat)."
            )
        return (
            f"no ITS_LIVE cube covers {description}: none of the {len(self)} cubes of the "
            f"catalog {self.source!r} has a projected box (geometry_epsg) that contains it."
            f"{hint}{swapped} ITS_LIVE cubes cover glacierized regions only; check the "
            "coordinates (lon/lat in degrees unless crs= says otherwise)."
        )


def _utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS84 UTM zone holding ``(lon, lat)``."""
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


def _distance_km(point_lonlat: Any, entry: CubeEntry) -> float:
    shapely = require_shapely()
    x, y = transformer(LONLAT, entry.crs).transform(point_lonlat.x, point_lonlat.y)
    if not (np.isfinite(x) and np.isfinite(y)):
        return float("nan")
    return entry.box.distance(shapely.Point(x, y)) / 1000.0


def _query_geometry(point: Any, bbox: Any, polygon: Any, crs: Any) -> tuple[Any, str]:
    shapely = require_shapely()
    given = [name for name, v in (("point", point), ("bbox", bbox), ("polygon", polygon))
             if v is not None]  # fmt: skip
    if len(given) != 1:
        raise InvalidParameterError(
            f"pass exactly one of point=, bbox=, polygon=; got {given or 'none'}. "
            "Example: find_cubes(point=(95.97, 29.91))."
        )
    geographic = crs_key(crs) == LONLAT
    if point is not None:
        try:
            x, y = (float(v) for v in point)
        except (TypeError, ValueError) as err:
            raise InvalidParameterError(
                f"point must be a (lon, lat) pair of numbers, got point={point!r}"
            ) from err
        if geographic:
            check_lonlat(x, y)
        return shapely.Point(x, y), f"the point (lon={x:g}, lat={y:g})" if geographic else (
            f"the point (x={x:g}, y={y:g}) in {crs}"
        )
    if bbox is not None:
        try:
            xmin, ymin, xmax, ymax = (float(v) for v in bbox)
        except (TypeError, ValueError) as err:
            raise InvalidParameterError(
                f"bbox must be (xmin, ymin, xmax, ymax) (lon/lat: west, south, east, north), "
                f"got bbox={bbox!r}"
            ) from err
        if xmin > xmax or ymin > ymax:
            raise InvalidParameterError(
                f"bbox must be (xmin, ymin, xmax, ymax) with xmin <= xmax and ymin <= ymax, got "
                f"bbox={bbox!r}"
            )
        if geographic:
            check_lonlat(xmin, ymin)
            check_lonlat(xmax, ymax)
        return shapely.box(xmin, ymin, xmax, ymax), f"the bbox {tuple(bbox)!r}"
    geometry = _as_geometry(polygon)
    return geometry, f"the polygon with bounds {tuple(round(b, 4) for b in geometry.bounds)}"


def _as_geometry(obj: Any) -> Any:
    shapely = require_shapely()
    if isinstance(obj, shapely.Geometry):
        return obj
    if hasattr(obj, "union_all"):  # GeoSeries / GeoDataFrame
        return obj.union_all()
    if hasattr(obj, "__geo_interface__"):
        from shapely.geometry import shape

        return shape(obj.__geo_interface__)
    raise InvalidParameterError(
        f"polygon must be a shapely geometry, a GeoSeries/GeoDataFrame or a GeoJSON-like "
        f"object, got {type(obj).__name__}"
    )


@lru_cache(maxsize=8)
def _load_cached(source: str, mtime: float | None) -> Catalog:
    path = Path(source)
    try:
        geojson = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataAccessError(
            f"could not read the catalog {source!r}: {type(err).__name__}: {err}. Expected the "
            f"ITS_LIVE GeoJSON (catalog_v02.json); pass catalog= a valid copy or delete a "
            f"broken cached copy."
        ) from err
    return Catalog.from_geojson(geojson, source)


def load_catalog(
    source: str | os.PathLike | Catalog | Mapping[str, Any] | None = None,
    *,
    cache: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT,
    attempts: int = DOWNLOAD_ATTEMPTS,
) -> Catalog:
    """Read the ITS_LIVE datacube catalog.

    Parameters
    ----------
    source
        A local path, an ``http(s)://`` or ``s3://`` URL, a parsed GeoJSON dict, or a
        :class:`~xr_itslive.io.catalog.Catalog` (returned as is). ``None``: the ``XR_ITSLIVE_CATALOG`` environment
        variable if set, else the cached copy of the public catalog, else the public catalog
        (:data:`~xr_itslive.io.catalog.DEFAULT_CATALOG_URL`), downloaded once and cached.
    cache
        Keep downloaded catalogs in ``$XR_ITSLIVE_CACHE_DIR`` (default
        ``~/.cache/xr_itslive``) and reuse them.
    timeout, attempts
        Bounds on the download: seconds per try and number of tries.

    Returns
    -------
    Catalog

    Examples
    --------
    >>> catalog = load_catalog("catalog_v02.json")  # doctest: +SKIP
    >>> len(catalog)  # doctest: +SKIP
    3086
    """
    if isinstance(source, Catalog):
        return source
    if isinstance(source, Mapping):
        return Catalog.from_geojson(source)
    if source is None:
        source = os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG_URL
    source = str(source)
    if source.startswith(("http://", "https://", "s3://")):
        cached = cache_dir() / source.rstrip("/").rsplit("/", 1)[-1]
        if cache and cached.is_file():
            return _load_cached(str(cached), cached.stat().st_mtime)
        payload = download(source, timeout, attempts)
        if not cache:
            return Catalog.from_geojson(json.loads(payload), source)
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(cached.suffix + ".part")
        partial.write_bytes(payload)
        partial.replace(cached)
        return _load_cached(str(cached), cached.stat().st_mtime)
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataAccessError(
            f"no catalog at {source!r}: the file does not exist. Pass catalog= the path of a "
            f"copy of catalog_v02.json, a URL, or None for {DEFAULT_CATALOG_URL}."
        )
    return _load_cached(str(path.resolve()), path.stat().st_mtime)


def find_cubes(
    point: tuple[float, float] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    polygon: Any = None,
    catalog: str | os.PathLike | Catalog | None = None,
    *,
    crs: Any = LONLAT,
    allow_empty: bool = False,
) -> list[CubeEntry]:
    """The ITS_LIVE datacubes covering a point, a bbox or a polygon.

    Parameters
    ----------
    point
        ``(lon, lat)`` (or ``(x, y)`` in ``crs``).
    bbox
        ``(west, south, east, north)`` (or ``(xmin, ymin, xmax, ymax)`` in ``crs``).
    polygon
        A shapely geometry (in ``crs``), or a GeoSeries/GeoDataFrame (its own CRS is used).
    catalog
        Where the catalog comes from: see :func:`load_catalog` (default: the public one,
        cached).
    crs
        CRS of ``point``/``bbox``/``polygon`` (default lon/lat, EPSG:4326).
    allow_empty
        Return ``[]`` instead of raising when no cube matches.

    Returns
    -------
    list of CubeEntry
        Best first: for a point, the cube it lies deepest in; for a shape, the cube covering
        most of it.

    Raises
    ------
    EmptySelectionError
        No cube covers the query (unless ``allow_empty``); the message names the nearest cube.

    Examples
    --------
    >>> entries = find_cubes(point=(95.97, 29.91), catalog="catalog_v02.json")  # doctest: +SKIP
    >>> entries[0].s3_url  # doctest: +SKIP
    's3://its-live-data/datacubes/v2/N30E090/ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr'
    """
    if polygon is not None and getattr(polygon, "crs", None) is not None:
        crs = polygon.crs
    return load_catalog(catalog).find(point, bbox, polygon, crs=crs, allow_empty=allow_empty)
