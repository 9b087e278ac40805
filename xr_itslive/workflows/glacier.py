"""The glacier objects: a glacier, a point on it, its centerline, and their data.

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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import xarray as xr

from ..crs import LONLAT, crs_key, cube_crs, local_metric_crs, reproject
from ..errors import EmptySelectionError, InvalidParameterError
from ..geo.centerlines import centerline_series, sample_line
from ..geo.clip import clip
from ..geo.masks import glacier_mask
from ..geo.subset import point_series
from ..geo.subset import window as pixel_window
from ..io.catalog import CubeEntry, find_cubes
from ..io.open import open_cube
from ..io.outlines import (
    GLIMS_ID_KEYS,
    RGI_ID_KEYS,
    clean_value,
    fetch_glims_outline,
    find_column,
    geopandas_module,
    main_centerline,
    outline_at,
    outline_by_id,
    path_text,
    read_centerlines,
)
from .invert import invert
from .mosaic import invert_mosaic


def _geodesic_area_km2(geometry: Any, crs: str) -> float:
    from pyproj import Geod

    lonlat = reproject(geometry, crs, LONLAT) if crs != LONLAT else geometry
    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(lonlat)
    return abs(area) / 1e6


def _data_text(data: xr.Dataset | None) -> str:
    if data is None:
        return "not loaded"
    dims = " × ".join(f"{k}: {v}" for k, v in data.sizes.items())
    return f"<{dims}, {len(data.data_vars)} variables>"


def _cube_name(url: str | None) -> str | None:
    return None if url is None else str(url).rstrip("/").rsplit("/", 1)[-1]


#: A cube joins an outline's cover only when it covers more than this fraction of the
#: outline's area that the cubes kept before it leave uncovered. Tiles of one EPSG share edges
#: and those of neighbouring UTM zones overlap; a box reprojected into the outline's CRS
#: (densified, so its edges stay within millimetres of the true curves) can leave slivers that
#: hold no pixel, and no cube should be opened and inverted for them.
COVER_TOLERANCE = 1e-6


def _cover(entries: Sequence[CubeEntry], outline: Any, crs: str) -> tuple[str, ...]:
    """The zarr URLs of the ``entries`` needed to cover ``outline`` (in ``crs``), best first.

    Walks the entries in their order (best first, as :func:`~xr_itslive.find_cubes` ranks
    them) and keeps one only when its projected box, reprojected (densified) into ``crs``,
    covers a part of the outline that the boxes kept before it do not (more than
    :data:`COVER_TOLERANCE` of the outline's area). The first entry is always kept.
    """
    area = float(outline.area)
    kept: list[str] = []
    covered = None
    for entry in entries:
        box = reproject(entry.box, entry.crs, crs)
        if box is None:  # not representable in the outline's CRS: keep it rather than lose ground
            kept.append(entry.zarr_url)
            continue
        part = box.intersection(outline)
        new = part if covered is None else part.difference(covered)
        if not kept or new.area > COVER_TOLERANCE * area:
            kept.append(entry.zarr_url)
            covered = part if covered is None else covered.union(part)
        if covered is not None and outline.difference(covered).area <= COVER_TOLERANCE * area:
            break  # covered: the remaining (worse-ranked) cubes add nothing
    return tuple(kept)


def _find_cube_url(geometry: Any, crs: str, catalog: Any) -> str:
    return find_cubes(geometry=geometry, crs=crs, catalog=catalog)[0].zarr_url


def _open(url: str | None, variables: Any, what: str, **kwargs: Any) -> xr.Dataset:
    if url is None:
        raise InvalidParameterError(
            f"this {what} has no cube_url; build it with find_cube=True (and a catalog), pass "
            "cube_url=, or give the data with .with_data(ds)"
        )
    return open_cube(url, variables, **kwargs)


@dataclass(frozen=True, repr=False, eq=False)
class Glacier:
    """A glacier: ids, name, outline, the cube that covers it, and (once opened) its data.

    Build one with :meth:`from_rgi_id`, :meth:`from_point` or :meth:`from_outline` (a map
    click: :class:`xr_itslive.widget.GlacierMap`); open its cube with :meth:`open`. Each
    parameter is kept as the attribute of the same name.

    Parameters
    ----------
    rgi_id : str or None
        RGI id (None for GLIMS-only outlines).
    name : str or None
        Glacier name, when the inventory has one.
    outline : shapely.Polygon or shapely.MultiPolygon
        The outline, in ``crs``.
    crs : str
        The outline's CRS as text (``"EPSG:4326"``, ``"EPSG:32646"``...).
    cube_url : str, optional
        URL or path of the ITS_LIVE cube covering the glacier.
    data : xarray.Dataset, optional
        The opened cube (lazy), or None.
    glims_id : str, optional
        GLIMS id, when known.
    attributes : mapping, optional
        The inventory's other attributes (default empty).
    cube_urls : tuple of str, optional
        Every cube the outline touches, best first (``cube_url`` is the first); also
        :attr:`cubes`.
    covering_cubes : tuple of str, optional
        The cubes of ``cube_urls`` needed to cover the outline, best first: walking
        ``cube_urls`` in order, a cube is kept only when its box covers a part of the outline
        that the cubes kept before it do not (compared in the outline's CRS, within
        :data:`~xr_itslive.workflows.glacier.COVER_TOLERANCE` of its area). A glacier wholly
        inside one cube has one covering cube even where a neighbouring UTM zone's cube
        overlaps it. Recorded by :meth:`from_outline` (and the constructors and map built on
        it); :meth:`invert` mosaics these. Empty when not recorded: :meth:`invert` then uses
        every cube of :attr:`cubes`.

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
    cube_urls: tuple[str, ...] = ()
    covering_cubes: tuple[str, ...] = ()

    # constructors

    @classmethod
    def from_outline(
        cls,
        row: Any,
        *,
        catalog: Any = None,
        cube_url: str | None = None,
        find_cube: bool = True,
        entries: Sequence[CubeEntry] | None = None,
    ) -> Glacier:
        """From a one-row GeoDataFrame as :func:`~xr_itslive.io.outlines.read_outlines` returns.

        With ``find_cube`` (and no ``cube_url``), every catalog cube the outline touches is
        recorded (``cube_urls``, the one covering most of it first as ``cube_url``; see
        :func:`xr_itslive.find_cubes`), and the cubes needed to cover it
        (``covering_cubes``).

        Parameters
        ----------
        row : geopandas.GeoDataFrame
            One outline with ``rgi_id``, ``glims_id`` and ``glacier_name`` columns; its other
            columns become ``attributes``. Without a CRS it is taken as lon/lat.
        catalog : optional
            Where the catalog comes from (see :func:`xr_itslive.load_catalog`); used only to
            find the cube.
        cube_url : str, optional
            The cube's URL or path, recorded as given (no catalog lookup).
        find_cube : bool, optional
            Without ``cube_url``: record the catalog cube covering most of the outline
            (``False``: leave ``cube_url`` None).
        entries : sequence of CubeEntry, optional
            The catalog cubes the outline touches, best first, already looked up (what
            :func:`xr_itslive.find_cubes` returns for it, e.g. by a map): recorded as with
            ``find_cube``, without asking the catalog again. Ignored with ``cube_url``.
        """
        if len(row) != 1:
            raise InvalidParameterError(f"from_outline takes one outline row, got {len(row)}")
        record = row.iloc[0]
        geometry = row.geometry.iloc[0]
        crs = crs_key(row.crs) if row.crs is not None else LONLAT
        skip = {row.geometry.name, "rgi_id", "glims_id", "glacier_name"}
        attributes = {k: v for k, v in record.items() if k not in skip}
        cube_urls: tuple[str, ...] = () if cube_url is None else (str(cube_url),)
        cover = cube_urls
        if cube_url is None and (entries is not None or find_cube):
            if entries is None:
                entries = find_cubes(geometry=geometry, crs=crs, catalog=catalog)
            # every cube the outline touches, the one covering most of it first, and those
            # of them that a mosaic needs
            cube_urls = tuple(entry.zarr_url for entry in entries)
            cube_url = cube_urls[0] if cube_urls else None
            cover = _cover(entries, geometry, crs)
        return cls(
            rgi_id=clean_value(record.get("rgi_id")),
            name=clean_value(record.get("glacier_name")),
            outline=geometry,
            crs=crs,
            cube_url=None if cube_url is None else str(cube_url),
            glims_id=clean_value(record.get("glims_id")),
            attributes=attributes,
            cube_urls=cube_urls,
            covering_cubes=cover,
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
        """The glacier ``rgi_id`` of an outline file (RGI6 or RGI7 attributes).

        Parameters
        ----------
        rgi_id : str
            The RGI id (e.g. ``"RGI60-11.00897"`` or ``"RGI2000-v7.0-G-11-03116"``).
        outlines : str, path-like or geopandas.GeoDataFrame
            An outline file (shapefile, GeoJSON, GeoPackage, GeoParquet) or GeoDataFrame
            holding the glacier.
        catalog : optional
            Where the catalog comes from (see :func:`xr_itslive.load_catalog`); used only to
            find the cube.
        cube_url : str, optional
            The cube's URL or path, recorded as given (no catalog lookup).
        find_cube : bool, optional
            Without ``cube_url``: record the catalog cube covering most of the outline
            (``False``: leave ``cube_url`` None).
        """
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
        GeoDataFrame) or, with ``online=True``, from the GLIMS service.

        Parameters
        ----------
        lon, lat : float
            The point, in degrees.
        outlines : str, path-like or geopandas.GeoDataFrame, optional
            Outline file or GeoDataFrame to search; takes precedence over ``online``.
        online : bool, optional
            Without ``outlines``, ask the GLIMS web service (needs the network).
        catalog : optional
            Where the catalog comes from (see :func:`xr_itslive.load_catalog`); used only to
            find the cube.
        cube_url : str, optional
            The cube's URL or path, recorded as given (no catalog lookup).
        find_cube : bool, optional
            Without ``cube_url``: record the catalog cube covering most of the outline
            (``False``: leave ``cube_url`` None).
        """
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
        """The outline reprojected to ``crs``.

        Parameters
        ----------
        crs
            The target CRS (EPSG code, ``"EPSG:..."`` text or pyproj CRS).
        """
        return reproject(self.outline, self.crs, crs_key(crs))

    def to_crs(self, crs: Any) -> Glacier:
        """The same glacier with its outline in ``crs``.

        Parameters
        ----------
        crs
            The target CRS (EPSG code, ``"EPSG:..."`` text or pyproj CRS).
        """
        key = crs_key(crs)
        return replace(self, outline=self.outline_in(key), crs=key)

    def to_geodataframe(self):
        """A one-row GeoDataFrame of the outline and ids."""
        gpd = geopandas_module()
        return gpd.GeoDataFrame(
            {"rgi_id": [self.rgi_id], "glims_id": [self.glims_id], "glacier_name": [self.name]},
            geometry=[self.outline],
            crs=self.crs,
        )

    # data

    def open(self, variables: Any = None, **kwargs: Any) -> Glacier:
        """A copy holding the lazily opened cube (see :func:`xr_itslive.open_cube`), with the
        outline in the cube's CRS.

        Parameters
        ----------
        variables : iterable of str, optional
            Variables to keep (default: all).
        **kwargs
            Passed to :func:`xr_itslive.open_cube` (``storage_options``, ``chunks``).
        """
        ds = _open(self.cube_url, variables, "glacier", **kwargs)
        return self.with_data(ds)

    def with_data(self, ds: xr.Dataset) -> Glacier:
        """A copy holding ``ds`` (outline moved to its CRS when it has one).

        Parameters
        ----------
        ds : xarray.Dataset
            The glacier's cube, e.g. opened with :func:`xr_itslive.open_cube`.
        """
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
        """Boolean ``(y, x)`` mask of the glacier's pixels in its cube.

        Parameters
        ----------
        all_touched : bool, optional
            Count every pixel the outline touches, not only those whose centre is inside.
        """
        return glacier_mask(self._require_data(), self, all_touched=all_touched)

    def clip(self, **kwargs: Any) -> xr.Dataset:
        """The cube cropped to the glacier, NaN outside (see :func:`xr_itslive.geo.clip.clip`).

        Parameters
        ----------
        **kwargs
            Passed to :func:`~xr_itslive.geo.clip.clip` (``all_touched``, ``drop``).
        """
        return clip(self._require_data(), self, **kwargs)

    @property
    def cubes(self) -> tuple[str, ...]:
        """The URLs of every cube the outline touches, best first (``cube_urls``; those it
        needs: ``covering_cubes``)."""
        if self.cube_urls:
            return self.cube_urls
        return () if self.cube_url is None else (self.cube_url,)

    def invert(self, **kwargs: Any) -> xr.Dataset:
        """Invert the glacier's pixels only: :func:`xr_itslive.invert` with ``mask=self`` on
        its cube, or :func:`xr_itslive.invert_mosaic` when the outline needs several cubes.

        The cubes are ``covering_cubes`` (every cube of :attr:`cubes` when none are
        recorded): a glacier wholly inside its cube is inverted there alone, even where
        another cube (a neighbouring UTM zone's) overlaps it.

        The glacier's own cube (``cube_url``) is its ``data`` as it is: a pair selection made
        before :meth:`with_data` (a time window, :func:`xr_itslive.filter_pairs`...) applies
        to it. A Glacier records no such selection, so the other cubes of a mosaic are opened
        from their URLs with all their pairs; to select the pairs of every cube alike, open
        and filter each cube, and call ``invert_mosaic([...], mask=glacier)`` yourself.

        Parameters
        ----------
        **kwargs
            Passed to :func:`xr_itslive.invert` or :func:`xr_itslive.invert_mosaic` (e.g.
            ``step``, ``crs`` for a mosaic); not ``mask``.
        """
        cover = self.covering_cubes or self.cubes
        if len(cover) > 1:
            sources = [
                self.data if (self.data is not None and url == self.cube_url) else url
                for url in cover
            ]
            return invert_mosaic(sources, mask=self, **kwargs)
        return invert(self._require_data(), mask=self, **kwargs)

    def point(self, lon: float, lat: float) -> GlacierPoint:
        """A :class:`GlacierPoint` on this glacier (with its series when data is loaded).

        Parameters
        ----------
        lon, lat : float
            The point, in degrees.
        """
        point = GlacierPoint(
            lon=float(lon), lat=float(lat), rgi_id=self.rgi_id, name=self.name,
            cube_url=self.cube_url, glacier=self,
        )  # fmt: skip
        return point.load(self.data) if self.data is not None else point

    def centerline(self, source: Any, *, spacing: float | None = None) -> GlacierCenterline:
        """This glacier's main centerline from an OGGM centerline file.

        Parameters
        ----------
        source : str, path-like or geopandas.GeoDataFrame
            The centerline file (e.g. OGGM's ``centerlines.shp``) or GeoDataFrame.
        spacing : float, optional
            Metres between sampled points, kept as the centerline's ``spacing`` (None: the
            cube's pixel size).
        """
        return GlacierCenterline.from_file(source, glacier=self, spacing=spacing)

    def __repr__(self) -> str:
        return (
            f"Glacier(rgi_id={self.rgi_id!r}, name={self.name!r}, "
            f"area={self.area_km2:.2f} km², crs={self.crs}, cube={_cube_name(self.cube_url)!r}, "
            f"data={_data_text(self.data)})"
        )


#: Width in pixels of the window around a point (:attr:`GlacierPoint.cube_around_point`).
POINT_WINDOW_SIZE = 3


def point_label(lon: float, lat: float, glacier: str | None = None) -> str:
    """The text naming a point for a user: ``"<glacier>, lat 29.9150, lon 95.9700"``.

    Parameters
    ----------
    lon, lat : float
        The point, in degrees (written with 4 decimals, about 10 m).
    glacier : str, optional
        The glacier's name or id, written first when given.

    Returns
    -------
    str
    """
    where = f"lat {float(lat):.4f}, lon {float(lon):.4f}"
    return f"{glacier}, {where}" if glacier else where


@dataclass(frozen=True, repr=False, eq=False)
class GlacierPoint:
    """A point on a glacier and, once loaded, the cube's series at its nearest pixel and the
    3×3 pixels around it.

    Build one with :meth:`from_point`, :meth:`Glacier.point` or a click on the map
    (:class:`~xr_itslive.widget.GlacierMap`); :meth:`load` reads its cube. Each parameter is
    kept as the attribute of the same name.

    Parameters
    ----------
    lon, lat : float
        The point, degrees.
    rgi_id, name : str, optional
        The glacier it lies on, when known.
    cube_url : str, optional
        The cube covering it.
    data : xarray.Dataset, optional
        The series at the nearest pixel (see :func:`xr_itslive.geo.subset.point_series`), or None;
        also :attr:`series`.
    glacier : Glacier, optional
        The :class:`Glacier`, when known.
    label : str, optional
        What a user sees for the point (a legend, the map's text); default: the glacier's name
        or id and the rounded coordinates (:func:`~xr_itslive.workflows.glacier.point_label`).
    window : xarray.Dataset, optional
        The 3×3 pixels centred on the nearest pixel (see :func:`xr_itslive.geo.subset.window`),
        or None; also :attr:`cube_around_point`.
    """

    lon: float
    lat: float
    rgi_id: str | None = None
    name: str | None = None
    cube_url: str | None = None
    data: xr.Dataset | None = None
    glacier: Glacier | None = None
    label: str | None = None
    window: xr.Dataset | None = None

    def __post_init__(self) -> None:
        if self.label is None:
            glacier_text = self.name or self.rgi_id
            if glacier_text is None and self.glacier is not None:
                glacier_text = self.glacier.name or self.glacier.rgi_id or self.glacier.glims_id
            object.__setattr__(self, "label", point_label(self.lon, self.lat, glacier_text))

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
        label: str | None = None,
    ) -> GlacierPoint:
        """A point; with ``outlines``, the glacier it lies on; with ``find_cube``, its cube.

        Parameters
        ----------
        lon, lat : float
            The point, in degrees.
        outlines : str, path-like or geopandas.GeoDataFrame, optional
            Outline file or GeoDataFrame; the glacier containing the point is recorded.
        catalog : optional
            Where the catalog comes from (see :func:`xr_itslive.load_catalog`).
        cube_url : str, optional
            The cube's URL or path, recorded as given (no catalog lookup).
        find_cube : bool, optional
            Without ``cube_url``, record the catalog cube the point lies deepest in.
        label : str, optional
            The point's label (default: see :func:`~xr_itslive.workflows.glacier.point_label`).
        """
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
            cube_url=cube_url, glacier=glacier, label=label,
        )  # fmt: skip

    @property
    def offset_m(self) -> float | None:
        """Distance from the point to the centre of the pixel its series comes from."""
        return None if self.data is None else float(self.data.attrs["offset_m"])

    @property
    def series(self) -> xr.Dataset | None:
        """The series at the nearest pixel (``data``; dims ``mid_date``), or None until loaded."""
        return self.data

    @property
    def cube_around_point(self) -> xr.Dataset | None:
        """The 3×3 pixels around the point (``window``; dims ``mid_date, y, x``), or None until
        loaded; fewer pixels at the cube's edge."""
        return self.window

    def load(
        self,
        ds: xr.Dataset | None = None,
        variables: Any = None,
        *,
        size: int = POINT_WINDOW_SIZE,
        **kwargs: Any,
    ) -> GlacierPoint:
        """A copy holding the series at the nearest pixel of ``ds`` (default: the opened cube)
        and the ``size × size`` window around it, both lazy.

        Parameters
        ----------
        ds : xarray.Dataset, optional
            The cube to read; default: open ``cube_url``.
        variables : iterable of str, optional
            Variables to keep when opening ``cube_url`` (default: all); unused with ``ds``.
        size : int, optional
            Odd width in pixels of the window (:attr:`cube_around_point`); at the cube's edge
            the window keeps the pixels inside the cube.
        **kwargs
            Passed to :func:`xr_itslive.open_cube` when opening ``cube_url``.
        """
        if ds is None:
            ds = _open(self.cube_url, variables, "point", **kwargs)
        return replace(
            self,
            data=point_series(ds, lon=self.lon, lat=self.lat),
            window=pixel_window(ds, lon=self.lon, lat=self.lat, size=size, clip_edges=True),
        )

    def __repr__(self) -> str:
        offset = "" if self.data is None else f", offset={self.offset_m:.1f} m"
        return (
            f"GlacierPoint(lon={self.lon:.5f}, lat={self.lat:.5f}, rgi_id={self.rgi_id!r}, "
            f"name={self.name!r}, cube={_cube_name(self.cube_url)!r}, "
            f"data={_data_text(self.data)}{offset}, label={self.label!r})"
        )


@dataclass(frozen=True, repr=False, eq=False)
class GlacierCenterline:
    """A glacier's main centerline and, once loaded, the cube's series along it.

    Build one with :meth:`from_file` or :meth:`Glacier.centerline`. Each parameter is kept as
    the attribute of the same name.

    Parameters
    ----------
    line : shapely.LineString
        The line, in ``crs`` (OGGM lines run from the head to the terminus).
    crs : str
        The line's CRS as text.
    rgi_id, name, glims_id : str, optional
        The glacier, when known.
    spacing : float, optional
        Metres between sampled points (None: the cube's pixel size).
    cube_url : str, optional
        The cube covering the glacier.
    data : xarray.Dataset, optional
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

        Parameters
        ----------
        source : str, path-like or geopandas.GeoDataFrame
            The centerline file (e.g. OGGM's ``centerlines.shp``) or GeoDataFrame.
        glacier : Glacier, optional
            The glacier: its RGI or GLIMS id picks the lines (else the lines meeting its
            outline), and its ids, name and cube URL are kept.
        glacier_id : str, optional
            Keep the lines of this glacier id (matched against the file's id columns).
        spacing : float, optional
            Metres between sampled points, kept as ``spacing`` (None: the cube's pixel size).
        catalog : optional
            Where the catalog comes from (see :func:`xr_itslive.load_catalog`).
        cube_url : str, optional
            The cube's URL or path; default: the glacier's.
        find_cube : bool, optional
            With no cube URL otherwise, record the catalog cube covering most of the line.
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
                    f"no centerline of {path_text(source)} meets the outline of "
                    f"{glacier.rgi_id or glacier.glims_id!r}; is it the same glacier?"
                )
        row = main_centerline(lines, glacier_id=glacier_id)
        crs = crs_key(row.crs)
        record = row.iloc[0]
        if cube_url is None and glacier is not None:
            cube_url = glacier.cube_url
        if cube_url is None and find_cube:
            cube_url = _find_cube_url(row.geometry.iloc[0], crs, catalog)
        glims_col = find_column(row.columns, GLIMS_ID_KEYS)
        return cls(
            line=row.geometry.iloc[0],
            crs=crs,
            rgi_id=glacier.rgi_id
            if glacier
            else clean_value(record.get(find_column(row.columns, RGI_ID_KEYS))),
            name=glacier.name if glacier else None,
            glims_id=glacier.glims_id
            if glacier and glacier.glims_id
            else (clean_value(record[glims_col]) if glims_col else None),
            spacing=spacing,
            cube_url=cube_url,
        )

    @property
    def length_m(self) -> float:
        """Length along the ground (local UTM), metres."""
        metric = local_metric_crs(self.line, self.crs)
        return float(reproject(self.line, self.crs, metric).length)

    def points(self, spacing: float | None = None, crs: Any = None) -> tuple[np.ndarray, Any]:
        """``(distance, MultiPoint)``: points every ``spacing`` metres along the line.

        Parameters
        ----------
        spacing : float, optional
            Metres between points (default: this centerline's spacing, else 120 m).
        crs : optional
            CRS of the returned points (default: the line's).
        """
        spacing = spacing or self.spacing or 120.0
        distance, points, _ = sample_line(self.line, spacing, self.crs)
        if crs is not None:
            points = reproject(points, self.crs, crs_key(crs))
        return distance, points

    def load(
        self, ds: xr.Dataset | None = None, variables: Any = None, **kwargs: Any
    ) -> GlacierCenterline:
        """A copy holding the series along the line in ``ds`` (default: the opened cube).

        Parameters
        ----------
        ds : xarray.Dataset, optional
            The cube to read; default: open ``cube_url``.
        variables : iterable of str, optional
            Variables to keep when opening ``cube_url`` (default: all); unused with ``ds``.
        **kwargs
            Passed to :func:`xr_itslive.open_cube` when opening ``cube_url``.
        """
        if ds is None:
            ds = _open(self.cube_url, variables, "centerline", **kwargs)
        return replace(self, data=centerline_series(ds, self, spacing=self.spacing))

    def __repr__(self) -> str:
        return (
            f"GlacierCenterline(rgi_id={self.rgi_id!r}, glims_id={self.glims_id!r}, "
            f"name={self.name!r}, length={self.length_m / 1000:.1f} km, crs={self.crs}, "
            f"cube={_cube_name(self.cube_url)!r}, data={_data_text(self.data)})"
        )
