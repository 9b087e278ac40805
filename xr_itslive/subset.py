"""Subsets and pair filters of ITS_LIVE cubes, all lazy in the pixel data.

Spatial subsets (a point's series, a k×k window, a bbox, an outline clip) are index selections
or ``where`` masks: nothing of the ``(mid_date, y, x)`` variables is read. Pair filters
(missions, satellites, sensors, dates, temporal baseline) read only the small per-pair
variables and coordinates, then select pairs with ``isel``. The valid-fraction filter needs a
reduction over the pixels; it says so and offers a lazy form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from .errors import EmptySelectionError, InvalidParameterError, MissingVariableError

PAIR_DIM = "mid_date"
LONLAT = "EPSG:4326"

# --- where things are ---


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
    from .access import _crs_of

    return _crs_of(ds if isinstance(ds, xr.Dataset) else ds.to_dataset(name="_"))


def _crs_text(crs: Any) -> str:
    if crs is None:
        return "the cube's CRS"
    epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
    return f"EPSG:{epsg}" if epsg else str(crs)


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
    from .catalog import _crs_key, _transformer

    px, py = _transformer(LONLAT, _crs_key(crs)).transform(lon, lat)
    return float(px), float(py)


def _spacing(coord: np.ndarray) -> float:
    if coord.size < 2:
        return 0.0
    return float(np.median(np.abs(np.diff(coord))))


def _extent_text(ds: xr.Dataset | xr.DataArray) -> str:
    xs, ys = ds["x"].values, ds["y"].values
    return (
        f"x {xs.min():.1f}..{xs.max():.1f}, y {ys.min():.1f}..{ys.max():.1f} in "
        f"{_crs_text(cube_crs(ds))}"
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
    half_x, half_y = _spacing(xs) / 2, _spacing(ys) / 2
    if abs(xs[ix] - x) > half_x + 1e-6 or abs(ys[iy] - y) > half_y + 1e-6:
        dx = max(0.0, abs(xs[ix] - x) - half_x)
        dy = max(0.0, abs(ys[iy] - y) - half_y)
        raise EmptySelectionError(
            f"the point (x={x:.1f}, y={y:.1f}) is {np.hypot(dx, dy):.0f} m outside the cube "
            f"({_extent_text(ds)}). Open the cube that covers it: xr_itslive.find_cubes(point="
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
        The point, as for :func:`point_series`.
    size
        Odd window width in pixels (3 gives the 3×3 neighbourhood).
    clip_edges
        Near the cube's edge, return the part of the window inside the cube instead of
        raising.

    Returns
    -------
    xarray.Dataset
        Dims ``(mid_date, y, x)`` with ``size`` pixels each way; ``attrs`` as for
        :func:`point_series`.
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
            f"centre of the cube ({_extent_text(ds)}); check the bounds and their crs= "
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


def clip(
    ds: xr.Dataset,
    outline: Any,
    *,
    crs: Any = None,
    all_touched: bool = False,
    drop: bool = True,
) -> xr.Dataset:
    """Keep a glacier's pixels: crop to the outline's box and set the rest to NaN, lazily.

    Parameters
    ----------
    ds
        An ITS_LIVE cube.
    outline
        Anything :func:`xr_itslive.glaciers.glacier_mask` accepts (a shapely geometry, a
        GeoDataFrame/GeoSeries, a :class:`~xr_itslive.glaciers.Glacier`, a file path).
    crs
        CRS of a bare shapely ``outline`` (default: the cube's).
    all_touched
        Count pixels the outline touches, not only those whose centre is inside.
    drop
        Crop to the rows and columns that hold outline pixels.

    Returns
    -------
    xarray.Dataset
        With a boolean ``glacier_mask`` ``(y, x)`` coordinate.
    """
    from .glaciers import glacier_mask

    mask = glacier_mask(ds, outline, crs=crs, all_touched=all_touched)
    if drop:
        rows = np.flatnonzero(mask.values.any(axis=1))
        cols = np.flatnonzero(mask.values.any(axis=0))
        window_ = {"y": slice(rows[0], rows[-1] + 1), "x": slice(cols[0], cols[-1] + 1)}
        ds, mask = ds.isel(window_), mask.isel(window_)
    out = apply_mask(ds, mask)
    return out.assign_coords(glacier_mask=mask)


# --- pair filters ---

_SATELLITE_VARS = ("satellite_img1", "satellite_img2")
_MISSION_VARS = ("mission_img1", "mission_img2")
_SENSOR_VARS = ("sensor_img1", "sensor_img2")

_MISSION_ALIASES = {"landsat": "l", "sentinel": "s"}
_SENSOR_ALIASES = {
    "oli": "o",
    "olitirs": "o",
    "etm": "e",
    "etm+": "e",
    "tm": "t",
    "sar": "c",
    "csar": "c",
}


def _norm(value: Any) -> str:
    return re.sub(r"[\s_\-]", "", str(value)).lower()


def _norm_platform(value: Any) -> str:
    text = _norm(value)
    for name, code in _MISSION_ALIASES.items():
        if text.startswith(name):
            return code + text[len(name) :]
    return text


def _strings(ds: xr.Dataset, name: str) -> np.ndarray:
    # Strings arrive as StringDType, <U or object depending on the writer: normalize via str.
    values = np.asarray(ds[name].values)
    return np.array([_norm(v) for v in values.tolist()], dtype=object)


def _require(ds: xr.Dataset, names: Sequence[str], purpose: str) -> None:
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise MissingVariableError(
            f"filtering by {purpose} needs the per-pair variables {list(names)}, and {missing} "
            f"are not in this cube (it has {sorted(map(str, ds.data_vars))}). "
            "open_cube(variables=[...]) keeps only the variables listed: add "
            f"{', '.join(repr(n) for n in names)} to variables=."
        )


def _pair_match(first: np.ndarray, second: np.ndarray, images: str) -> np.ndarray:
    if images == "both":
        return first & second
    if images == "either":
        return first | second
    if images == "first":
        return first
    raise InvalidParameterError(
        f"images must be 'both', 'either' or 'first', got images={images!r}"
    )


def _shown(values: np.ndarray) -> list[str]:
    return sorted({str(v).upper() for v in values.tolist()})


def _as_list(values: Any) -> list[str]:
    return [values] if isinstance(values, str) else list(values)


def platform_codes(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair platform codes of both images, e.g. ``'l8'``, ``'s2a'``, ``'s1b'`` (lower case)."""
    _require(ds, _MISSION_VARS + _SATELLITE_VARS, "satellites")
    m1, m2 = _strings(ds, _MISSION_VARS[0]), _strings(ds, _MISSION_VARS[1])
    s1, s2 = _strings(ds, _SATELLITE_VARS[0]), _strings(ds, _SATELLITE_VARS[1])
    return m1 + s1, m2 + s2


def _infer_platform(satellite: np.ndarray) -> np.ndarray:
    """Platform codes from ``satellite_img`` alone: ITS_LIVE's codes are unambiguous
    (``'4'``..``'9'`` Landsat, ``'1A'``/``'1B'`` Sentinel-1, ``'2A'``/``'2B'`` Sentinel-2)."""
    lowered = np.char.lower(satellite.astype(str))
    landsat = np.char.isdigit(lowered)
    return np.where(landsat, np.char.add("l", lowered), np.char.add("s", lowered))


def select_platforms(
    ds: xr.Dataset,
    missions: str | Iterable[str] | None = None,
    satellites: str | Iterable[str] | None = None,
    sensors: str | Iterable[str] | None = None,
    *,
    images: Literal["both", "either", "first"] = "both",
) -> xr.Dataset:
    """Keep the pairs acquired by the given missions, satellites or sensors.

    Parameters
    ----------
    ds
        An ITS_LIVE cube holding the needed per-pair variables (``mission_img1/2``,
        ``satellite_img1/2``, ``sensor_img1/2``).
    missions
        ``"L"``/``"landsat"``, ``"S"``/``"sentinel"``.
    satellites
        Platform codes, matched as prefixes, case-insensitive: ``"L8"``, ``"Landsat 9"``,
        ``"S2"`` (S2A and S2B), ``"Sentinel-1A"``; or the cube's raw ``satellite_img`` values
        (``"8"``, ``"2A"``).
    sensors
        The cube's ``sensor_img`` codes (``"MSI"``, ``"O"``, ``"E"``, ``"T"``, ``"C"``) or the
        names ``"OLI"``, ``"ETM+"``, ``"TM"``, ``"SAR"``.
    images
        Which images must match: ``"both"`` (default), ``"either"``, or ``"first"``.

    Returns
    -------
    xarray.Dataset
        The matching pairs (``isel`` on ``mid_date``; the pixel data stays lazy).

    Raises
    ------
    MissingVariableError
        The needed per-pair variables were dropped (e.g. by ``open_cube(variables=...)``).
    EmptySelectionError
        No pair matches; the message lists the values the cube has.
    """
    keep = np.ones(ds.sizes[PAIR_DIM], dtype=bool)
    found: list[str] = []
    if missions is not None:
        _require(ds, _MISSION_VARS, "missions")
        wanted = {_norm_platform(m)[:1] for m in _as_list(missions)}
        first, second = (np.isin(_strings(ds, n), list(wanted)) for n in _MISSION_VARS)
        keep &= _pair_match(first, second, images)
        found.append(f"missions {_shown(_strings(ds, _MISSION_VARS[0]))}")
    if satellites is not None:
        wanted = [_norm_platform(s) for s in _as_list(satellites)]
        _require(ds, _SATELLITE_VARS, "satellites")
        raw = [_strings(ds, n) for n in _SATELLITE_VARS]
        have_missions = all(n in ds.variables for n in _MISSION_VARS)
        codes = platform_codes(ds) if have_missions else tuple(_infer_platform(r) for r in raw)
        matches = []
        for code, value in zip(codes, raw, strict=True):
            hit = np.zeros(code.shape, dtype=bool)
            for w in wanted:
                hit |= np.array([c.startswith(w) for c in code.tolist()]) | (value == w)
            matches.append(hit)
        keep &= _pair_match(matches[0], matches[1], images)
        found.append(f"satellites {_shown(np.concatenate(codes))}")
    if sensors is not None:
        _require(ds, _SENSOR_VARS, "sensors")
        wanted = {_SENSOR_ALIASES.get(_norm(s), _norm(s)) for s in _as_list(sensors)}
        first, second = (np.isin(_strings(ds, n), list(wanted)) for n in _SENSOR_VARS)
        keep &= _pair_match(first, second, images)
        found.append(f"sensors {_shown(_strings(ds, _SENSOR_VARS[0]))}")
    if not keep.any():
        raise EmptySelectionError(
            f"no pair matches missions={missions!r}, satellites={satellites!r}, "
            f"sensors={sensors!r} (images={images!r}); the cube has {'; '.join(found)}. "
            "Pick values among those."
        )
    return ds.isel({PAIR_DIM: np.flatnonzero(keep)}) if not keep.all() else ds


def _to_datetime64(value: Any, name: str) -> np.datetime64 | None:
    if value is None:
        return None
    try:
        return np.datetime64(value, "ns")
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(
            f"{name} must be a date (e.g. '2018-01-01' or numpy.datetime64), got {name}={value!r}"
        ) from err


def select_dates(
    ds: xr.Dataset,
    start: Any = None,
    end: Any = None,
    *,
    by: Literal["mid_date", "acquisition"] = "mid_date",
) -> xr.Dataset:
    """Keep the pairs within a date range.

    Parameters
    ----------
    start, end
        Inclusive bounds (strings like ``"2018-01-01"`` or datetime64); ``None`` is open.
    by
        ``"mid_date"``: the pair's middle date is in the range; ``"acquisition"``: both images
        were acquired in it.
    """
    t0, t1 = _to_datetime64(start, "start"), _to_datetime64(end, "end")
    if t0 is not None and t1 is not None and t0 > t1:
        raise InvalidParameterError(f"start={start!r} is after end={end!r}; swap them")
    if by == "mid_date":
        first = last = ds[PAIR_DIM].values
    elif by == "acquisition":
        first = ds["acquisition_date_img1"].values
        last = ds["acquisition_date_img2"].values
    else:
        raise InvalidParameterError(f"by must be 'mid_date' or 'acquisition', got by={by!r}")
    keep = np.ones(ds.sizes[PAIR_DIM], dtype=bool)
    if t0 is not None:
        keep &= first >= t0
    if t1 is not None:
        keep &= last <= t1
    if not keep.any():
        dates = ds[PAIR_DIM].values
        raise EmptySelectionError(
            f"no pair between start={start!r} and end={end!r} (by={by!r}); the cube's pairs "
            f"run from {str(dates.min())[:10]} to {str(dates.max())[:10]}"
        )
    return ds.isel({PAIR_DIM: np.flatnonzero(keep)}) if not keep.all() else ds


def baseline_days(ds: xr.Dataset) -> np.ndarray:
    """Each pair's temporal baseline in days, ``acquisition_date_img2 - img1``.

    The pair dates are always kept by :func:`xr_itslive.open_cube`; ``date_dt`` holds the
    same value rounded to float32.
    """
    if "acquisition_date_img1" in ds.coords or "acquisition_date_img1" in ds.variables:
        span = ds["acquisition_date_img2"].values - ds["acquisition_date_img1"].values
        return span / np.timedelta64(1, "D")
    if "date_dt" in ds.variables:
        values = np.asarray(ds["date_dt"].values)
        if np.issubdtype(values.dtype, np.timedelta64):
            return values / np.timedelta64(1, "D")
        return values.astype(float)
    raise MissingVariableError(
        "the temporal baseline needs acquisition_date_img1/2 or date_dt, and the cube has "
        f"neither (it has {sorted(map(str, ds.variables))}); open it with xr_itslive.open_cube"
    )


def select_baseline(
    ds: xr.Dataset, min_days: float | None = None, max_days: float | None = None
) -> xr.Dataset:
    """Keep the pairs whose temporal baseline is within ``[min_days, max_days]``."""
    if min_days is not None and max_days is not None and min_days > max_days:
        raise InvalidParameterError(
            f"min_days={min_days!r} is larger than max_days={max_days!r}; swap them"
        )
    dt = baseline_days(ds)
    keep = np.ones(dt.shape, dtype=bool)
    if min_days is not None:
        keep &= dt >= min_days
    if max_days is not None:
        keep &= dt <= max_days
    if not keep.any():
        raise EmptySelectionError(
            f"no pair has a baseline between min_days={min_days!r} and max_days={max_days!r}; "
            f"the cube's baselines run from {np.nanmin(dt):.1f} to {np.nanmax(dt):.1f} days"
        )
    return ds.isel({PAIR_DIM: np.flatnonzero(keep)}) if not keep.all() else ds


def valid_fraction(ds: xr.Dataset, variable: str = "v", within: Any = None) -> xr.DataArray:
    """Per pair, the fraction of pixels (of ``within``, default all) where ``variable`` is valid.

    Lazy on dask input: a ``(mid_date,)`` reduction over ``y, x``.
    """
    if variable not in ds.data_vars:
        raise MissingVariableError(
            f"variable {variable!r} not found; the cube has {sorted(map(str, ds.data_vars))}. "
            "Pass variable= one of them (or keep it in open_cube(variables=...))."
        )
    valid = ds[variable].notnull()
    if within is not None:
        from .glaciers import glacier_mask

        mask = within if isinstance(within, xr.DataArray) else glacier_mask(ds, within)
        total = int(mask.sum())
        if total == 0:
            raise EmptySelectionError("within= selects no pixel of the cube")
        return (valid & mask).sum(("y", "x")) / total
    return valid.sum(("y", "x")) / (ds.sizes["y"] * ds.sizes["x"])


def select_valid_fraction(
    ds: xr.Dataset,
    min_fraction: float,
    *,
    variable: str = "v",
    within: Any = None,
    drop: bool = True,
) -> xr.Dataset:
    """Keep the pairs where at least ``min_fraction`` of the pixels hold valid data.

    Parameters
    ----------
    min_fraction
        Between 0 and 1.
    variable
        The variable whose validity counts.
    within
        Count only these pixels: a boolean ``(y, x)`` DataArray or a glacier outline.
    drop
        ``True``: drop the other pairs; this computes the per-pair fraction (reads
        ``variable`` once). ``False``: stay lazy and set the other pairs' ``(y, x)``
        variables to NaN instead.
    """
    if not 0.0 <= float(min_fraction) <= 1.0:
        raise InvalidParameterError(
            f"min_fraction is a fraction of pixels between 0 and 1, got {min_fraction!r}"
        )
    fraction = valid_fraction(ds, variable, within)
    keep = fraction >= min_fraction
    if not drop:
        out = ds.copy()
        for name, var in ds.data_vars.items():
            if PAIR_DIM in var.dims and np.issubdtype(var.dtype, np.floating):
                out[name] = var.where(keep)
        return out
    keep = np.asarray(keep.values)
    if not keep.any():
        best = float(np.nanmax(fraction.values)) if fraction.size else 0.0
        raise EmptySelectionError(
            f"no pair has a valid-pixel fraction of {variable!r} >= {min_fraction}; the best "
            f"pair has {best:.3f}. Lower min_fraction, or count only glacier pixels with within="
        )
    return ds.isel({PAIR_DIM: np.flatnonzero(keep)}) if not keep.all() else ds


def filter_pairs(
    ds: xr.Dataset,
    *,
    missions: str | Iterable[str] | None = None,
    satellites: str | Iterable[str] | None = None,
    sensors: str | Iterable[str] | None = None,
    start: Any = None,
    end: Any = None,
    min_days: float | None = None,
    max_days: float | None = None,
    min_valid_fraction: float | None = None,
    variable: str = "v",
    within: Any = None,
) -> xr.Dataset:
    """All pair filters at once; see :func:`select_platforms`, :func:`select_dates`,
    :func:`select_baseline` and :func:`select_valid_fraction`.

    The cheap filters run first, so the valid-fraction reduction reads only the pairs left.

    Examples
    --------
    >>> ds2 = filter_pairs(ds, satellites=["L8", "S2"], max_days=64)  # doctest: +SKIP
    """
    if any(v is not None for v in (missions, satellites, sensors)):
        ds = select_platforms(ds, missions, satellites, sensors)
    if start is not None or end is not None:
        ds = select_dates(ds, start, end)
    if min_days is not None or max_days is not None:
        ds = select_baseline(ds, min_days, max_days)
    if min_valid_fraction is not None:
        ds = select_valid_fraction(ds, min_valid_fraction, variable=variable, within=within)
    return ds
