"""Pair filters of ITS_LIVE cubes: missions, satellites, sensors, dates, baselines, validity.

They read only the small per-pair variables and coordinates, then select pairs with
``isel``. The valid-fraction filter needs a reduction over the pixels; it says so and offers
a lazy form.

Missions, satellites and sensors are names of one table, :data:`VOCABULARY`, built on
ITS_LIVE's stored values (:data:`INSTRUMENTS`) and compared exactly: ``missions="S1"`` is
Sentinel-1 alone, ``"L"`` all Landsat, ``sensors="SAR"`` Sentinel-1 and ``"OLI"`` Landsat
8/9. A name that is unknown, ambiguous (:data:`AMBIGUOUS`) or of another kind is refused
with the list of valid ones.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import xarray as xr

from ..errors import (
    EmptySelectionError,
    InvalidParameterError,
    MissingVariableError,
    renamed_parameters,
)
from ..io.format import PAIR_DIM
from .design import to_datetime64
from .masks import glacier_mask

_SATELLITE_VARS = ("satellite_img1", "satellite_img2")
_SENSOR_VARS = ("sensor_img1", "sensor_img2")
_IMAGES = ("both", "either", "first")


# --------------------------------------------------------------------------- vocabulary

#: ITS_LIVE's images as stored in a cube: ``(satellite_img, mission_img, sensor_img, platform,
#: instrument)``. The satellite value alone names the platform; the sensor value only means
#: something with it ('C' is Landsat 8/9 OLI-TIRS *and* Sentinel-1 C-band SAR). Sentinel-1C
#: and -2C (launched 2024) follow ITS_LIVE's pattern but are not in the cubes seen here.
INSTRUMENTS: tuple[tuple[str, str, str, str, str], ...] = (
    ("4", "L", "T", "Landsat 4", "TM"),
    ("5", "L", "T", "Landsat 5", "TM"),
    ("7", "L", "E", "Landsat 7", "ETM+"),
    ("8", "L", "C", "Landsat 8", "OLI-TIRS"),
    ("8", "L", "O", "Landsat 8", "OLI"),
    ("9", "L", "C", "Landsat 9", "OLI-TIRS"),
    ("9", "L", "O", "Landsat 9", "OLI"),
    ("1A", "S", "C", "Sentinel-1A", "C-band SAR"),
    ("1B", "S", "C", "Sentinel-1B", "C-band SAR"),
    ("1C", "S", "C", "Sentinel-1C", "C-band SAR"),
    ("2A", "S", "MSI", "Sentinel-2A", "MSI"),
    ("2B", "S", "MSI", "Sentinel-2B", "MSI"),
    ("2C", "S", "MSI", "Sentinel-2C", "MSI"),
)

#: Every ITS_LIVE ``satellite_img`` value, in the order messages list them.
SATELLITES: tuple[str, ...] = tuple(dict.fromkeys(row[0] for row in INSTRUMENTS))

_Images = frozenset[tuple[str, str]]  # (satellite_img, sensor_img) as stored


class Name(NamedTuple):
    """One name of :data:`VOCABULARY`: its spellings, the images it selects, its meaning."""

    spellings: tuple[str, ...]
    images: _Images
    meaning: str


def _rows(satellites: Iterable[str] = SATELLITES, sensors: Iterable[str] | None = None) -> _Images:
    wanted, codes = set(satellites), None if sensors is None else set(sensors)
    return frozenset(
        (row[0], row[2])
        for row in INSTRUMENTS
        if row[0] in wanted and (codes is None or row[2] in codes)
    )


_S1 = ("1A", "1B", "1C")
_S2 = ("2A", "2B", "2C")
_LANDSAT = ("4", "5", "7", "8", "9")


def _short(satellite: str) -> str:
    return ("L" if satellite.isdigit() else "S") + satellite


def _satellite_name(satellite: str) -> Name:
    family = "landsat" if satellite.isdigit() else "sentinel"
    spellings = (satellite.lower(), _short(satellite).lower(), family + satellite.lower())
    platform = next(row[3] for row in INSTRUMENTS if row[0] == satellite)
    return Name(spellings, _rows([satellite]), platform)


#: The names a selection accepts, by kind. Spellings are compared after
#: :func:`normalize_name` (lower case, no blanks, '-' or '_') and exactly: never as prefixes
#: or substrings, which is how 'S1' once matched Sentinel-2 and 'SAR' Landsat 8/9.
VOCABULARY: dict[str, dict[str, Name]] = {
    "mission": {
        # the original notebook's 'S1' and 'L'
        "S1": Name(("s1", "sentinel1"), _rows(_S1), "Sentinel-1"),
        "S2": Name(("s2", "sentinel2"), _rows(_S2), "Sentinel-2"),
        "L": Name(("l", "landsat"), _rows(_LANDSAT), "all Landsat"),
        # ITS_LIVE's own mission_img value: radar and optical together
        "S": Name(("s", "sentinel"), _rows(_S1 + _S2), "Sentinel-1 and -2"),
    },
    "satellite": {_short(sat): _satellite_name(sat) for sat in SATELLITES},
    "sensor": {
        "SAR": Name(("sar", "csar", "cbandsar", "radar"), _rows(_S1), "Sentinel-1"),
        "MSI": Name(("msi",), _rows(_S2), "Sentinel-2"),
        # OLI is on Landsat 8/9 whether ITS_LIVE stored 'C' (with TIRS) or 'O' (without)
        "OLI": Name(("oli",), _rows(("8", "9")), "Landsat 8/9"),
        "OLI-TIRS": Name(("olitirs",), _rows(("8", "9"), {"C"}), "Landsat 8/9 stored as 'C'"),
        "O": Name(("o",), _rows(("8", "9"), {"O"}), "Landsat 8/9 OLI without TIRS"),
        "ETM+": Name(("etm+", "etm", "e"), _rows(("7",)), "Landsat 7"),
        "TM": Name(("tm", "t"), _rows(("4", "5")), "Landsat 4/5"),
        "optical": Name(("optical",), _rows(_LANDSAT + _S2), "Landsat and Sentinel-2"),
    },
}

#: Spellings refused because they mean more than one thing, with the reason.
AMBIGUOUS: dict[str, str] = {
    "c": (
        "ITS_LIVE stores sensor 'C' for both Landsat 8/9 OLI-TIRS and Sentinel-1 C-band SAR; "
        "pass 'OLI-TIRS' (or 'OLI' for all Landsat 8/9) or 'SAR'"
    ),
}

#: Which kinds of names each parameter takes (a mission is a group of satellites).
_ACCEPTS = {
    "missions": ("mission",),
    "satellites": ("satellite", "mission"),
    "sensors": ("sensor",),
}
_PARAMETER_OF = {"mission": "missions", "satellite": "satellites", "sensor": "sensors"}
_SPELLED = {
    "missions": "'Sentinel-1', 'sentinel2', 'Landsat'",
    "satellites": "'Landsat 8', 'Sentinel-2A', or the cube's own '8', '2A'",
    "sensors": "'C-SAR', 'radar', 'ETM', or ITS_LIVE's codes 'MSI', 'E', 'T'",
}

_LOOKUP: dict[str, tuple[str, str, _Images]] = {
    spelling: (kind, shown, name.images)
    for kind, names in VOCABULARY.items()
    for shown, name in names.items()
    for spelling in name.spellings
}


def normalize_name(value: Any) -> str:
    """A user's or a cube's spelling in the form :data:`VOCABULARY` compares: decoded from
    bytes, lower case, without blanks, ``-`` or ``_``.

    Parameters
    ----------
    value
        A name such as ``"Sentinel-1"``, ``b"2A"`` or ``8``.

    Returns
    -------
    str
        E.g. ``"sentinel1"``, ``"2a"``, ``"8"``.
    """
    text = value.decode() if isinstance(value, bytes) else str(value)
    return re.sub(r"[\s_\-]", "", text).lower()


def _valid_names(parameter: str) -> str:
    parts = []
    for kind in _ACCEPTS[parameter]:
        if kind == "satellite":  # their names say what they are
            names = ", ".join(repr(shown) for shown in VOCABULARY[kind])
        else:
            names = ", ".join(f"{s!r} ({n.meaning})" for s, n in VOCABULARY[kind].items())
        parts.append(f"valid {kind}s: {names}")
    return (
        "; ".join(parts) + f" (also spelled e.g. {_SPELLED[parameter]}; case, blanks, '-' and "
        "'_' do not matter)"
    )


def resolve_names(parameter: str, values: Any) -> frozenset[tuple[str, str]]:
    """The ITS_LIVE images that a selection of ``missions``, ``satellites`` or ``sensors`` means.

    Parameters
    ----------
    parameter
        ``"missions"``, ``"satellites"`` or ``"sensors"``.
    values
        One name or several (their union), in any spelling of :data:`VOCABULARY`.

    Returns
    -------
    frozenset of (str, str)
        ``(satellite_img, sensor_img)`` values as ITS_LIVE stores them, e.g. ``("1A", "C")``.

    Raises
    ------
    InvalidParameterError
        A name is unknown, ambiguous or of another kind; the message lists the valid names.

    Examples
    --------
    >>> sorted(resolve_names("missions", "S1"))
    [('1A', 'C'), ('1B', 'C'), ('1C', 'C')]
    """
    if parameter not in _ACCEPTS:
        raise InvalidParameterError(
            f"parameter must be one of {list(_ACCEPTS)}, got parameter={parameter!r}"
        )
    scalar = isinstance(values, str | bytes) or not isinstance(values, Iterable)
    given = [values] if scalar else list(values)
    if not given:
        raise InvalidParameterError(f"{parameter}={values!r} selects nothing; pass None for all")
    images: set[tuple[str, str]] = set()
    for value in given:
        shown = value.decode() if isinstance(value, bytes) else value
        key = normalize_name(value)
        if key in AMBIGUOUS:
            raise InvalidParameterError(
                f"{parameter}={shown!r} is ambiguous: {AMBIGUOUS[key]}. {_valid_names(parameter)}"
            )
        kind, _, found = _LOOKUP.get(key, (None, None, frozenset()))
        if kind is None:
            raise InvalidParameterError(
                f"{parameter}={shown!r} is not a name xr_itslive knows; {_valid_names(parameter)}"
            )
        if kind not in _ACCEPTS[parameter]:
            raise InvalidParameterError(
                f"{parameter}={shown!r}: {shown!r} is a {kind}: pass {_PARAMETER_OF[kind]}="
                f"{shown!r}. {_valid_names(parameter)}"
            )
        images |= found
    return frozenset(images)


def _needs_sensor(images: frozenset[tuple[str, str]]) -> bool:
    """Whether the selection splits a satellite by sensor code (Landsat 8/9 'C' vs 'O')."""
    return any(
        (sat, code) not in images for sat, code in _rows() if any(kept == sat for kept, _ in images)
    )


def _values(ds: xr.Dataset, name: str) -> np.ndarray:
    """A per-pair string variable as ``str`` objects, stripped and upper-cased. Writers store
    ``<U``, object, StringDType or bytes (the bundled subset has ``b'2A'``: ``str()`` would
    give ``"b'2A'"``)."""
    values = np.asarray(ds[name].values)
    unique, inverse = np.unique(values.astype(object), return_inverse=True)
    decoded = [
        (v.decode() if isinstance(v, bytes) else str(v)).strip().upper() for v in unique.tolist()
    ]
    return np.array(decoded, dtype=object)[inverse.reshape(values.shape)]


def _satellite_values(ds: xr.Dataset, name: str) -> np.ndarray:
    """``satellite_img`` as ITS_LIVE's codes; a writer's 'L8' or 'S2A' becomes '8', '2A'."""
    raw = _values(ds, name)
    unique, inverse = np.unique(raw, return_inverse=True)
    codes = []
    for value in unique.tolist():
        kind, _, images = _LOOKUP.get(normalize_name(value), (None, None, frozenset()))
        single = {sat for sat, _ in images}
        codes.append(single.pop() if kind == "satellite" and len(single) == 1 else value)
    return np.array(codes, dtype=object)[inverse]


def platform_codes(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair platform codes of both images, e.g. ``'l8'``, ``'s2a'``, ``'s1b'`` (lower case).

    Parameters
    ----------
    ds
        An ITS_LIVE cube with ``satellite_img1`` and ``satellite_img2``.

    Returns
    -------
    tuple of numpy.ndarray
        The codes of image 1 and image 2; a value ITS_LIVE does not use stays as stored
        (lower case).
    """
    _require(ds, _SATELLITE_VARS, "satellites")
    return tuple(  # type: ignore[return-value]
        np.array(
            [_short(s).lower() if s in SATELLITES else s.lower() for s in _satellite_values(ds, n)],
            dtype=object,
        )
        for n in _SATELLITE_VARS
    )


def filter_variables(
    missions: Any = None,
    satellites: Any = None,
    sensors: Any = None,
    *,
    images: Literal["both", "either", "first"] = "both",
    min_valid_fraction: float | None = None,
    variable: str = "v",
) -> list[str]:
    """The cube variables that :func:`filter_pairs` needs for these filters.

    For opening only what a filter reads, e.g. ``open_cube(url, variables=["vx", "vy",
    *filter_variables(missions="S1")])``. The pair dates are always kept by ``open_cube``.

    Parameters
    ----------
    missions, satellites, sensors, images
        As in :func:`select_platforms`.
    min_valid_fraction, variable
        As in :func:`filter_pairs`: the fraction is counted on ``variable``.

    Returns
    -------
    list of str
        E.g. ``["satellite_img1", "satellite_img2"]``.

    Raises
    ------
    InvalidParameterError
        A name is unknown or ambiguous (as :func:`select_platforms`).
    """
    if images not in _IMAGES:
        raise InvalidParameterError(
            f"images must be 'both', 'either' or 'first', got images={images!r}"
        )
    count = 1 if images == "first" else 2
    needed: list[str] = []
    selections = {"missions": missions, "satellites": satellites, "sensors": sensors}
    chosen = [resolve_names(k, v) for k, v in selections.items() if v is not None]
    if chosen:
        needed += list(_SATELLITE_VARS[:count])
        if _needs_sensor(frozenset.intersection(*chosen)):
            needed += list(_SENSOR_VARS[:count])
    if min_valid_fraction is not None:
        needed.append(variable)
    return needed


def _require(ds: xr.Dataset, names: Sequence[str], purpose: str) -> None:
    missing = [n for n in names if n not in ds.variables]
    if missing:
        raise MissingVariableError(
            f"filtering by {purpose} needs the per-pair variables {list(names)}, and {missing} "
            f"are not in this cube (it has {sorted(map(str, ds.data_vars))}). "
            "open_cube(variables=[...]) keeps only the variables listed: add "
            f"{', '.join(repr(n) for n in names)} to variables=."
        )


def _pair_match(first: np.ndarray, second: np.ndarray | None, images: str) -> np.ndarray:
    if images == "first" or second is None:
        return first
    return first & second if images == "both" else first | second


def select_platforms(
    ds: xr.Dataset,
    missions: str | Iterable[str] | None = None,
    satellites: str | Iterable[str] | None = None,
    sensors: str | Iterable[str] | None = None,
    *,
    images: Literal["both", "either", "first"] = "both",
) -> xr.Dataset:
    """Keep the pairs acquired by the given missions, satellites or sensors.

    Names follow ITS_LIVE's own values and the original notebook's spellings, compared
    exactly (case, blanks, ``-`` and ``_`` aside); see :data:`VOCABULARY`. Several names in
    one parameter are a union; the parameters given together must all hold, image by image.

    Parameters
    ----------
    ds
        An ITS_LIVE cube holding ``satellite_img1/2`` (only ``satellite_img1`` with
        ``images="first"``); ``sensor_img1/2`` too for ``sensors="OLI-TIRS"`` or ``"O"``.
    missions
        ``"S1"`` (Sentinel-1 only), ``"S2"`` (Sentinel-2), ``"L"`` (all Landsat), or ITS_LIVE's
        ``mission_img`` value ``"S"`` (Sentinel-1 and -2); also ``"Sentinel-1"``,
        ``"landsat"``...
    satellites
        ``"L4"`` .. ``"L9"``, ``"S1A"``, ``"S2B"``..., also ``"Landsat 8"``,
        ``"Sentinel-2A"`` or the cube's ``satellite_img`` values (``"8"``, ``"2A"``); or a
        mission name (``"S2"``: S2A, S2B and S2C).
    sensors
        ``"SAR"`` (Sentinel-1's C-band SAR), ``"MSI"`` (Sentinel-2), ``"OLI"`` (Landsat 8/9),
        ``"ETM+"`` (Landsat 7), ``"TM"`` (Landsat 4/5), ``"optical"`` (all but Sentinel-1);
        ITS_LIVE's codes ``"E"``, ``"T"``, ``"O"`` (OLI without TIRS) and ``"OLI-TIRS"`` (its
        ``"C"`` on Landsat). ``"C"`` alone is refused: it is ITS_LIVE's code for both
        Landsat 8/9 and Sentinel-1.
    images
        Which images must match: ``"both"`` (default), ``"either"``, or ``"first"``.

    Returns
    -------
    xarray.Dataset
        The matching pairs (``isel`` on ``mid_date``; the pixel data stays lazy).

    Raises
    ------
    InvalidParameterError
        A name is unknown, ambiguous or of another kind (a satellite given as a mission...);
        the message lists the valid names.
    MissingVariableError
        The needed per-pair variables were dropped (e.g. by ``open_cube(variables=...)``).
    EmptySelectionError
        No pair matches; the message lists the satellites the cube has.

    Examples
    --------
    >>> s1 = select_platforms(ds, missions="S1")  # doctest: +SKIP
    >>> oli = select_platforms(ds, sensors="OLI", images="either")  # doctest: +SKIP
    """
    needed = filter_variables(missions, satellites, sensors, images=images)  # checks the names
    selections = {"missions": missions, "satellites": satellites, "sensors": sensors}
    chosen = [resolve_names(k, v) for k, v in selections.items() if v is not None]
    if not chosen:
        return ds
    wanted = frozenset.intersection(*chosen)
    count = 1 if images == "first" else 2
    missing = [n for n in needed if n not in ds.variables]
    if missing:
        given = ", ".join(f"{k}={v!r}" for k, v in selections.items() if v is not None)
        hint = ""
        if all(name.endswith("2") for name in missing):
            hint = (
                " A cube with only the first image's variables (such as the bundled demo cube) "
                "can be selected on that image: images='first'."
            )
        raise MissingVariableError(
            f"filtering by {given} needs the per-pair variables {needed}, and {missing} are "
            f"not in this cube (it has {sorted(map(str, ds.data_vars))}). "
            "open_cube(variables=[...]) keeps only the variables listed: add "
            f"{', '.join(repr(n) for n in needed)} to variables=.{hint}"
        )
    with_sensor = _SENSOR_VARS[0] in needed
    by_satellite = {sat for sat, _ in wanted}
    matches: list[np.ndarray] = []
    seen: set[str] = set()
    unknown: set[str] = set()
    for i in range(count):
        satellite = _satellite_values(ds, _SATELLITE_VARS[i])
        seen |= set(satellite.tolist())
        unknown |= set(satellite.tolist()) - set(SATELLITES)
        if with_sensor:
            sensor = _values(ds, _SENSOR_VARS[i])
            keys = np.char.add(satellite.astype(str), np.char.add("/", sensor.astype(str)))
            hit = np.isin(keys, [f"{sat}/{code}" for sat, code in wanted])
        else:
            hit = np.isin(satellite.astype(str), sorted(by_satellite))
        matches.append(hit)
    if unknown:
        warnings.warn(
            f"the cube holds satellite codes {sorted(unknown)} that are not ITS_LIVE's "
            f"{list(SATELLITES)}; no selection keeps them",
            UserWarning,
            stacklevel=2,
        )
    keep = _pair_match(matches[0], matches[1] if count == 2 else None, images)
    if not keep.any():
        have = sorted({_short(s) if s in SATELLITES else s for s in seen})
        raise EmptySelectionError(
            f"no pair matches missions={missions!r}, satellites={satellites!r}, "
            f"sensors={sensors!r} (images={images!r}); the cube's images come from {have}. "
            "Pick values among those."
        )
    return ds.isel({PAIR_DIM: np.flatnonzero(keep)}) if not keep.all() else ds


@renamed_parameters(start="pairs_start", end="pairs_end")
def select_dates(
    ds: xr.Dataset,
    pairs_start: Any = None,
    pairs_end: Any = None,
    *,
    by: Literal["mid_date", "acquisition"] = "mid_date",
) -> xr.Dataset:
    """Keep the pairs within a date range.

    The bounds are ``pairs_start``/``pairs_end``, not ``start``/``end``: those name the time
    window of an inversion's grid (:func:`xr_itslive.invert`), which also drops the pairs
    reaching outside it; here nothing but the pairs is selected.

    Parameters
    ----------
    pairs_start, pairs_end
        Inclusive bounds (strings like ``"2018-01-01"`` or datetime64); ``None`` is open.
        ``start=``/``end=``, the old names, work for one more release (DeprecationWarning).
    by
        ``"mid_date"``: the pair's middle date is in the range; ``"acquisition"``: both images
        were acquired in it.
    """
    start, end = pairs_start, pairs_end
    t0, t1 = to_datetime64(start, "pairs_start"), to_datetime64(end, "pairs_end")
    if t0 is not None and t1 is not None and t0 > t1:
        raise InvalidParameterError(f"pairs_start={start!r} is after pairs_end={end!r}; swap them")
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
            f"no pair between pairs_start={start!r} and pairs_end={end!r} (by={by!r}); the "
            "cube's pairs "
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


@renamed_parameters(within="mask")
def valid_fraction(ds: xr.Dataset, variable: str = "v", mask: Any = None) -> xr.DataArray:
    """Per pair, the fraction of pixels (of ``mask``, default all) where ``variable`` is valid.

    Parameters
    ----------
    ds
        An ITS_LIVE cube.
    variable
        The variable whose validity counts.
    mask
        Count only these pixels: a boolean ``(y, x)`` DataArray or a glacier outline (as
        ``mask=`` of :func:`xr_itslive.invert`; ``within=`` is the old spelling).

    Returns
    -------
    xarray.DataArray
        ``(mid_date,)`` fractions between 0 and 1.

    Lazy on dask input: a ``(mid_date,)`` reduction over ``y, x``.
    """
    if variable not in ds.data_vars:
        raise MissingVariableError(
            f"variable {variable!r} not found; the cube has {sorted(map(str, ds.data_vars))}. "
            "Pass variable= one of them (or keep it in open_cube(variables=...))."
        )
    valid = ds[variable].notnull()
    if mask is not None:
        mask = mask if isinstance(mask, xr.DataArray) else glacier_mask(ds, mask)
        total = int(mask.sum())
        if total == 0:
            raise EmptySelectionError("mask= selects no pixel of the cube")
        return (valid & mask).sum(("y", "x")) / total
    return valid.sum(("y", "x")) / (ds.sizes["y"] * ds.sizes["x"])


@renamed_parameters(within="mask")
def select_valid_fraction(
    ds: xr.Dataset,
    min_fraction: float,
    *,
    variable: str = "v",
    mask: Any = None,
    drop: bool = True,
) -> xr.Dataset:
    """Keep the pairs where at least ``min_fraction`` of the pixels hold valid data.

    Parameters
    ----------
    min_fraction
        Between 0 and 1.
    variable
        The variable whose validity counts.
    mask
        Count only these pixels: a boolean ``(y, x)`` DataArray or a glacier outline
        (``within=`` is the old spelling).
    drop
        ``True``: drop the other pairs; this computes the per-pair fraction (reads
        ``variable`` once). ``False``: stay lazy and set the other pairs' ``(y, x)``
        variables to NaN instead.
    """
    if not 0.0 <= float(min_fraction) <= 1.0:
        raise InvalidParameterError(
            f"min_fraction is a fraction of pixels between 0 and 1, got {min_fraction!r}"
        )
    fraction = valid_fraction(ds, variable, mask)
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
            f"pair has {best:.3f}. Lower min_fraction, or count only glacier pixels with mask="
        )
    return ds.isel({PAIR_DIM: np.flatnonzero(keep)}) if not keep.all() else ds


@renamed_parameters(within="mask", start="pairs_start", end="pairs_end")
def filter_pairs(
    ds: xr.Dataset,
    *,
    missions: str | Iterable[str] | None = None,
    satellites: str | Iterable[str] | None = None,
    sensors: str | Iterable[str] | None = None,
    images: Literal["both", "either", "first"] = "both",
    pairs_start: Any = None,
    pairs_end: Any = None,
    by: Literal["mid_date", "acquisition"] = "mid_date",
    min_days: float | None = None,
    max_days: float | None = None,
    min_valid_fraction: float | None = None,
    variable: str = "v",
    mask: Any = None,
) -> xr.Dataset:
    """All pair filters at once; see :func:`~xr_itslive.geo.pairs.select_platforms`,
    :func:`~xr_itslive.geo.pairs.select_dates`, :func:`~xr_itslive.geo.pairs.select_baseline`
    and :func:`~xr_itslive.geo.pairs.select_valid_fraction`.

    The cheap filters run first, so the valid-fraction reduction reads only the pairs left.

    Parameters
    ----------
    ds
        An ITS_LIVE cube.
    missions, satellites, sensors
        Keep the pairs whose images come from these, e.g. ``missions="S1"``,
        ``satellites=["L8", "L9"]``, ``sensors="OLI"`` (see
        :func:`~xr_itslive.geo.pairs.select_platforms` for every name).
    images
        Which images of a pair must match them: ``"both"`` (default), ``"either"`` or
        ``"first"`` (for cubes holding only ``satellite_img1``, like the bundled demo cube).
    pairs_start, pairs_end
        Keep the pairs whose dates lie in this range (see
        :func:`~xr_itslive.geo.pairs.select_dates`; ``start=``/``end=``, the old names, work
        for one more release with a DeprecationWarning: they now name an inversion's window).
    by
        Which dates: ``"mid_date"`` (default) or ``"acquisition"`` (both images in the range,
        the inversion's rule).
    min_days, max_days
        Keep the pairs whose temporal baseline lies in this range, in days.
    min_valid_fraction
        Keep the pairs with at least this fraction of valid pixels of ``variable``.
    variable
        The variable whose validity ``min_valid_fraction`` counts.
    mask
        Count only these pixels for ``min_valid_fraction``: a boolean ``(y, x)`` DataArray
        or a glacier outline (``within=`` is the old spelling).

    Returns
    -------
    xarray.Dataset
        The cube with the kept pairs.

    Examples
    --------
    >>> ds2 = filter_pairs(ds, satellites=["L8", "S2"], max_days=64)  # doctest: +SKIP
    """
    if images not in _IMAGES:
        raise InvalidParameterError(
            f"images must be 'both', 'either' or 'first', got images={images!r}"
        )
    if any(v is not None for v in (missions, satellites, sensors)):
        ds = select_platforms(ds, missions, satellites, sensors, images=images)
    if pairs_start is not None or pairs_end is not None:
        ds = select_dates(ds, pairs_start, pairs_end, by=by)
    if min_days is not None or max_days is not None:
        ds = select_baseline(ds, min_days, max_days)
    if min_valid_fraction is not None:
        ds = select_valid_fraction(ds, min_valid_fraction, variable=variable, mask=mask)
    return ds
