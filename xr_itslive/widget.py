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
:class:`xr_itslive.Glacier` (with every cube its outline touches, ``cubes``, and the ones
that cover it, ``covering_cubes``), :attr:`GlacierMap.cube` a
:class:`xr_itslive.CubeEntry` of the catalog, :attr:`GlacierMap.point` a
:class:`xr_itslive.GlacierPoint` (its label, its series and the 3×3 pixels around it) and
:attr:`GlacierMap.centerline` a :class:`xr_itslive.GlacierCenterline` (OGGM's main flowline
of the selected glacier).

What a click does:

- **glacier mode** (the default): a click on a drawn outline (an RGI file's) selects that
  glacier, a second click deselects it; a click elsewhere asks the GLIMS web service for the
  glacier there when the map allows it (``glims=True``; the default when no outline file is
  given), draws its outline and selects it. A click on a cube footprint selects the cube.
- **point mode** (the map's ``glacier | point`` buttons, or ``mode="point"``), and a
  right-click in either mode: a :class:`~xr_itslive.GlacierPoint` at the clicked place, on the
  glacier whose outline holds it, with its cube's series when the cube is known (``data=``,
  ``open_cubes=True``).

Several selections (``multiple=True``) are kept in click order (:attr:`GlacierMap.glaciers`,
:attr:`GlacierMap.points`, :attr:`GlacierMap.cubes`, :attr:`GlacierMap.centerlines`) with
the clicked places (:attr:`GlacierMap.clicks`, ``(lon, lat)``); selecting the same glacier,
point (pixel) or cube again adds nothing.

Examples
--------
>>> from xr_itslive.widget import GlacierMap
>>> m = GlacierMap(catalog="catalog_v02.json", outlines="rgi7_region.shp")  # doctest: +SKIP
>>> m  # doctest: +SKIP
>>> m.glacier.open(["vx", "vy"])  # after a click on a glacier  # doctest: +SKIP
>>> m.mode = "point"  # then click: m.point.series, m.point.cube_around_point  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import dataclasses
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .crs import LONLAT, check_lonlat, reproject
from .errors import (
    EmptySelectionError,
    InvalidParameterError,
    ITSLiveError,
    OptionalDependencyError,
)
from .geo.subset import grid_spacing, to_cube_xy
from .io.catalog import Catalog, CubeEntry, load_catalog
from .io.open import open_cube
from .io.outlines import fetch_glims_outline, path_text, read_centerlines, read_outlines
from .workflows.glacier import Glacier, GlacierCenterline, GlacierPoint, point_label

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
#: Centerlines and points are not ``interactive``: a click on them reaches the outline or the
#: map beneath.
CENTERLINE_STYLE = {
    "color": "#6a1b9a",
    "weight": 3,
    "interactive": False,
    "className": "xr-itslive-centerline",
}
#: Circle markers of the selected points (``className`` as for the paths).
POINT_STYLE = {
    "radius": 6,
    "color": "#212121",
    "weight": 2,
    "fillColor": "#ffeb3b",
    "fillOpacity": 0.9,
    "interactive": False,
    "className": "xr-itslive-point",
}

#: What a left click on the map selects: glaciers (and cubes), or points.
MODES = ("glacier", "point")
#: Feature property that tells a GLIMS outline (fetched on a click) from a file's.
OUTLINE_ORIGIN = "origin"

#: Colour of the offline ("blank") basemap's single tile.
BLANK_RGB = (232, 238, 242)
BASEMAP_CHOICES = ("osm", "blank")

_HINT = "Click a glacier outline or a cube footprint to select it."
_POINT_HINT = "Click the map to pick a point (its series and the 3×3 pixels around it)."


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


def _lon_lat(coordinates: Any) -> tuple[float, float] | None:
    """``(lon, lat)`` of an ipyleaflet click's ``(lat, lon)``, or None."""
    point = click_lat_lon(coordinates)
    return None if point is None else (point[1], point[0])


def _as_datasets(data: Any) -> list[Any]:
    import xarray as xr

    items = [data] if isinstance(data, xr.Dataset) else list(data)
    for item in items:
        if not isinstance(item, xr.Dataset):
            raise InvalidParameterError(
                f"data= takes opened cubes (xarray.Dataset, e.g. from xr_itslive.open_cube) or a "
                f"list of them, got {type(item).__name__}"
            )
    return items


def _covers(ds: Any, lon: float, lat: float) -> bool:
    """Whether ``(lon, lat)`` falls on a pixel of the cube ``ds`` (False without a CRS)."""
    try:
        x, y = to_cube_xy(ds, lon, lat)
    except InvalidParameterError:
        return False
    inside = True
    for coord, value in (("x", x), ("y", y)):
        values = ds[coord].values
        half = grid_spacing(values) / 2 if len(values) > 1 else 0.0
        inside &= bool(values.min() - half <= value <= values.max() + half)
    return inside


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
        Keep several glaciers, points (and cubes) selected; otherwise a click replaces the
        selection of its kind.
    glims
        Ask the GLIMS web service for the glacier at a map click outside the drawn outlines
        (:meth:`click_map`); default: only when no ``outlines`` are given. Needs the network,
        or a stand-in at ``glims_url``.
    glims_url
        The GLIMS WFS endpoint (default: ``$XR_ITSLIVE_GLIMS_URL``, else
        :data:`xr_itslive.io.outlines.GLIMS_WFS_URL`).
    centerlines
        OGGM centerline files (e.g. ``centerlines.shp``) or GeoDataFrames: each selected
        glacier gets its main centerline from them (:attr:`centerlines`).
    data
        Cubes already opened (a Dataset or a list of them, e.g. from
        :func:`xr_itslive.open_cube`): a point on one of them gets its series and window from
        it (lazily).
    open_cubes
        For a point on none of ``data``, open its catalog cube (lazily, once per cube) to give
        the point its series; default False: the point records its cube's URL and
        :meth:`xr_itslive.GlacierPoint.load` reads it later.
    mode
        What a left click on the map selects (:meth:`click_map`): ``"glacier"`` (default) or
        ``"point"``.

    Attributes
    ----------
    glaciers : list of Glacier
        Selected glaciers, in click order.
    cubes : list of CubeEntry
        Selected cubes, in click order.
    points : list of GlacierPoint
        Selected points, in click order.
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
        glims: bool | None = None,
        glims_url: str | None = None,
        centerlines: Any = None,
        data: Any = None,
        open_cubes: bool = False,
        mode: str = "glacier",
    ) -> None:
        self.catalog: Catalog | None = None if catalog is False else load_catalog(catalog)
        self.multiple = bool(multiple)
        self.margin = float(margin)
        self.outlines: list[Any] = []
        self._outlines_lonlat: list[Any] = []
        self._glims_sources: dict[str, int] = {}
        self.glaciers: list[Glacier] = []
        self.cubes: list[CubeEntry] = []
        self.points: list[GlacierPoint] = []
        self._mode = "glacier"
        self.mode = mode  # checks it and sets the hint
        self._callbacks: list[Callable[[MapState], None]] = []
        self._glacier_keys: list[tuple[int, int]] = []
        self._point_keys: list[tuple[Any, ...]] = []
        self._centerline_by_key: dict[tuple[int, int], GlacierCenterline | None] = {}
        self._click_log: list[tuple[str, Any, tuple[float, float]]] = []
        self._n_points = 0
        for source in _as_sources(outlines):
            self._read(source)
        self.glims = (not self.outlines) if glims is None else bool(glims)
        self.glims_url = glims_url
        self.centerline_sources = [(src, read_centerlines(src)) for src in _as_sources(centerlines)]
        self.datasets: list[Any] = [] if data is None else _as_datasets(data)
        self.open_cubes = bool(open_cubes)
        self._opened: dict[str, Any] = {}
        self._cube_choice = cubes
        self.cube_indices: list[int] = self._choose_cubes(cubes)

    # --- content ---

    @property
    def mode(self) -> str:
        """What a left click on the map selects: ``"glacier"`` or ``"point"``."""
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise InvalidParameterError(
                f"mode={value!r} is not a mode: expected one of {list(MODES)} ('glacier': a "
                "click selects a glacier or a cube; 'point': a click picks a point)"
            )
        self._mode = value
        if not (self.glaciers or self.cubes or self.points):
            self.message = self._hint()

    def _hint(self) -> str:
        return _POINT_HINT if self._mode == "point" else _HINT

    def _read(self, source: Any) -> None:
        gdf = read_outlines(source).reset_index(drop=True)
        if gdf.empty:
            raise EmptySelectionError(
                f"the outline source {source!r} holds no outlines; pass an RGI file with at "
                "least one glacier"
            )
        self._add_outline_source(gdf)

    def _add_outline_source(self, gdf: Any) -> int:
        self.outlines.append(gdf)
        self._outlines_lonlat.append(gdf.geometry.to_crs(LONLAT))
        return len(self.outlines) - 1

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

    def _outline_feature(self, source: int, row: int, geometry: Any) -> dict[str, Any]:
        import shapely

        gdf = self.outlines[source]
        return {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(geometry),
            "properties": {
                "rgi_id": gdf["rgi_id"].iloc[row],
                "glims_id": gdf["glims_id"].iloc[row],
                "name": gdf["glacier_name"].iloc[row],
                OUTLINE_ORIGIN: "GLIMS" if source in self._glims_sources.values() else "file",
                OUTLINE_SOURCE: source,
                OUTLINE_ROW: row,
            },
        }

    def glacier_collection(self) -> dict[str, Any]:
        """The outlines as a lon/lat GeoJSON FeatureCollection (what the map draws): the
        files' and those fetched from GLIMS."""
        features = []
        for source, lonlat in enumerate(self._outlines_lonlat):
            for row, geometry in enumerate(lonlat):
                if geometry is None or geometry.is_empty:
                    continue
                features.append(self._outline_feature(source, row, geometry))
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
        features = [
            self._outline_feature(source, row, self._outlines_lonlat[source].iloc[row])
            for source, row in self._glacier_keys
        ]
        return {"type": "FeatureCollection", "features": features}

    def selected_cube_collection(self) -> dict[str, Any]:
        """The selected cubes' footprints (lon/lat GeoJSON), for the highlight layer."""
        features = [self._cube_feature(self._cube_index(entry)) for entry in self.cubes]
        return {"type": "FeatureCollection", "features": features}

    def selected_point_collection(self) -> dict[str, Any]:
        """The selected points (lon/lat GeoJSON Points with their labels), for the map."""
        features = [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [point.lon, point.lat]},
                "properties": {"label": point.label, "rgi_id": point.rgi_id},
            }
            for point in self.points
        ]
        return {"type": "FeatureCollection", "features": features}

    def selected_centerline_collection(self) -> dict[str, Any]:
        """The selected glaciers' centerlines (lon/lat GeoJSON lines), for the map."""
        import shapely

        features = []
        for line in self.centerlines:
            geometry = reproject(line.line, line.crs, LONLAT)
            features.append(
                {
                    "type": "Feature",
                    "geometry": shapely.geometry.mapping(geometry),
                    "properties": {
                        "rgi_id": line.rgi_id,
                        "glims_id": line.glims_id,
                        "length_km": round(line.length_m / 1000.0, 3),
                    },
                }
            )
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

    @property
    def point(self) -> GlacierPoint | None:
        """The point selected last, or None."""
        return self.points[-1] if self.points else None

    @property
    def centerlines(self) -> list[GlacierCenterline]:
        """The main centerlines of the selected glaciers (from ``centerlines=``), in click
        order; glaciers the files hold no line for are left out (see :meth:`centerline_of`)."""
        found = (self._centerline_by_key.get(key) for key in self._glacier_keys)
        return [line for line in found if line is not None]

    @property
    def centerline(self) -> GlacierCenterline | None:
        """The centerline of the glacier selected last, or None (no glacier, or no line)."""
        if not self._glacier_keys:
            return None
        return self._centerline_by_key.get(self._glacier_keys[-1])

    @property
    def clicks(self) -> list[tuple[float, float]]:
        """``(lon, lat)`` of the clicks that made the current selections, in click order,
        each place once."""
        out: list[tuple[float, float]] = []
        for kind, key, lonlat in self._click_log:
            if self._is_selected(kind, key) and lonlat not in out:
                out.append(lonlat)
        return out

    def _is_selected(self, kind: str, key: Any) -> bool:
        if kind == "glacier":
            return key in self._glacier_keys
        if kind == "point":
            return key in self._point_keys
        return any(entry.zarr_url == key for entry in self.cubes)

    def _log_click(self, kind: str, key: Any, lonlat: tuple[float, float] | None) -> None:
        if lonlat is None:
            return
        self._click_log = [e for e in self._click_log if (e[0], e[1]) != (kind, key)]
        self._click_log.append((kind, key, (float(lonlat[0]), float(lonlat[1]))))

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
        self,
        feature: Mapping[str, Any] | None = None,
        properties: Any = None,
        coordinates: Any = None,
        **event: Any,
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
        coordinates : optional
            ``(lat, lon)`` of the click, as ipyleaflet sends it (kept in :attr:`clicks`).
        **event
            The event's other keywords (``id``...), ignored.

        Returns
        -------
        Glacier or None
            The glacier now selected, or None when the click deselected it.
        """
        props = _properties(feature, properties, (OUTLINE_SOURCE, OUTLINE_ROW), "glacier outline")
        key = (int(props[OUTLINE_SOURCE]), int(props[OUTLINE_ROW]))
        if key in self._glacier_keys:
            return self._deselect_glacier(key)
        return self._select_glacier(key, _lon_lat(coordinates))

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

    def click_map(
        self, type: str | None = "click", coordinates: Any = None, **event: Any
    ) -> Glacier | GlacierPoint | None:
        """Handle a click on the map itself (ipyleaflet's ``Map.on_interaction``).

        - A right click (``type="contextmenu"``), or a click in point mode, picks a point
          (:meth:`select_point`).
        - In glacier mode, a click inside a drawn outline is left to the outline's own
          handler (:meth:`click_glacier`); a click elsewhere asks GLIMS for the glacier there
          when the map allows it (``glims``; :meth:`select_glims_glacier`), else does
          nothing.

        Other events (``mousemove``, ``mouseover``...) are ignored.

        Parameters
        ----------
        type : str, optional
            The Leaflet event type: ``"click"`` or ``"contextmenu"``; others are ignored.
        coordinates : optional
            ``(lat, lon)`` of the click, as ipyleaflet sends it.
        **event
            The event's other keywords (``event``, ``location``...), ignored.

        Returns
        -------
        Glacier, GlacierPoint or None
            What the click selected; None when it selected nothing.

        Raises
        ------
        EmptySelectionError
            GLIMS holds no glacier at the point.
        DataAccessError
            The GLIMS service could not be reached or answered garbage.
        """
        if type not in ("click", "contextmenu"):
            return None
        point = click_lat_lon(coordinates)
        if point is None:
            return None
        lat, lon = point
        if type == "contextmenu" or self.mode == "point":
            return self.select_point(lon, lat)
        if self._outline_key_at(lon, lat) is not None:
            return None  # the outline layer's click handles it
        if self.glims:
            return self.select_glims_glacier(lon, lat)
        return None

    def select_glacier(self, rgi_id: str) -> Glacier:
        """Select a glacier of the map's outlines by its RGI id (as a click would).

        Parameters
        ----------
        rgi_id : str
            The RGI id, as in the outlines' ``rgi_id`` column (surrounding spaces ignored), or
            the GLIMS id of an outline (``glims_id``).

        Raises
        ------
        EmptySelectionError
            No outline of the map has this id.
        """
        wanted = str(rgi_id).strip()
        for column in ("rgi_id", "glims_id"):
            for source, gdf in enumerate(self.outlines):
                ids = [str(v) for v in gdf[column]]
                if wanted in ids:
                    key = (source, ids.index(wanted))
                    if key in self._glacier_keys:
                        return self.glaciers[self._glacier_keys.index(key)]
                    return self._select_glacier(key)
        known = [str(v) for gdf in self.outlines for v in gdf["rgi_id"]]
        raise EmptySelectionError(
            f"RGI id {wanted!r} is not among the map's {len(known)} outlines "
            f"(e.g. {known[:3]}); add its file with add_outlines() or check the id"
        )

    def select_glims_glacier(self, lon: float, lat: float) -> Glacier:
        """Select the glacier at ``(lon, lat)`` from the GLIMS web service and draw its outline.

        The outline joins the map's outlines (a later click on it selects or deselects it
        like a file's); the same GLIMS glacier is fetched once.

        Parameters
        ----------
        lon, lat : float
            The point, in degrees.

        Returns
        -------
        Glacier
            The selected glacier (``rgi_id`` None, ``glims_id`` GLIMS's ``glac_id``).

        Raises
        ------
        EmptySelectionError
            GLIMS holds no glacier at the point.
        DataAccessError
            The service could not be reached or did not answer GeoJSON.
        """
        row = fetch_glims_outline(lon, lat, url=self.glims_url)
        glims_id = row["glims_id"].iloc[0]
        source = self._glims_sources.get(glims_id) if glims_id is not None else None
        if source is None:
            source = self._add_outline_source(row.reset_index(drop=True))
            if glims_id is not None:
                self._glims_sources[glims_id] = source
        key = (source, 0)
        if key in self._glacier_keys:
            self.message = self.summary()
            self._changed()
            return self.glaciers[self._glacier_keys.index(key)]
        return self._select_glacier(key, (lon, lat))

    def _glacier_for(self, key: tuple[int, int]) -> tuple[Glacier, CubeEntry | None]:
        source, row = key
        if not (0 <= source < len(self.outlines) and 0 <= row < len(self.outlines[source])):
            raise InvalidParameterError(
                f"no outline {OUTLINE_SOURCE}={source}, {OUTLINE_ROW}={row} on this map "
                f"({len(self.outlines)} outline sources); was the feature drawn by another map?"
            )
        if key in self._glacier_keys:
            glacier = self.glaciers[self._glacier_keys.index(key)]
            return glacier, None
        outline = self.outlines[source].iloc[[row]]
        if self.catalog is None:
            return Glacier.from_outline(outline, find_cube=False), None
        # One catalog query: the map selects the best cube, and the Glacier records every cube
        # the outline touches and those that cover it (Glacier.covering_cubes) from the same
        # entries.
        found = self.catalog.find(
            geometry=outline.geometry.iloc[0], crs=outline.crs, allow_empty=True
        )
        glacier = Glacier.from_outline(outline, catalog=self.catalog, entries=found)
        return glacier, (found[0] if found else None)

    def _select_glacier(
        self, key: tuple[int, int], lonlat: tuple[float, float] | None = None
    ) -> Glacier:
        glacier, entry = self._glacier_for(key)
        if not self.multiple:
            self.glaciers, self._glacier_keys = [], []
            self.cubes = []
        self.glaciers.append(glacier)
        self._glacier_keys.append(key)
        self._log_click("glacier", key, lonlat)
        if entry is not None and not any(c is entry for c in self.cubes):
            self.cubes.append(entry)
        notes = []
        if self.centerline_sources:
            line = self._find_centerline(glacier)
            self._centerline_by_key[key] = line
            if line is None:
                notes.append("no centerline in the map's centerline files")
        if entry is None and self.catalog is not None:
            notes.append("no ITS_LIVE cube covers this glacier")
        self.message = " | ".join([self.summary(), *notes])
        self._changed()
        return glacier

    def _find_centerline(self, glacier: Glacier) -> GlacierCenterline | None:
        for _, lines in self.centerline_sources:
            try:
                return GlacierCenterline.from_file(lines, glacier=glacier)
            except (EmptySelectionError, InvalidParameterError):
                continue
        return None

    def centerline_of(self, glacier: Glacier | None = None) -> GlacierCenterline:
        """The main centerline of ``glacier`` (default: the glacier selected last) from the
        map's centerline files.

        Parameters
        ----------
        glacier : Glacier, optional
            Any glacier (selected or not); default :attr:`glacier`.

        Returns
        -------
        GlacierCenterline

        Raises
        ------
        InvalidParameterError
            The map has no centerline files, or no glacier is selected.
        EmptySelectionError
            No file holds a line of the glacier.
        """
        if not self.centerline_sources:
            raise InvalidParameterError(
                "this map has no centerline files; build it with centerlines= OGGM's "
                "centerlines.shp (or a GeoDataFrame of lines)"
            )
        glacier = glacier if glacier is not None else self.glacier
        if glacier is None:
            raise InvalidParameterError("no glacier is selected: click one, or pass glacier=")
        if glacier in self.glaciers:
            key = self._glacier_keys[self.glaciers.index(glacier)]
            line = self._centerline_by_key.get(key)
        else:
            line = self._find_centerline(glacier)
        if line is None:
            files = [path_text(src) for src, _ in self.centerline_sources]
            raise EmptySelectionError(
                f"no centerline of {files} belongs to {glacier.rgi_id or glacier.glims_id!r} "
                "(by id or within its outline); add the glacier's OGGM centerlines file"
            )
        return line

    def _deselect_glacier(self, key: tuple[int, int]) -> None:
        position = self._glacier_keys.index(key)
        del self._glacier_keys[position]
        removed = self.glaciers.pop(position)
        self._centerline_by_key.pop(key, None)
        # The glacier's cube goes too unless another selected glacier uses it.
        still_used = {g.cube_url for g in self.glaciers}
        if removed.cube_url not in still_used:
            self.cubes = [c for c in self.cubes if c.zarr_url != removed.cube_url]
        self.message = self.summary()
        self._changed()
        return None

    def _outline_key_at(self, lon: float, lat: float) -> tuple[int, int] | None:
        """The drawn outline holding the point (the smallest when they nest), or None."""
        import shapely

        where = shapely.Point(lon, lat)
        best, best_area = None, math.inf
        for source, lonlat in enumerate(self._outlines_lonlat):
            for row in lonlat.index[lonlat.covers(where)]:
                area = lonlat.loc[row].area
                if area < best_area:
                    best, best_area = (source, int(row)), area
        return best

    def select_point(self, lon: float, lat: float, *, label: str | None = None) -> GlacierPoint:
        """Pick the point ``(lon, lat)`` (as a click in point mode would).

        The point lies on the glacier whose drawn outline holds it (if any) and records the
        catalog cube it lies deepest in; its series and 3×3 window come from ``data=`` or,
        with ``open_cubes=True``, from its cube, lazily. The same pixel of the same cube
        (without a cube: the same place, to 1e-6°) is selected once.

        Parameters
        ----------
        lon, lat : float
            The point, in degrees.
        label : str, optional
            The point's label (default ``"point N: <glacier>, lat ..., lon ..."``).

        Returns
        -------
        GlacierPoint
            The new point, or the one already selected at that pixel.
        """
        lon, lat = float(lon), float(lat)
        check_lonlat(lon, lat)
        key = self._outline_key_at(lon, lat)
        glacier = self._glacier_for(key)[0] if key is not None else None
        entry = None
        if self.catalog is not None:
            found = self.catalog.find(point=(lon, lat), allow_empty=True)
            entry = found[0] if found else None
        cube_url = entry.zarr_url if entry else (glacier.cube_url if glacier else None)
        point = GlacierPoint(
            lon=lon,
            lat=lat,
            rgi_id=glacier.rgi_id if glacier else None,
            name=glacier.name if glacier else None,
            cube_url=cube_url,
            glacier=glacier,
            label=label or "",
        )
        ds = self._data_at(lon, lat, cube_url)
        if ds is not None:
            point = point.load(ds)
            where = (float(point.data["x"]), float(point.data["y"]))
            point_key: tuple[Any, ...] = ("pixel", cube_url or id(ds), *where)
        else:
            point_key = ("place", round(lon, 6), round(lat, 6))
        if point_key in self._point_keys:
            existing = self.points[self._point_keys.index(point_key)]
            self.message = f"{self.summary()} | {existing.label} is already selected"
            self._changed()
            return existing
        self._n_points += 1
        if not label:
            glacier_text = (glacier.name or glacier.rgi_id or glacier.glims_id) if glacier else None
            label = f"point {self._n_points}: {point_label(lon, lat, glacier_text)}"
        point = dataclasses.replace(point, label=label)
        if not self.multiple:
            self.points, self._point_keys = [], []
        self.points.append(point)
        self._point_keys.append(point_key)
        self._log_click("point", point_key, (lon, lat))
        notes = []
        if point.data is None and cube_url is not None:
            notes.append("series: point.load() reads its cube")
        elif cube_url is None and ds is None and self.catalog is not None:
            notes.append("no ITS_LIVE cube covers this point")
        self.message = " | ".join([self.summary(), *notes])
        self._changed()
        return point

    def deselect_point(self, point: GlacierPoint | str) -> None:
        """Remove a selected point.

        Parameters
        ----------
        point : GlacierPoint or str
            The point, or its label.

        Raises
        ------
        EmptySelectionError
            No selected point is this one.
        """
        for i, candidate in enumerate(self.points):
            if candidate is point or candidate.label == point:
                del self.points[i]
                del self._point_keys[i]
                self.message = self.summary()
                self._changed()
                return None
        raise EmptySelectionError(
            f"{point!r} is not a selected point (selected: {[p.label for p in self.points]})"
        )

    def _data_at(self, lon: float, lat: float, cube_url: str | None) -> Any:
        for ds in self.datasets:
            if _covers(ds, lon, lat):
                return ds
        if self.open_cubes and cube_url is not None:
            if cube_url not in self._opened:
                self._opened[cube_url] = open_cube(cube_url)
            return self._opened[cube_url]
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
        self._log_click("cube", entry.zarr_url, None if point is None else (point[1], point[0]))
        self.message = self.summary()
        self._changed()
        return entry

    def clear(self) -> None:
        """Deselect everything (glaciers, cubes, points)."""
        self.glaciers, self._glacier_keys, self.cubes = [], [], []
        self.points, self._point_keys = [], []
        self._centerline_by_key, self._click_log = {}, []
        self.message = self._hint()
        self._changed()

    def summary(self) -> str:
        """One line naming the selection (the text under the map)."""
        parts = []
        glims = set(self._glims_sources.values())
        for (source, _), glacier in zip(self._glacier_keys, self.glaciers, strict=True):
            ident = glacier.rgi_id or glacier.glims_id
            name = f" ({glacier.name})" if glacier.name else ""
            origin = " from GLIMS" if source in glims else ""
            parts.append(f"Glacier {ident}{name}{origin}, {glacier.area_km2:.2f} km²")
        for line in self.centerlines:
            parts.append(f"centerline {line.length_m / 1000:.1f} km")
        for entry in self.cubes:
            parts.append(f"Cube {entry.name} ({entry.crs})")
        for point in self.points:
            parts.append(point.label)
        return " | ".join(parts) if parts else self._hint()

    def __repr__(self) -> str:
        n_outlines = sum(len(g) for g in self.outlines)
        return (
            f"MapState({n_outlines} outlines, {len(self.cube_indices)} cube footprints, "
            f"glaciers={[g.rgi_id or g.glims_id for g in self.glaciers]}, "
            f"cubes={[c.name for c in self.cubes]}, points={[p.label for p in self.points]})"
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

    In glacier mode (the default), a click on an outline selects that glacier (and the cube
    covering most of it, and its OGGM centerline with ``centerlines=``); a click on a
    highlighted outline deselects it; a click on a cube footprint selects the cube at that
    point; a click elsewhere asks GLIMS for the glacier there when ``glims`` allows it (the
    default without ``outlines``). In point mode (the ``glacier | point`` buttons under the
    map's zoom, or :attr:`mode`), and with a right-click in either mode, a click picks a
    :class:`~xr_itslive.GlacierPoint` with its label and, when its cube is known, its series
    and 3×3 window. The label under the map names the selection.

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
    glims, glims_url, centerlines, data, open_cubes, mode
        See :class:`~xr_itslive.widget.MapState`: GLIMS lookups for clicks off the drawn
        outlines and its endpoint, OGGM centerline files, opened cubes for the points' series,
        opening the points' cubes, what a left click selects.

    Attributes
    ----------
    state : MapState
        Outlines, catalog, selections and the click logic.
    map : ipyleaflet.Map
    label : ipywidgets.Label
        The selection, as text.
    mode_buttons : ipywidgets.ToggleButtons
        ``glacier`` / ``point``: what a left click selects.
    widget : ipywidgets.VBox
        The map and the label (what a notebook shows).

    Examples
    --------
    >>> m = GlacierMap(catalog="catalog_v02.json", outlines="outline.geojson")  # doctest: +SKIP
    >>> m  # shows the map in a notebook  # doctest: +SKIP
    >>> m.glacier  # the Glacier clicked last  # doctest: +SKIP
    >>> m.mode = "point"  # a click now picks a point: m.point.series  # doctest: +SKIP
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
        glims: bool | None = None,
        glims_url: str | None = None,
        centerlines: Any = None,
        data: Any = None,
        open_cubes: bool = False,
        mode: str = "glacier",
    ) -> None:
        ipyleaflet, ipywidgets = _ipyleaflet()
        base = make_basemap(basemap)
        self.state = MapState(
            catalog,
            outlines,
            cubes=cubes,
            margin=margin,
            multiple=multiple,
            glims=glims,
            glims_url=glims_url,
            centerlines=centerlines,
            data=data,
            open_cubes=open_cubes,
            mode=mode,
        )
        fit_center, fit_zoom = view_for_bounds(self.state.bounds())
        self.map = ipyleaflet.Map(
            basemap=base,
            center=center if center is not None else fit_center,
            zoom=zoom if zoom is not None else fit_zoom,
            scroll_wheel_zoom=True,
            double_click_zoom=False,  # a double click is two clicks on the same place
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
        # Their own panes keep lines and points above the outlines, however often the
        # highlight layers are redrawn.
        self.centerline_layer = ipyleaflet.GeoJSON(
            data=self.state.selected_centerline_collection(),
            style=CENTERLINE_STYLE,
            name="centerlines",
            pane="shadowPane",
        )
        self.point_layer = ipyleaflet.GeoJSON(
            data=self.state.selected_point_collection(),
            point_style={**POINT_STYLE, "pane": "markerPane"},
            name="selected points",
            pane="markerPane",
        )
        for layer in (
            self.cube_layer,
            self.selected_cube_layer,
            self.glacier_layer,
            self.selected_glacier_layer,
        ):
            self.map.add(layer)
        # The centerline and point layers join the map when they have something to show.
        if self.state.centerline_sources:
            self.map.add(self.centerline_layer)
        self.map.add(ipyleaflet.LayersControl(position="topright"))
        self.mode_buttons = ipywidgets.ToggleButtons(
            options=list(MODES),
            value=self.state.mode,
            tooltips=["a click selects a glacier or a cube", "a click picks a point"],
            style={"button_width": "70px"},
        )
        self.mode_buttons.add_class("xr-itslive-mode")
        self.mode_buttons.observe(self._on_mode_button, names="value")
        self.map.add(ipyleaflet.WidgetControl(widget=self.mode_buttons, position="topleft"))
        self.cube_layer.on_click(self._on_cube_click)
        self.selected_cube_layer.on_click(self._on_cube_click)
        self.glacier_layer.on_click(self._on_glacier_click)
        self.selected_glacier_layer.on_click(self._on_selected_glacier_click)
        self.map.on_interaction(self._on_map_interaction)
        self.label = ipywidgets.Label(value=self.state.message)
        self.label.add_class("xr-itslive-selection")
        self.widget = ipywidgets.VBox([self.map, self.label])
        self._drawn_outlines = len(self.state.outlines)
        self.state.observe(lambda _: self._refresh())

    # --- click handlers (ipyleaflet calls them with the event's keywords) ---

    def _on_glacier_click(self, **event: Any) -> None:
        if self.state.mode == "glacier":  # in point mode the map's click picks the point
            self._guarded(self.state.click_glacier, event)

    def _on_selected_glacier_click(self, **event: Any) -> None:
        if self.state.mode == "glacier":
            self._guarded(self.state.click_selected_glacier, event)

    def _on_cube_click(self, **event: Any) -> None:
        if self.state.mode == "glacier":
            self._guarded(self.state.click_cube, event)

    def _on_map_interaction(self, **event: Any) -> None:
        # Every mouse event reaches here (mousemove included): only clicks do something.
        if event.get("type") in ("click", "contextmenu"):
            self._guarded(self.state.click_map, event)

    def _on_mode_button(self, change: Mapping[str, Any]) -> None:
        self.mode = change["new"]

    def _guarded(self, handler: Callable[..., Any], event: Mapping[str, Any]) -> None:
        # A click must never leave a traceback in the page: show the error under the map.
        try:
            handler(**event)
        except ITSLiveError as err:
            self.label.value = f"{type(err).__name__}: {err}"

    def _refresh(self) -> None:
        if len(self.state.outlines) != self._drawn_outlines:  # a GLIMS outline was added
            self._drawn_outlines = len(self.state.outlines)
            self.glacier_layer.data = self.state.glacier_collection()
        self.selected_glacier_layer.data = self.state.selected_glacier_collection()
        self.selected_cube_layer.data = self.state.selected_cube_collection()
        self.centerline_layer.data = self.state.selected_centerline_collection()
        self.point_layer.data = self.state.selected_point_collection()
        if self.state.points and self.point_layer not in self.map.layers:
            self.map.add(self.point_layer)
        if self.mode_buttons.value != self.state.mode:
            self.mode_buttons.value = self.state.mode
        self.label.value = self.state.message

    # --- selections ---

    @property
    def mode(self) -> str:
        """What a left click selects: ``"glacier"`` (glaciers, cubes) or ``"point"``."""
        return self.state.mode

    @mode.setter
    def mode(self, value: str) -> None:
        self.state.mode = value
        self._refresh()

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

    @property
    def point(self) -> GlacierPoint | None:
        """The point picked last (a :class:`xr_itslive.GlacierPoint`), or None."""
        return self.state.point

    @property
    def points(self) -> list[GlacierPoint]:
        """All picked points, in click order."""
        return list(self.state.points)

    @property
    def centerline(self) -> GlacierCenterline | None:
        """The OGGM centerline (a :class:`xr_itslive.GlacierCenterline`) of the glacier
        selected last, or None."""
        return self.state.centerline

    @property
    def centerlines(self) -> list[GlacierCenterline]:
        """The centerlines of the selected glaciers, in click order."""
        return self.state.centerlines

    @property
    def clicks(self) -> list[tuple[float, float]]:
        """``(lon, lat)`` of the clicks that made the current selections, in click order."""
        return self.state.clicks

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

    def select_point(self, lon: float, lat: float, *, label: str | None = None) -> GlacierPoint:
        """Pick a point, as a click in point mode would.

        Parameters
        ----------
        lon, lat : float
            The point, in degrees.
        label : str, optional
            Its label (see :meth:`MapState.select_point`).

        Returns
        -------
        GlacierPoint
        """
        return self.state.select_point(lon, lat, label=label)

    def add_outlines(self, source: Any) -> None:
        """Draw more outlines (a file or GeoDataFrame).

        Parameters
        ----------
        source : str, path-like or geopandas.GeoDataFrame
            RGI outlines, as :meth:`MapState.add_outlines` takes them.
        """
        self.state.add_outlines(source)
        self._drawn_outlines = len(self.state.outlines)
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
