"""Pair filters of ITS_LIVE cubes: missions, satellites, sensors, dates, baselines, validity.

They read only the small per-pair variables and coordinates, then select pairs with
``isel``. The valid-fraction filter needs a reduction over the pixels; it says so and offers
a lazy form.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from ..errors import (
    EmptySelectionError,
    InvalidParameterError,
    MissingVariableError,
    renamed_parameters,
)
from ..io.format import PAIR_DIM
from .masks import glacier_mask

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


@renamed_parameters(within="mask")
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
        Keep the pairs whose two images come from these (see
        :func:`~xr_itslive.geo.pairs.select_platforms`).
    start, end
        Keep the pairs whose ``mid_date`` lies in this range (see
        :func:`~xr_itslive.geo.pairs.select_dates`).
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
    if any(v is not None for v in (missions, satellites, sensors)):
        ds = select_platforms(ds, missions, satellites, sensors)
    if start is not None or end is not None:
        ds = select_dates(ds, start, end)
    if min_days is not None or max_days is not None:
        ds = select_baseline(ds, min_days, max_days)
    if min_valid_fraction is not None:
        ds = select_valid_fraction(ds, min_valid_fraction, variable=variable, mask=mask)
    return ds
