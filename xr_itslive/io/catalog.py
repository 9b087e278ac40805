"""Find ITS_LIVE datacubes: the STAC API or the GeoJSON catalog, and point → cube.

Two kinds of catalog list ITS_LIVE's datacubes, and both answer the same queries the same way:

- today's **STAC API** (root https://stac.itslive.cloud, collection ``itslive-cubes``; the
  default), searched on each query through pystac-client (:mod:`xr_itslive.io.stac`): its items
  give the zarr URL (the asset with role ``data``), the CRS (``proj:code``) and a lon/lat
  footprint, and the cube's projected box comes from ``proj:bbox``/``proj:geometry`` or else
  from the cube's name, which encodes its centre (ITS_LIVE tiles are 100 km square);
- the static **GeoJSON** catalog (``catalog_v02.json``, 2023) that it replaced, read whole and
  kept with a spatial index; its features give the projected box as ``geometry_epsg``.

The lon/lat footprints overlap (neighbouring UTM zones cover the same ground), so footprints
only propose candidates; membership is decided with the projected box in each candidate's own
EPSG, and the ranking is the same code for both kinds (:meth:`Catalog.find`).

Nothing here touches the network at import time. The catalog is chosen when first needed, from
(in this order) the ``catalog=`` argument, the ``XR_ITSLIVE_CATALOG`` environment variable, or
the public STAC API. A GeoJSON catalog given as a URL is downloaded once and cached (pooch);
the cached copy is reused whatever its age, and :attr:`Catalog.age` says how old it is.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
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
    renamed_parameters,
)
from .cube import open_source
from .download import (
    CATALOG_ENV,
    DOWNLOAD_ATTEMPTS,
    DOWNLOAD_TIMEOUT,
    cached_download,
    download,
)
from .stac import (
    DEFAULT_COLLECTION,
    DEFAULT_STAC_URL,
    PAGE_LIMIT,
    is_stac_root,
    open_api,
    search_items,
)
from .urls import DEFAULT_CATALOG_URL, to_s3_url

#: Side of an ITS_LIVE datacube tile, in metres of its projection.
TILE_SIZE = 100_000.0

# The projected centre in a cube's name: ..._EPSG32646_G0120_X750000_Y3350000.zarr
_NAME_CENTRE = re.compile(r"EPSG(?P<epsg>\d+)_G\d+_X(?P<x>-?\d+(?:\.\d+)?)_Y(?P<y>-?\d+(?:\.\d+)?)")
# Margin (degrees) around the query sent to a STAC API. Items are matched by their lon/lat
# footprint, which may differ from the projected box it stands for: by up to 0.036° in the
# 2023 catalog's four-corner footprints (polar tiles; 0.003° for UTM tiles). The exact test
# on the projected box follows, so a wider net only costs a few more candidates.
_STAC_MARGIN = 0.1

# Points per edge when a projected box is turned into a lon/lat search envelope: edges of a
# polar-stereographic box are curves in lon/lat, so the four corners alone can miss ground.
_EDGE_POINTS = 32
# Margin (degrees) added around search envelopes and query shapes; the exact test follows.
_ENVELOPE_MARGIN = 0.01
# Query shapes are densified to this segment length (degrees) before reprojection.


@dataclass(frozen=True, repr=False)
class CubeEntry:
    """One datacube of the ITS_LIVE catalog.

    Entries are built from a STAC item by :meth:`from_stac_item` and from a GeoJSON catalog
    feature by :meth:`~xr_itslive.io.catalog.Catalog.from_geojson`; each parameter is kept as
    the attribute of the same name.

    Parameters
    ----------
    zarr_url : str
        The URL as the catalog gives it (``https://its-live-data.s3.amazonaws.com/...``).
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
        The catalog's other attributes (``RGI_CODE``, ``FULL_NAME``, a STAC item's
        properties, ...); default empty.
    """

    zarr_url: str
    s3_url: str
    epsg: int
    footprint: Any
    box: Any
    properties: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_stac_item(cls, item: Mapping[str, Any], source: str = "<memory>") -> CubeEntry:
        """The entry of an ITS_LIVE STAC item (a GeoJSON feature as a dict).

        The zarr URL is the href of the asset whose ``roles`` contain ``"data"`` and whose href
        ends in ``.zarr`` (every asset is looked at: the asset key varies). The EPSG code is
        ``properties["proj:code"]`` (``"EPSG:3413"``), or ``proj:epsg``, or the cube's name.
        The projected box is ``proj:bbox`` or ``proj:geometry`` when the item has them, else
        the 100 km tile (:data:`~xr_itslive.io.catalog.TILE_SIZE`) centred on the point that
        the cube's name encodes (``..._X750000_Y3350000.zarr``).

        Parameters
        ----------
        item : mapping
            The STAC item: ``id``, ``geometry`` (lon/lat), ``properties`` and ``assets``.
        source : str, optional
            Where the item came from (the STAC API), for error messages.

        Returns
        -------
        CubeEntry

        Raises
        ------
        DataAccessError
            The item has no zarr asset, no CRS, or no projected box (neither ``proj:bbox``/
            ``proj:geometry`` nor a cube name that encodes its centre); the message names
            the item.
        """
        shapely = require_shapely()
        from shapely.geometry import shape

        item_id = item.get("id", "<no id>")
        props = dict(item.get("properties") or {})
        assets = item.get("assets") or {}
        zarr_url = None
        for asset in assets.values() if isinstance(assets, Mapping) else ():
            href = str((asset or {}).get("href", ""))
            if "data" in ((asset or {}).get("roles") or ()) and href.rstrip("/").endswith(".zarr"):
                zarr_url = href
                break
        if zarr_url is None:
            shown = {k: (a or {}).get("roles") for k, a in assets.items()} if assets else {}
            raise DataAccessError(
                f"the STAC item {item_id!r} of {source} has no zarr asset (an asset with role "
                f"'data' and an href ending in .zarr); its assets are {shown}. Is this an "
                f"ITS_LIVE datacube collection? Pass catalog= {DEFAULT_STAC_URL} (collection "
                f"{DEFAULT_COLLECTION!r}) or a GeoJSON catalog file (catalog_v02.json)."
            )
        name = zarr_url.rstrip("/").rsplit("/", 1)[-1]
        centre = _NAME_CENTRE.search(name)
        epsg = _item_epsg(props)
        if epsg is None and centre is not None:
            epsg = int(centre["epsg"])
        if epsg is None:
            raise DataAccessError(
                f"the STAC item {item_id!r} of {source} gives no CRS: expected "
                f"properties['proj:code'] (e.g. 'EPSG:32646') or 'proj:epsg', or a cube name "
                f"with _EPSG<code>_ (got {name!r})."
            )
        box = None
        if props.get("proj:bbox") is not None:
            bounds = [float(v) for v in props["proj:bbox"]]
            if len(bounds) == 6:  # 3-D: xmin, ymin, zmin, xmax, ymax, zmax
                bounds = bounds[0:2] + bounds[3:5]
            if len(bounds) == 4:
                box = shapely.box(*bounds)
        if box is None and props.get("proj:geometry"):
            box = shapely.make_valid(shape(props["proj:geometry"]))
        if box is None and centre is not None:
            x, y, half = float(centre["x"]), float(centre["y"]), TILE_SIZE / 2
            box = shapely.box(x - half, y - half, x + half, y + half)
        if box is None or box.is_empty:
            raise DataAccessError(
                f"the STAC item {item_id!r} of {source} gives no projected box: it has neither "
                f"properties['proj:bbox'] nor 'proj:geometry', and its cube name {name!r} does "
                "not encode the tile's centre (ITS_LIVE_vel_EPSG<code>_G0120_X<x>_Y<y>.zarr). "
                "Pass catalog= the ITS_LIVE STAC API or a GeoJSON catalog file."
            )
        geometry = item.get("geometry")
        footprint = shape(geometry) if geometry else to_lonlat(box, f"EPSG:{epsg}")
        props["stac_id"] = item_id
        return cls(zarr_url, to_s3_url(zarr_url), epsg, footprint, box, props)

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


def _item_epsg(props: Mapping[str, Any]) -> int | None:
    """The EPSG code of ``proj:code`` (``"EPSG:32646"``) or ``proj:epsg``, if either is given."""
    code = props.get("proj:code")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        try:
            return int(code.split(":", 1)[1])
        except ValueError:
            return None
    epsg = props.get("proj:epsg")
    try:
        return int(epsg) if epsg is not None else None
    except (TypeError, ValueError):
        return None


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

    Build it with :func:`~xr_itslive.load_catalog` (or :meth:`from_geojson` for an
    already-parsed GeoJSON dict, :meth:`from_stac_items` for STAC items). Query it with
    :meth:`find` or :func:`~xr_itslive.find_cubes`. :class:`StacCatalog` is the same catalog
    searched through a STAC API on each query.

    Parameters
    ----------
    entries : sequence of CubeEntry
        The catalog's cubes (kept as the tuple ``entries``; the index follows their order).
    source : str, optional
        Where the entries came from, shown in ``repr`` and error messages.
    retrieved : datetime.datetime, optional
        When the entries were fetched (a cached download's time), kept as :attr:`retrieved`;
        default None (unknown, or built in memory).

    Examples
    --------
    >>> catalog = load_catalog("catalog_v02.json")  # doctest: +SKIP
    >>> catalog.find(point=(95.97, 29.91))[0].name  # doctest: +SKIP
    'ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr'
    """

    def __init__(
        self,
        entries: Sequence[CubeEntry],
        source: str = "<memory>",
        retrieved: dt.datetime | None = None,
    ) -> None:
        shapely = require_shapely()
        self.entries: tuple[CubeEntry, ...] = tuple(entries)
        self.source = source
        #: When the entries were fetched: the download time of a cached copy, the modification
        #: time of a local file; None when unknown.
        self.retrieved = retrieved
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

    @classmethod
    def from_stac_items(
        cls, items: Iterable[Mapping[str, Any]], source: str = "<memory>"
    ) -> Catalog:
        """Build the catalog from STAC items (dicts), each read by :meth:`CubeEntry.from_stac_item`.

        Parameters
        ----------
        items : iterable of mapping
            ITS_LIVE STAC items (GeoJSON features with ``assets`` and ``proj:code``).
        source : str, optional
            Where the items came from, shown in ``repr`` and error messages.
        """
        return cls([CubeEntry.from_stac_item(item, source) for item in items], source)

    @property
    def age(self) -> dt.timedelta | None:
        """How long ago the entries were fetched (None when :attr:`retrieved` is unknown).

        ITS_LIVE updates its cubes often: a cached catalog older than a few weeks may miss
        new cubes (delete the cached file, or pass ``cache=False`` to
        :func:`~xr_itslive.load_catalog`).
        """
        if self.retrieved is None:
            return None
        return dt.datetime.now(dt.UTC) - self.retrieved

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[CubeEntry]:
        return iter(self.entries)

    def __getitem__(self, index: int) -> CubeEntry:
        return self.entries[index]

    def __repr__(self) -> str:
        age = self.age
        when = ""
        if age is not None:
            days = age.total_seconds() / 86400
            when = f", retrieved {days:.1f} days ago" if days >= 0.1 else ", retrieved just now"
        return f"Catalog({len(self)} cubes from {self.source!r}{when})"

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

    @renamed_parameters(polygon="geometry")
    def find(
        self,
        point: tuple[float, float] | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        geometry: Any = None,
        *,
        crs: Any = LONLAT,
        allow_empty: bool = False,
    ) -> list[CubeEntry]:
        """Catalog entries whose projected box holds ``point`` or meets ``bbox``/``geometry``.

        Results are best first: the cube covering most of the query, then one in the query's
        own UTM zone (least distortion), then the one in which the query's centre lies deepest
        (farthest from the edge); ties keep the catalog's order.

        Parameters
        ----------
        point, bbox, geometry
            The query, exactly one of them: ``(lon, lat)``, ``(west, south, east, north)``, or
            a shapely geometry, GeoSeries/GeoDataFrame or GeoJSON-like object. ``polygon=``,
            the old name of ``geometry=``, works for one more release (DeprecationWarning).
        crs : optional
            CRS of the query, default lon/lat (EPSG:4326). Unlike
            :func:`~xr_itslive.find_cubes`, this method does not read a GeoSeries' own CRS:
            pass it here.
        allow_empty : bool, optional
            Return ``[]`` instead of raising :class:`~xr_itslive.EmptySelectionError` when no
            cube matches.
        """
        shapely = require_shapely()
        query, description = _query_geometry(point, bbox, geometry, crs)
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
            f"catalog {self.source!r} has a projected box that contains it."
            f"{hint}{swapped} ITS_LIVE cubes cover glacierized regions only; check the "
            "coordinates (lon/lat in degrees unless crs= says otherwise)."
        )


class StacCatalog(Catalog):
    """ITS_LIVE datacubes served by a STAC API, searched on each query.

    :meth:`find` asks the API for the items whose lon/lat footprint comes near the query
    (following every page of the answer), reads them as :class:`CubeEntry` objects
    (:meth:`CubeEntry.from_stac_item`) and decides membership and ranking exactly as
    :meth:`Catalog.find` does for the GeoJSON catalog, on the projected boxes. Opening checks
    the API and the collection (two requests); the client is then reused.

    The whole collection (``entries``, ``len``, iteration: what a map of every cube needs)
    is fetched once, when first asked for; from then on :meth:`find` answers from that copy
    without asking the API again.

    Parameters
    ----------
    root : str, optional
        The STAC API root (default: :data:`~xr_itslive.io.stac.DEFAULT_STAC_URL`, the public
        ITS_LIVE API).
    collection : str, optional
        The collection of datacubes (default ``"itslive-cubes"``).
    limit : int, optional
        Items per page of a search (:data:`~xr_itslive.io.stac.PAGE_LIMIT`); every page is
        read.
    timeout : float, optional
        Seconds to wait for an answer per try (connecting takes at most
        :data:`~xr_itslive.io.download.CONNECT_TIMEOUT`).
    attempts : int, optional
        Tries per request, with exponential backoff.

    Raises
    ------
    DataAccessError
        The API cannot be reached (the message names the offline fallback: a GeoJSON catalog
        file), answers something that is not STAC, or has no such collection.

    Examples
    --------
    >>> catalog = StacCatalog()  # doctest: +SKIP
    >>> catalog.find(point=(95.97, 29.915))[0].name  # doctest: +SKIP
    'ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr'
    """

    def __init__(
        self,
        root: str = DEFAULT_STAC_URL,
        collection: str = DEFAULT_COLLECTION,
        *,
        limit: int = PAGE_LIMIT,
        timeout: float = DOWNLOAD_TIMEOUT,
        attempts: int = DOWNLOAD_ATTEMPTS,
    ) -> None:
        self.root = str(root)
        self.collection = collection
        self.limit = int(limit)
        self.timeout = float(timeout)
        self.attempts = int(attempts)
        self.source = f"the STAC API at {self.root} (collection {collection!r})"
        self.retrieved = None  # searched live, until the whole collection is fetched
        self._client = open_api(self.root, collection, self.timeout, self.attempts)
        self._listing: Catalog | None = None

    @property
    def entries(self) -> tuple[CubeEntry, ...]:  # type: ignore[override]
        """Every cube of the collection (fetched from the API once, when first asked for)."""
        if self._listing is None:
            items = self._search(None, limit=max(self.limit, 1000))
            self._listing = Catalog.from_stac_items(items, self.source)
            self.retrieved = dt.datetime.now(dt.UTC)
        return self._listing.entries

    def __repr__(self) -> str:
        return f"StacCatalog({self.root!r}, collection={self.collection!r})"

    def _search(self, intersects: Any, limit: int | None = None) -> list[dict[str, Any]]:
        return search_items(
            self._client,
            self.collection,
            intersects=intersects,
            limit=limit or self.limit,
            root=self.root,
            attempts=self.attempts,
            timeout=self.timeout,
        )

    @renamed_parameters(polygon="geometry")
    def find(
        self,
        point: tuple[float, float] | None = None,
        bbox: tuple[float, float, float, float] | None = None,
        geometry: Any = None,
        *,
        crs: Any = LONLAT,
        allow_empty: bool = False,
    ) -> list[CubeEntry]:
        """Entries whose projected box holds ``point`` or meets ``bbox``/``geometry``.

        Searches the STAC API (unless the whole collection was fetched already), then decides
        membership and ranking as :meth:`Catalog.find`. Ties keep the order of the items'
        ids.

        Parameters
        ----------
        point, bbox, geometry
            The query, exactly one of them, as for :meth:`Catalog.find` (``polygon=`` is the
            old name of ``geometry=``).
        crs : optional
            CRS of the query, default lon/lat (EPSG:4326).
        allow_empty : bool, optional
            Return ``[]`` instead of raising :class:`~xr_itslive.EmptySelectionError` when no
            cube matches.
        """
        if self._listing is not None:
            return self._listing.find(point, bbox, geometry, crs=crs, allow_empty=allow_empty)
        query, description = _query_geometry(point, bbox, geometry, crs)
        query_lonlat = to_lonlat(query, crs)
        items = self._search(_stac_search_area(query_lonlat))
        found: list[CubeEntry] = []
        if items:
            items.sort(key=lambda item: item["id"])
            candidates = Catalog.from_stac_items(items, self.source)
            found = candidates.find(point, bbox, geometry, crs=crs, allow_empty=True)
        if not found and not allow_empty:
            raise EmptySelectionError(self._nothing_found(query_lonlat, description, len(items)))
        return found

    def _nothing_found(self, query_lonlat: Any, description: str, n_items: int) -> str:
        near = (
            f"{n_items} items have a footprint near it, and none has a projected box that "
            "contains it"
            if n_items
            else "no item has a footprint near it"
        )
        swapped = ""
        lon, lat = query_lonlat.centroid.x, query_lonlat.centroid.y
        if abs(lon) <= 90 and self.find(point=(lat, lon), allow_empty=True):
            swapped = (
                f" Note that (lon={lat:g}, lat={lon:g}) does fall in a cube: did you swap "
                "lon and lat? Points are (lon, lat)."
            )
        return (
            f"no ITS_LIVE cube covers {description}: searched {self.source}, where {near}."
            f"{swapped} ITS_LIVE cubes cover glacierized regions only; check the coordinates "
            "(lon/lat in degrees unless crs= says otherwise), or pass catalog= another "
            "catalog."
        )


def _stac_search_area(query_lonlat: Any) -> dict[str, Any]:
    """The GeoJSON area sent to a STAC API: the query's hull, widened, inside lon/lat bounds.

    The hull keeps the request small (an outline can have thousands of vertices); parts past
    the antimeridian are wrapped to the other side.
    """
    shapely = require_shapely()
    from shapely.affinity import translate
    from shapely.geometry import mapping

    area = shapely.convex_hull(query_lonlat).buffer(_STAC_MARGIN, quad_segs=2)
    world = shapely.box(-180.0, -90.0, 180.0, 90.0)
    parts = [
        shapely.intersection(translate(area, xoff=shift), world) for shift in (0.0, -360.0, 360.0)
    ]
    wrapped = shapely.union_all([part for part in parts if not part.is_empty])
    return mapping(wrapped)


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


def _query_geometry(point: Any, bbox: Any, geometry: Any, crs: Any) -> tuple[Any, str]:
    shapely = require_shapely()
    given = [name for name, v in (("point", point), ("bbox", bbox), ("geometry", geometry))
             if v is not None]  # fmt: skip
    if len(given) != 1:
        raise InvalidParameterError(
            f"pass exactly one of point=, bbox=, polygon= (now spelled geometry=); got "
            f"{given or 'none'}. Example: find_cubes(point=(95.97, 29.91))."
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
    shape = _as_geometry(geometry)
    return shape, f"the geometry with bounds {tuple(round(b, 4) for b in shape.bounds)}"


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
        f"geometry must be a shapely geometry, a GeoSeries/GeoDataFrame or a GeoJSON-like "
        f"object, got {type(obj).__name__}"
    )


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float, origin: str) -> Catalog:
    try:
        geojson = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        cached = "" if origin == path else f" (the cached copy of {origin!r})"
        raise DataAccessError(
            f"could not read the catalog {path!r}{cached}: {type(err).__name__}: {err}. Expected "
            f"the ITS_LIVE GeoJSON (catalog_v02.json); pass catalog= a valid copy or delete a "
            f"broken cached copy."
        ) from err
    catalog = Catalog.from_geojson(geojson, origin)
    catalog.retrieved = dt.datetime.fromtimestamp(mtime, tz=dt.UTC)
    return catalog


#: What to do when a GeoJSON catalog URL cannot be downloaded.
_DOWNLOAD_FIX = (
    f"Check your network, or pass catalog= a local copy of catalog_v02.json (or set "
    f"{CATALOG_ENV} to its path)."
)


def load_catalog(
    source: str | os.PathLike | Catalog | Mapping[str, Any] | None = None,
    *,
    cache: bool = True,
    timeout: float = DOWNLOAD_TIMEOUT,
    attempts: int = DOWNLOAD_ATTEMPTS,
) -> Catalog:
    """The ITS_LIVE datacube catalog: today's STAC API, or a GeoJSON catalog.

    Parameters
    ----------
    source : str, path-like, Catalog, mapping or None, optional
        Where the catalog comes from:

        - ``None`` (default): the ``XR_ITSLIVE_CATALOG`` environment variable if set (any
          of the forms below), else the public ITS_LIVE STAC API
          (:data:`~xr_itslive.io.stac.DEFAULT_STAC_URL`, collection ``itslive-cubes``);
        - a STAC API root URL (``http(s)://`` not ending in ``.json``/``.geojson``): a
          :class:`~xr_itslive.io.catalog.StacCatalog` searching it on each query;
        - a GeoJSON catalog (``catalog_v02.json``): a local path, or an ``http(s)://`` URL
          ending in ``.json``/``.geojson`` or an ``s3://`` URL, downloaded once and cached;
        - a parsed GeoJSON mapping, or a :class:`~xr_itslive.io.catalog.Catalog` (returned
          as is).
    cache : bool, optional
        Keep a downloaded GeoJSON catalog in ``$XR_ITSLIVE_CACHE_DIR`` (default
        ``~/.cache/xr_itslive``, see :func:`~xr_itslive.io.download.cache_dir`), named after
        the URL's file name behind a short hash of the URL
        (:func:`~xr_itslive.io.download.cache_path`), and reuse it. The cached copy is
        reused **whatever its age** (ITS_LIVE updates its cubes often): the catalog's
        :attr:`~xr_itslive.io.catalog.Catalog.age` and ``repr`` say when it was downloaded;
        delete the file or pass ``cache=False`` for a fresh copy.
    timeout, attempts : optional
        Bounds on every request (download or STAC search): seconds to wait for an answer per
        try (connecting takes at most :data:`~xr_itslive.io.download.CONNECT_TIMEOUT`), and
        number of tries.

    Returns
    -------
    Catalog
        A :class:`~xr_itslive.io.catalog.StacCatalog` for a STAC API.

    Raises
    ------
    DataAccessError
        The STAC API cannot be reached (the message names the offline fallback: a GeoJSON
        catalog file) or answers something that is not STAC; the GeoJSON cannot be
        downloaded or read.

    Examples
    --------
    >>> catalog = load_catalog("catalog_v02.json")  # doctest: +SKIP
    >>> len(catalog)  # doctest: +SKIP
    3086
    >>> load_catalog()  # doctest: +SKIP
    StacCatalog('https://stac.itslive.cloud', collection='itslive-cubes')
    """
    if isinstance(source, Catalog):
        return source
    if isinstance(source, Mapping):
        return Catalog.from_geojson(source)
    if source is None:
        source = os.environ.get(CATALOG_ENV) or DEFAULT_STAC_URL
    source = str(source)
    if is_stac_root(source):
        return StacCatalog(source, timeout=timeout, attempts=attempts)
    if source.startswith(("http://", "https://", "s3://")):
        what = "the ITS_LIVE catalog"
        if not cache:
            payload = download(source, timeout, attempts, what=what, fix=_DOWNLOAD_FIX)
            try:
                geojson = json.loads(payload)
            except ValueError as err:
                raise DataAccessError(
                    f"the catalog at {source!r} is not JSON ({err}; it starts with "
                    f"{payload[:80]!r}). Expected the ITS_LIVE GeoJSON (catalog_v02.json) or a "
                    f"STAC API root such as {DEFAULT_STAC_URL}."
                ) from err
            catalog = Catalog.from_geojson(geojson, source)
            catalog.retrieved = dt.datetime.now(dt.UTC)
            return catalog
        path = cached_download(
            source, timeout=timeout, attempts=attempts, what=what, fix=_DOWNLOAD_FIX
        )
        return _load_cached(str(path), path.stat().st_mtime, source)
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataAccessError(
            f"no catalog at {source!r}: the file does not exist. Pass catalog= the path of a "
            f"copy of catalog_v02.json, a GeoJSON URL, a STAC API root, or None for "
            f"{DEFAULT_STAC_URL}."
        )
    resolved = str(path.resolve())
    return _load_cached(resolved, path.stat().st_mtime, resolved)


@renamed_parameters(polygon="geometry")
def find_cubes(
    point: tuple[float, float] | None = None,
    bbox: tuple[float, float, float, float] | None = None,
    geometry: Any = None,
    catalog: str | os.PathLike | Catalog | Mapping[str, Any] | None = None,
    *,
    crs: Any = LONLAT,
    allow_empty: bool = False,
) -> list[CubeEntry]:
    """The ITS_LIVE datacubes covering a point, a bbox or a geometry.

    By default, searches today's public ITS_LIVE STAC API (https://stac.itslive.cloud,
    collection ``itslive-cubes``); ``catalog=`` (or ``XR_ITSLIVE_CATALOG``) names another
    STAC API or a GeoJSON catalog file, which give the same answer. A cube covers the query
    when its projected box (in the cube's own CRS) holds the point or meets the shape.

    Parameters
    ----------
    point : tuple of float, optional
        ``(lon, lat)`` (or ``(x, y)`` in ``crs``).
    bbox : tuple of float, optional
        ``(west, south, east, north)`` (or ``(xmin, ymin, xmax, ymax)`` in ``crs``).
    geometry : optional
        A shapely geometry (in ``crs``), a GeoJSON-like object, or a GeoSeries/GeoDataFrame
        (its own CRS is used). ``polygon=``, its old name, works for one more release with a
        DeprecationWarning.
    catalog : str, path-like, Catalog, mapping or None, optional
        Where the catalog comes from: a STAC API root URL, a GeoJSON catalog path or URL, a
        parsed GeoJSON, or a :class:`~xr_itslive.io.catalog.Catalog`; default
        ``XR_ITSLIVE_CATALOG``, else the public STAC API. See
        :func:`~xr_itslive.load_catalog`.
    crs : optional
        CRS of ``point``/``bbox``/``geometry`` (default lon/lat, EPSG:4326).
    allow_empty : bool, optional
        Return ``[]`` instead of raising when no cube matches.

    Returns
    -------
    list of CubeEntry
        Best first: the cube covering most of the query, then one in the query's own UTM
        zone, then the one the query's centre lies deepest in.

    Raises
    ------
    EmptySelectionError
        No cube covers the query (unless ``allow_empty``); the message says where it looked
        (the STAC API and collection, or the GeoJSON catalog).
    DataAccessError
        The STAC API cannot be reached in bounded time (the message names the offline
        fallback: ``catalog=`` a GeoJSON catalog file such as catalog_v02.json, or
        ``XR_ITSLIVE_CATALOG``), or answers something that is not STAC; an item has no zarr
        asset or no projected box.

    Examples
    --------
    >>> entries = find_cubes(point=(95.97, 29.915))  # doctest: +SKIP
    >>> entries[0].zarr_url  # doctest: +SKIP
    'https://its-live-data.s3.amazonaws.com/datacubes/v2-updated-october2024/N30E090/ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr'
    >>> find_cubes(point=(95.97, 29.915), catalog="catalog_v02.json")[0].name  # doctest: +SKIP
    'ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr'
    """
    if geometry is not None and getattr(geometry, "crs", None) is not None:
        crs = geometry.crs
    _query_geometry(point, bbox, geometry, crs)  # a bad query fails before any network call
    return load_catalog(catalog).find(point, bbox, geometry, crs=crs, allow_empty=allow_empty)
