"""An interactive map: ITS_LIVE cube footprints and RGI outlines, click to select.

Two layers of code:

- :class:`~xr_itslive.widget.MapState` holds everything the map knows (outlines, catalog
  entries, selections) and the click handlers' logic. It is plain Python (shapely, geopandas,
  the catalog) and is tested without a browser by calling its handlers with the GeoJSON features
  the map shows.
- :class:`~xr_itslive.widget.GlacierMap` draws a :class:`~xr_itslive.widget.MapState` with
  ipyleaflet and ipywidgets (the ``widget`` extra, imported only when a map is built) and
  routes the layers' clicks to the state.

Selections read as the library's objects: :attr:`GlacierMap.glacier` is a
:class:`xr_itslive.Glacier` (with the cube that covers it), :attr:`GlacierMap.cube` a
:class:`xr_itslive.CubeEntry` of the catalog.

Examples
--------
>>> from xr_itslive.widget import GlacierMap
>>> m = GlacierMap(catalog="catalog_v02.json", outlines="rgi7_region.shp")  # doctest: +SKIP
>>> m  # doctest: +SKIP
>>> m.glacier.open(["vx", "vy"])  # after a click on a glacier  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .crs import LONLAT
from .errors import (
    EmptySelectionError,
    InvalidParameterError,
    ITSLiveError,
    OptionalDependencyError,
)
from .io.catalog import Catalog, CubeEntry, load_catalog
from .io.outlines import read_outlines
from .workflows.glacier import Glacier

#: Feature properties that tie a drawn outline back to its row in :attr:`MapState.outlines`.
OUTLINE_SOURCE = "outline_source"
OUTLINE_ROW = "outline_row"
#: Feature property that ties a drawn footprint back to its entry in the catalog.
CUBE_INDEX = "cube_index"

#: Degrees added around the outlines when choosing which cube footprints to draw.
DEFAULT_MARGIN_DEG = 1.0

#: Leaflet path styles (``className`` lets tests and users find the paths in the page).
CUBE_STYLE = {
    "color": "#3f51b5",
    "weight": 1,
    "fillColor": "#3f51b5",
    "fillOpacity": 0.04,
    "className": "xr-itslive-cube",
}
GLACIER_STYLE = {
    "color": "#00838f",
    "weight": 2,
    "fillColor": "#4dd0e1",
    "fillOpacity": 0.5,
    "className": "xr-itslive-glacier",
}
SELECTED_GLACIER_STYLE = {
    "color": "#e65100",
    "weight": 3,
    "fillColor": "#ff9800",
    "fillOpacity": 0.7,
    "className": "xr-itslive-selected-glacier",
}
SELECTED_CUBE_STYLE = {
    "color": "#d81b60",
    "weight": 3,
    "fill": False,
    "dashArray": "6 4",
    "className": "xr-itslive-selected-cube",
}

#: Colour of the offline ("blank") basemap's single tile.
BLANK_RGB = (232, 238, 242)
BASEMAP_CHOICES = ("osm", "blank")

_HINT = "Click a glacier outline or a cube footprint to select it."


def solid_png(rgb: Sequence[int] = BLANK_RGB) -> bytes:
    """A 1×1 PNG of one colour (Leaflet stretches it over each 256×256 tile).

    Parameters
    ----------
    rgb
        The colour as three integers in 0..255.

    Returns
    -------
    bytes
        The PNG file.
    """
    red, green, blue = (int(c) for c in rgb)
    if not all(0 <= c <= 255 for c in (red, green, blue)):
        raise InvalidParameterError(f"rgb must be three integers in 0..255, got {tuple(rgb)!r}")

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1×1, 8-bit RGB
    scanline = b"\x00" + bytes((red, green, blue))  # filter type 0, one pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(scanline))
        + chunk(b"IEND", b"")
    )


def blank_tile_url(rgb: Sequence[int] = BLANK_RGB) -> str:
    """A ``data:`` URL for an offline basemap: every tile the same plain colour.

    Parameters
    ----------
    rgb
        The colour as three integers in 0..255 (default :data:`BLANK_RGB`).
    """
    return "data:image/png;base64," + base64.b64encode(solid_png(rgb)).decode("ascii")


def view_for_bounds(
    bounds: tuple[tuple[float, float], tuple[float, float]],
    width_px: int = 800,
    height_px: int = 450,
    padding: float = 0.15,
    max_zoom: int = 16,
) -> tuple[tuple[float, float], int]:
    """Centre and zoom (web Mercator) that show ``bounds`` in a map of the given size.

    Computed in Python so that the view is known before any browser draws the map.

    Parameters
    ----------
    bounds
        ``((south, west), (north, east))`` in degrees.
    width_px, height_px
        The map's expected size on screen.
    padding
        Fraction of the map left free on each side.
    max_zoom
        Upper bound for tiny extents.

    Returns
    -------
    center, zoom
        ``(lat, lon)`` and an integer zoom level.
    """
    (south, west), (north, east) = bounds
    if not (south <= north and west <= east):
        raise InvalidParameterError(
            f"bounds must be ((south, west), (north, east)) with south <= north and "
            f"west <= east, got {bounds!r}"
        )

    def mercator_y(lat: float) -> float:
        lat = max(min(lat, 85.0), -85.0)
        return math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))

    center_y = (mercator_y(south) + mercator_y(north)) / 2
    center = (math.degrees(2 * math.atan(math.exp(center_y)) - math.pi / 2), (west + east) / 2)
    usable = max(1.0 - 2 * padding, 0.1)
    zoom = max_zoom
    # World width at zoom z is 256 * 2**z px for 360° (or 2π in Mercator y).
    spans = (
        ((east - west) / 360.0, width_px),
        ((mercator_y(north) - mercator_y(south)) / (2 * math.pi), height_px),
    )
    for fraction, size in spans:
        if fraction > 0:
            zoom = min(zoom, int(math.floor(math.log2(size * usable / (256.0 * fraction)))))
    return center, max(zoom, 0)


def _as_sources(outlines: Any) -> list[Any]:
    if outlines is None:
        return []
    if isinstance(outlines, str | os.PathLike) or hasattr(outlines, "geometry"):
        return [outlines]
    if isinstance(outlines, Iterable):
        return list(outlines)
    return [outlines]


def _normalized_lon(lon: float) -> float:
    """Longitude in [-180, 180) (Leaflet reports clicks on wrapped copies of the world)."""
    lon = float(lon)
    if -180.0 <= lon < 180.0:  # as given: the modulo below would round it
        return lon
    return (lon + 180.0) % 360.0 - 180.0


def click_lat_lon(coordinates: Any) -> tuple[float, float] | None:
    """``(lat, lon)`` of an ipyleaflet click, longitude in [-180, 180).

    Parameters
    ----------
    coordinates
        ``(lat, lon)``, as ipyleaflet's ``on_interaction`` sends it, or None (no position).

    Returns
    -------
    tuple of float or None
        ``(lat, lon)``; None when ``coordinates`` is None.
    """
    if coordinates is None:
        return None
    try:
        lat, lon = (float(v) for v in coordinates)
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(
            f"a map click gives coordinates=(lat, lon), got coordinates={coordinates!r}"
        ) from err
    return lat, _normalized_lon(lon)


def _properties(feature: Any, properties: Any, keys: Sequence[str], layer: str) -> dict:
    props = dict(properties or {})
    if feature is not None:
        props = {**dict(feature.get("properties") or {}), **props}
    missing = [k for k in keys if props.get(k) is None]
    if missing:
        shown = sorted(k for k in props if k != "style")
        raise InvalidParameterError(
            f"the clicked feature lacks {missing}: expected a feature of the map's {layer} "
            f"layer (properties {list(keys)}), got properties {shown}. Pass the feature the "
            "map's click event gives (feature=...), or select by id with select_glacier()."
        )
    return props


class MapState:
    """What a glacier map shows and what is selected on it, without any widget.

    Parameters
    ----------
    catalog
        The ITS_LIVE catalog: a path, URL, :class:`xr_itslive.io.catalog.Catalog`, or None for
        the default (see :func:`xr_itslive.load_catalog`). ``False``: no cubes.
    outlines
        RGI outlines: a file (shapefile, GeoJSON, GeoPackage, GeoParquet; RGI6 or RGI7
        attributes), a GeoDataFrame, or a list of them.
    cubes
        Which cube footprints to draw: ``"near"`` (those within ``margin`` degrees of the
        outlines; all of them when there are no outlines), ``"all"``, or a
        ``(west, south, east, north)`` box.
    margin
        Degrees around the outlines for ``cubes="near"``.
    multiple
        Keep several glaciers (and cubes) selected; otherwise a click replaces the selection.

    Attributes
    ----------
    glaciers : list of Glacier
        Selected glaciers, in click order.
    cubes : list of CubeEntry
        Selected cubes, in click order.
    message : str
        What the last click did (shown under the map).
    """

    def __init__(
        self,
        catalog: Any = None,
        outlines: Any = None,
        *,
        cubes: str | Sequence[float] = "near",
        margin: float = DEFAULT_MARGIN_DEG,
        multiple: bool = False,
    ) -> None:
        self.catalog: Catalog | None = None if catalog is False else load_catalog(catalog)
        self.multiple = bool(multiple)
        self.margin = float(margin)
        self.outlines: list[Any] = []
        self._outlines_lonlat: list[Any] = []
        self.glaciers: list[Glacier] = []
        self.cubes: list[CubeEntry] = []
        self.message = _HINT
        self._callbacks: list[Callable[[MapState], None]] = []
        self._glacier_keys: list[tuple[int, int]] = []
        for source in _as_sources(outlines):
            self._read(source)
        self._cube_choice = cubes
        self.cube_indices: list[int] = self._choose_cubes(cubes)

    # --- content ---

    def _read(self, source: Any) -> None:
        gdf = read_outlines(source).reset_index(drop=True)
        if gdf.empty:
            raise EmptySelectionError(
                f"the outline source {source!r} holds no outlines; pass an RGI file with at "
                "least one glacier"
            )
        self.outlines.append(gdf)
        self._outlines_lonlat.append(gdf.geometry.to_crs(LONLAT))

    def add_outlines(self, source: Any) -> None:
        """Add an outline file or GeoDataFrame (cube footprints follow for ``cubes="near"``).

        Parameters
        ----------
        source : str, path-like or geopandas.GeoDataFrame
            RGI outlines: a shapefile, GeoJSON, GeoPackage or GeoParquet file (RGI6 or RGI7
            attributes), or a GeoDataFrame.
        """
        self._read(source)
        if self._cube_choice == "near":
            self.cube_indices = self._choose_cubes("near")
        self._changed()

    def _choose_cubes(self, choice: str | Sequence[float]) -> list[int]:
        if self.catalog is None:
            return []
        if isinstance(choice, str):
            if choice not in ("near", "all"):
                raise InvalidParameterError(
                    f"cubes={choice!r} is not a choice: expected 'near', 'all' or a "
                    "(west, south, east, north) box in degrees"
                )
            if choice == "all" or not self.outlines:
                return list(range(len(self.catalog)))
            boxes = []
            for lonlat in self._outlines_lonlat:
                west, south, east, north = lonlat.total_bounds
                m = self.margin
                boxes.append(
                    (
                        max(west - m, -180.0),
                        max(south - m, -90.0),
                        min(east + m, 180.0),
                        min(north + m, 90.0),
                    )
                )
        else:
            try:
                box = tuple(float(v) for v in choice)
            except (TypeError, ValueError) as err:
                raise InvalidParameterError(
                    f"cubes must be 'near', 'all' or a (west, south, east, north) box, got "
                    f"{choice!r}"
                ) from err
            if len(box) != 4:
                raise InvalidParameterError(
                    f"cubes must be a (west, south, east, north) box of 4 numbers, got {choice!r}"
                )
            boxes = [box]
        index = {id(entry): i for i, entry in enumerate(self.catalog.entries)}
        chosen: set[int] = set()
        for box in boxes:
            for entry in self.catalog.find(bbox=box, allow_empty=True):
                chosen.add(index[id(entry)])
        return sorted(chosen)

    def glacier_collection(self) -> dict[str, Any]:
        """The outlines as a lon/lat GeoJSON FeatureCollection (what the map draws)."""
        import shapely

        features = []
        for source, (gdf, lonlat) in enumerate(
            zip(self.outlines, self._outlines_lonlat, strict=True)
        ):
            for row, geometry in enumerate(lonlat):
                if geometry is None or geometry.is_empty:
                    continue
                features.append(
                    {
                        "type": "Feature",
                        "geometry": shapely.geometry.mapping(geometry),
                        "properties": {
                            "rgi_id": gdf["rgi_id"].iloc[row],
                            "name": gdf["glacier_name"].iloc[row],
                            OUTLINE_SOURCE: source,
                            OUTLINE_ROW: row,
                        },
                    }
                )
        return {"type": "FeatureCollection", "features": features}

    def cube_collection(self) -> dict[str, Any]:
        """The drawn cubes' lon/lat footprints as a GeoJSON FeatureCollection."""
        features = [self._cube_feature(i) for i in self.cube_indices]
        return {"type": "FeatureCollection", "features": features}

    def _cube_feature(self, index: int) -> dict[str, Any]:
        import shapely

        entry = self.catalog.entries[index]
        return {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(entry.footprint),
            "properties": {
                "name": entry.name,
                "epsg": entry.epsg,
                "zarr_url": entry.zarr_url,
                CUBE_INDEX: index,
            },
        }

    def selected_glacier_collection(self) -> dict[str, Any]:
        """The selected glaciers' outlines (lon/lat GeoJSON), for the highlight layer."""
        import shapely

        features = []
        for (source, row), glacier in zip(self._glacier_keys, self.glaciers, strict=True):
            features.append(
                {
                    "type": "Feature",
                    "geometry": shapely.geometry.mapping(self._outlines_lonlat[source].iloc[row]),
                    "properties": {
                        "rgi_id": glacier.rgi_id,
                        "name": glacier.name,
                        OUTLINE_SOURCE: source,
                        OUTLINE_ROW: row,
                    },
                }
            )
        return {"type": "FeatureCollection", "features": features}

    def selected_cube_collection(self) -> dict[str, Any]:
        """The selected cubes' footprints (lon/lat GeoJSON), for the highlight layer."""
        features = [self._cube_feature(self._cube_index(entry)) for entry in self.cubes]
        return {"type": "FeatureCollection", "features": features}

    def _cube_index(self, entry: CubeEntry) -> int:
        for i, candidate in enumerate(self.catalog.entries):
            if candidate is entry:
                return i
        raise InvalidParameterError(f"{entry!r} is not an entry of {self.catalog!r}")

    def bounds(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``((south, west), (north, east))`` of the outlines, else of the drawn cubes."""
        import numpy as np

        if self.outlines:
            boxes = np.array([lonlat.total_bounds for lonlat in self._outlines_lonlat])
        elif self.cube_indices:
            boxes = np.array([self.catalog.entries[i].footprint.bounds for i in self.cube_indices])
        else:
            return ((-60.0, -180.0), (80.0, 180.0))
        west, south = boxes[:, 0].min(), boxes[:, 1].min()
        east, north = boxes[:, 2].max(), boxes[:, 3].max()
        return ((float(south), float(west)), (float(north), float(east)))

    # --- selections ---

    @property
    def glacier(self) -> Glacier | None:
        """The glacier selected last, or None."""
        return self.glaciers[-1] if self.glaciers else None

    @property
    def cube(self) -> CubeEntry | None:
        """The cube selected last, or None."""
        return self.cubes[-1] if self.cubes else None

    def observe(self, callback: Callable[[MapState], None]) -> None:
        """Call ``callback(state)`` after every change of the selection.

        Parameters
        ----------
        callback : callable
            Called with this :class:`~xr_itslive.widget.MapState`; its return value is ignored.
        """
        self._callbacks.append(callback)

    def _changed(self) -> None:
        for callback in list(self._callbacks):
            callback(self)

    def click_glacier(
        self, feature: Mapping[str, Any] | None = None, properties: Any = None, **event: Any
    ) -> Glacier | None:
        """Handle a click on an outline: select that glacier, or deselect it if selected.

        Takes the keywords of an ipyleaflet ``GeoJSON.on_click`` callback (``feature``,
        ``properties``, ``coordinates``, ...).

        Parameters
        ----------
        feature : mapping, optional
            The clicked GeoJSON feature of :meth:`glacier_collection`.
        properties : mapping, optional
            Its properties (they override the feature's); ``outline_source`` and
            ``outline_row`` must be in one or the other.
        **event
            The event's other keywords (``coordinates``, ``id``...), ignored.

        Returns
        -------
        Glacier or None
            The glacier now selected, or None when the click deselected it.
        """
        props = _properties(feature, properties, (OUTLINE_SOURCE, OUTLINE_ROW), "glacier outline")
        key = (int(props[OUTLINE_SOURCE]), int(props[OUTLINE_ROW]))
        if key in self._glacier_keys:
            return self._deselect_glacier(key)
        return self._select_glacier(key)

    def click_selected_glacier(
        self, feature: Mapping[str, Any] | None = None, properties: Any = None, **event: Any
    ) -> None:
        """Handle a click on a highlighted outline: deselect that glacier.

        Parameters
        ----------
        feature : mapping, optional
            The clicked GeoJSON feature of :meth:`selected_glacier_collection`.
        properties : mapping, optional
            Its properties (they override the feature's); ``outline_source`` and
            ``outline_row`` must be in one or the other.
        **event
            The event's other keywords, ignored.
        """
        props = _properties(feature, properties, (OUTLINE_SOURCE, OUTLINE_ROW), "selected glacier")
        key = (int(props[OUTLINE_SOURCE]), int(props[OUTLINE_ROW]))
        if key in self._glacier_keys:
            self._deselect_glacier(key)

    def select_glacier(self, rgi_id: str) -> Glacier:
        """Select a glacier of the map's outlines by its RGI id (as a click would).

        Parameters
        ----------
        rgi_id : str
            The RGI id, as in the outlines' ``rgi_id`` column (surrounding spaces ignored).

        Raises
        ------
        EmptySelectionError
            No outline of the map has this id.
        """
        wanted = str(rgi_id).strip()
        for source, gdf in enumerate(self.outlines):
            ids = [str(v) for v in gdf["rgi_id"]]
            if wanted in ids:
                return self._select_glacier((source, ids.index(wanted)))
        known = [str(v) for gdf in self.outlines for v in gdf["rgi_id"]]
        raise EmptySelectionError(
            f"RGI id {wanted!r} is not among the map's {len(known)} outlines "
            f"(e.g. {known[:3]}); add its file with add_outlines() or check the id"
        )

    def _select_glacier(self, key: tuple[int, int]) -> Glacier:
        source, row = key
        if not (0 <= source < len(self.outlines) and 0 <= row < len(self.outlines[source])):
            raise InvalidParameterError(
                f"no outline {OUTLINE_SOURCE}={source}, {OUTLINE_ROW}={row} on this map "
                f"({len(self.outlines)} outline sources); was the feature drawn by another map?"
            )
        outline = self.outlines[source].iloc[[row]]
        entry = None
        if self.catalog is not None:
            found = self.catalog.find(
                geometry=outline.geometry.iloc[0], crs=outline.crs, allow_empty=True
            )
            entry = found[0] if found else None
        glacier = Glacier.from_outline(
            outline,
            catalog=self.catalog,
            cube_url=entry.zarr_url if entry else None,
            find_cube=False,
        )
        if not self.multiple:
            self.glaciers, self._glacier_keys = [], []
            self.cubes = []
        self.glaciers.append(glacier)
        self._glacier_keys.append(key)
        if entry is not None and not any(c is entry for c in self.cubes):
            self.cubes.append(entry)
        self.message = self.summary()
        if entry is None and self.catalog is not None:
            self.message += " | no ITS_LIVE cube covers this glacier"
        self._changed()
        return glacier

    def _deselect_glacier(self, key: tuple[int, int]) -> None:
        position = self._glacier_keys.index(key)
        del self._glacier_keys[position]
        removed = self.glaciers.pop(position)
        # The glacier's cube goes too unless another selected glacier uses it.
        still_used = {g.cube_url for g in self.glaciers}
        if removed.cube_url not in still_used:
            self.cubes = [c for c in self.cubes if c.zarr_url != removed.cube_url]
        self.message = self.summary()
        self._changed()
        return None

    def click_cube(
        self,
        feature: Mapping[str, Any] | None = None,
        properties: Any = None,
        coordinates: Any = None,
        **event: Any,
    ) -> CubeEntry:
        """Handle a click on a cube footprint: select the cube there.

        The catalog's lon/lat footprints overlap, so when the click's ``coordinates`` are
        given the cube is the one whose projected box holds the point deepest (as
        :func:`xr_itslive.find_cubes` picks it); otherwise the clicked feature's cube.

        Parameters
        ----------
        feature : mapping, optional
            The clicked GeoJSON feature of :meth:`cube_collection`.
        properties : mapping, optional
            Its properties (they override the feature's); ``cube_index`` is read from them
            when ``coordinates`` find no cube.
        coordinates : optional
            ``(lat, lon)`` of the click, as ipyleaflet sends it.
        **event
            The event's other keywords, ignored.

        Returns
        -------
        CubeEntry
        """
        if self.catalog is None:
            raise InvalidParameterError(
                "this map has no catalog (catalog=False); build it with a catalog to select cubes"
            )
        entry = None
        point = click_lat_lon(coordinates)
        if point is not None:
            lat, lon = point
            found = self.catalog.find(point=(lon, lat), allow_empty=True)
            entry = found[0] if found else None
        if entry is None:
            props = _properties(feature, properties, (CUBE_INDEX,), "cube footprint")
            index = int(props[CUBE_INDEX])
            if not 0 <= index < len(self.catalog):
                raise InvalidParameterError(
                    f"{CUBE_INDEX}={index} is not an entry of {self.catalog!r} "
                    f"(0..{len(self.catalog) - 1}); was the feature drawn by another map?"
                )
            entry = self.catalog.entries[index]
        if not self.multiple:
            self.cubes = []
        if not any(c is entry for c in self.cubes):
            self.cubes.append(entry)
        self.message = self.summary()
        self._changed()
        return entry

    def clear(self) -> None:
        """Deselect everything."""
        self.glaciers, self._glacier_keys, self.cubes = [], [], []
        self.message = _HINT
        self._changed()

    def summary(self) -> str:
        """One line naming the selection (the text under the map)."""
        parts = []
        for glacier in self.glaciers:
            name = f" ({glacier.name})" if glacier.name else ""
            parts.append(f"Glacier {glacier.rgi_id}{name}, {glacier.area_km2:.2f} km²")
        for entry in self.cubes:
            parts.append(f"Cube {entry.name} ({entry.crs})")
        return " | ".join(parts) if parts else _HINT

    def __repr__(self) -> str:
        n_outlines = sum(len(g) for g in self.outlines)
        return (
            f"MapState({n_outlines} outlines, {len(self.cube_indices)} cube footprints, "
            f"glaciers={[g.rgi_id for g in self.glaciers]}, cubes={[c.name for c in self.cubes]})"
        )


def _ipyleaflet():
    try:
        import ipyleaflet
        import ipywidgets
    except ImportError as err:
        raise OptionalDependencyError(
            f"the glacier map needs ipyleaflet and ipywidgets ({err}); install them with "
            "pip install 'xr_itslive[widget]'"
        ) from err
    return ipyleaflet, ipywidgets


def make_basemap(basemap: Any = "osm") -> Any:
    """The base tile layer for a :class:`~xr_itslive.widget.GlacierMap`.

    Parameters
    ----------
    basemap
        ``"osm"`` (OpenStreetMap tiles, needs the network), ``"blank"`` (one plain colour,
        offline), an ``ipyleaflet.TileLayer``, an xyzservices provider, or a tile URL template
        (``https://.../{z}/{x}/{y}.png`` or a ``data:`` URL).

    Returns
    -------
    ipyleaflet.TileLayer or xyzservices.TileProvider
    """
    ipyleaflet, _ = _ipyleaflet()
    if isinstance(basemap, ipyleaflet.TileLayer):
        return basemap
    if isinstance(basemap, str):
        if basemap == "osm":
            return ipyleaflet.basemaps.OpenStreetMap.Mapnik
        if basemap == "blank":
            return ipyleaflet.TileLayer(
                url=blank_tile_url(), base=True, name="blank", attribution="", max_zoom=22
            )
        if basemap.startswith(("http://", "https://", "data:", "/")):
            return ipyleaflet.TileLayer(url=basemap, base=True, name="basemap", max_zoom=22)
    if isinstance(basemap, Mapping) and "url" in basemap:  # xyzservices TileProvider
        return basemap
    raise InvalidParameterError(
        f"basemap={basemap!r} is not a basemap: expected one of {list(BASEMAP_CHOICES)} "
        "('blank' works offline), an ipyleaflet.TileLayer, an xyzservices provider or a tile "
        "URL template"
    )


class GlacierMap:
    """An ipyleaflet map of ITS_LIVE cube footprints and RGI outlines; click to select.

    A click on an outline selects that glacier (and the cube covering most of it); a click
    on a highlighted outline deselects it; a click on a cube footprint selects the cube at
    that point. The label under the map names the selection.

    Parameters
    ----------
    catalog, outlines, cubes, margin, multiple
        See :class:`~xr_itslive.widget.MapState`.
    basemap
        ``"osm"`` (default), ``"blank"`` (offline), or see :func:`make_basemap`.
    center, zoom
        The initial view; default: fit the outlines (else the drawn cubes).
    height
        CSS height of the map.

    Attributes
    ----------
    state : MapState
        Outlines, catalog, selections and the click logic.
    map : ipyleaflet.Map
    label : ipywidgets.Label
        The selection, as text.
    widget : ipywidgets.VBox
        The map and the label (what a notebook shows).

    Examples
    --------
    >>> m = GlacierMap(catalog="catalog_v02.json", outlines="outline.geojson")  # doctest: +SKIP
    >>> m  # shows the map in a notebook  # doctest: +SKIP
    >>> m.glacier  # the Glacier clicked last  # doctest: +SKIP
    """

    def __init__(
        self,
        catalog: Any = None,
        outlines: Any = None,
        *,
        basemap: Any = "osm",
        cubes: str | Sequence[float] = "near",
        margin: float = DEFAULT_MARGIN_DEG,
        multiple: bool = False,
        center: tuple[float, float] | None = None,
        zoom: int | None = None,
        height: str = "500px",
    ) -> None:
        ipyleaflet, ipywidgets = _ipyleaflet()
        base = make_basemap(basemap)
        self.state = MapState(catalog, outlines, cubes=cubes, margin=margin, multiple=multiple)
        fit_center, fit_zoom = view_for_bounds(self.state.bounds())
        self.map = ipyleaflet.Map(
            basemap=base,
            center=center if center is not None else fit_center,
            zoom=zoom if zoom is not None else fit_zoom,
            scroll_wheel_zoom=True,
            layout=ipywidgets.Layout(height=height),
        )
        self.cube_layer = ipyleaflet.GeoJSON(
            data=self.state.cube_collection(),
            style=CUBE_STYLE,
            name="ITS_LIVE cubes",
            hover_style={"weight": 2, "fillOpacity": 0.12},
        )
        self.selected_cube_layer = ipyleaflet.GeoJSON(
            data=self.state.selected_cube_collection(),
            style=SELECTED_CUBE_STYLE,
            name="selected cube",
        )
        self.glacier_layer = ipyleaflet.GeoJSON(
            data=self.state.glacier_collection(),
            style=GLACIER_STYLE,
            name="RGI outlines",
            hover_style={"weight": 3, "fillOpacity": 0.7},
        )
        self.selected_glacier_layer = ipyleaflet.GeoJSON(
            data=self.state.selected_glacier_collection(),
            style=SELECTED_GLACIER_STYLE,
            name="selected glaciers",
        )
        for layer in (
            self.cube_layer,
            self.selected_cube_layer,
            self.glacier_layer,
            self.selected_glacier_layer,
        ):
            self.map.add(layer)
        self.map.add(ipyleaflet.LayersControl(position="topright"))
        self.cube_layer.on_click(self._on_cube_click)
        self.selected_cube_layer.on_click(self._on_cube_click)
        self.glacier_layer.on_click(self._on_glacier_click)
        self.selected_glacier_layer.on_click(self._on_selected_glacier_click)
        self.label = ipywidgets.Label(value=self.state.message)
        self.label.add_class("xr-itslive-selection")
        self.widget = ipywidgets.VBox([self.map, self.label])
        self.state.observe(lambda _: self._refresh())

    # --- click handlers (ipyleaflet calls them with the event's keywords) ---

    def _on_glacier_click(self, **event: Any) -> None:
        self._guarded(self.state.click_glacier, event)

    def _on_selected_glacier_click(self, **event: Any) -> None:
        self._guarded(self.state.click_selected_glacier, event)

    def _on_cube_click(self, **event: Any) -> None:
        self._guarded(self.state.click_cube, event)

    def _guarded(self, handler: Callable[..., Any], event: Mapping[str, Any]) -> None:
        # A click must never leave a traceback in the page: show the error under the map.
        try:
            handler(**event)
        except ITSLiveError as err:
            self.label.value = f"{type(err).__name__}: {err}"

    def _refresh(self) -> None:
        self.selected_glacier_layer.data = self.state.selected_glacier_collection()
        self.selected_cube_layer.data = self.state.selected_cube_collection()
        self.label.value = self.state.message

    # --- selections ---

    @property
    def glacier(self) -> Glacier | None:
        """The glacier selected last (a :class:`xr_itslive.Glacier`), or None."""
        return self.state.glacier

    @property
    def glaciers(self) -> list[Glacier]:
        """All selected glaciers, in click order."""
        return list(self.state.glaciers)

    @property
    def cube(self) -> CubeEntry | None:
        """The cube selected last (a :class:`xr_itslive.CubeEntry`), or None."""
        return self.state.cube

    @property
    def cubes(self) -> list[CubeEntry]:
        """All selected cubes, in click order."""
        return list(self.state.cubes)

    def select_glacier(self, rgi_id: str) -> Glacier:
        """Select a glacier by RGI id, as a click on its outline would.

        Parameters
        ----------
        rgi_id : str
            The RGI id of one of the map's outlines (see :meth:`MapState.select_glacier`).

        Returns
        -------
        Glacier
        """
        return self.state.select_glacier(rgi_id)

    def add_outlines(self, source: Any) -> None:
        """Draw more outlines (a file or GeoDataFrame).

        Parameters
        ----------
        source : str, path-like or geopandas.GeoDataFrame
            RGI outlines, as :meth:`MapState.add_outlines` takes them.
        """
        self.state.add_outlines(source)
        self.glacier_layer.data = self.state.glacier_collection()
        self.cube_layer.data = self.state.cube_collection()

    def clear(self) -> None:
        """Deselect everything."""
        self.state.clear()

    def on_select(self, callback: Callable[[GlacierMap], None]) -> None:
        """Call ``callback(map)`` after every change of the selection.

        Parameters
        ----------
        callback : callable
            Called with this :class:`~xr_itslive.widget.GlacierMap`; its return value is ignored.
        """
        self.state.observe(lambda _: callback(self))

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def __repr__(self) -> str:
        return f"GlacierMap({self.state!r})"
