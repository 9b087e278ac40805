"""Annual and seasonal composites of a cube, the way ITS_LIVE makes them, lazily.

For each pixel and component, ITS_LIVE's annual composites fit one mean velocity per
calendar year and one annual sinusoid to the image pairs themselves (each pair the mean of
the model over its interval, error-weighted), then a weighted line through the annual means
of the climatology years (``v0``, ``dv_dt``) and the sinusoid again on the pairs of the
climatology window (``v_amp``, ``v_phase``). The arithmetic is in
:mod:`xr_itslive.kernels.composite`, batched over pixels (numba on the CPU, any array
namespace such as CuPy on the GPU); this module builds the shared rows once per cube, maps
the kernel over the cube's spatial chunks with :func:`xarray.apply_ufunc` and names the
outputs as ITS_LIVE's composites do. :func:`seasonal` fits the same model to an inverted
series, :func:`~xr_itslive.composite_mosaic` places the composites of several cubes of one
CRS on one grid, and :func:`composite_to_zarr` (``xr-itslive composite``) writes either resumably.

Outliers: instead of the production code's 15-point moving median and ``2 × 6 × 1.4826 ×
MAD`` cut, ``robust=True`` reweights the fit itself (Tukey's biweight, as
:func:`xr_itslive.invert` does); ``benchmarks/bench_composite.py`` compares the two on the
real cube and on a synthetic cube with outliers.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import xarray as xr

from ..crs import crs_key, cube_crs
from ..errors import EmptySelectionError, InvalidParameterError, MissingVariableError
from ..geo.design import to_datetime64
from ..geo.subset import grid_spacing
from ..io.cf import to_cf
from ..io.format import PAIR_DIM, TIME_DIM
from ..kernels import composite as kc
from ..kernels.batching import DEVICE_MEMORY_FRACTION, fixed_batch_size, free_device_bytes
from ..kernels.namespace import empty_like_chunk, get_namespace, is_host_numpy
from .common import ENGINES as ENGINES  # the CLI's choices, defined once in common
from .common import (
    Engine,
    apply_per_pixel,
    check_cube_sequence,
    choose_engine,
    drop_duplicated_pairs,
    fill_as_nan,
    finite_or_nan,
    input_identity,
    open_with_name,
    resolve_weights,
    robust_kind,
    shared_key,
    unwrap_shared,
    warn_untrusted,
)
from .device import call_on_device
from .invert import check_cube
from .store import WriteSummary, write_resumable

#: The composites' defaults, defined once (the accessor and the CLI read them from here).
#: ``min_obs=30`` is the production code's fewest pairs for a fit.
DEFAULTS: Mapping[str, Any] = MappingProxyType(
    {
        "variables": ("vx", "vy"),
        "climatology": (2014, 2024),
        "weights": "error",
        "robust": True,
        "min_obs": 30,
        "min_year_obs": 3,
    }
)

__all__ = [
    "DEFAULTS",
    "composite",
    "composite_mosaic",
    "composite_to_zarr",
    "decimal_years",
    "seasonal",
]


def decimal_years(dates: Any) -> np.ndarray:
    """Dates as decimal years, every calendar year one unit long (2024-07-02T00:00 → 2024.5).

    Parameters
    ----------
    dates
        Anything ``numpy.datetime64`` reads.

    Returns
    -------
    numpy.ndarray
        float64, NaN for NaT.

    Examples
    --------
    >>> float(decimal_years(np.datetime64("2023-07-02T12:00"))[()])
    2023.5
    """
    d = np.asarray(dates, dtype="datetime64[ns]")
    year = d.astype("datetime64[Y]")
    start = year.astype("datetime64[ns]")
    length = ((year + 1).astype("datetime64[ns]") - start).astype(np.int64)
    out = year.astype(np.int64) + 1970 + (d - start).astype(np.int64) / length
    return np.where(np.isnat(d), np.nan, out)


def _year_start(year: int) -> np.datetime64:
    return np.datetime64(f"{year:04d}-01-01", "ns")


def _check_climatology(climatology: Any) -> tuple[int, int]:
    try:
        first, last = climatology
        ok = float(first) == int(first) and float(last) == int(last) and int(first) <= int(last)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidParameterError(
            f"climatology must be (first_year, last_year), both included, first <= last; got "
            f"climatology={climatology!r}; e.g. climatology=(2014, 2024) (ITS_LIVE's 2025 "
            "release)"
        )
    return int(first), int(last)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {name}={value!r}")
    return int(value)


@dataclass(frozen=True)
class _Setup:
    design: kc.CompositeDesign
    kept: np.ndarray
    first_year: int
    window: tuple[int, int]
    center: np.datetime64
    n_dropped: int


def _setup(ds: xr.Dataset, start: Any, end: Any, climatology: Any, center_date: Any) -> _Setup:
    """The years, the pairs kept and their shared rows; every check of the dates."""
    window = _check_climatology(climatology)
    img1 = np.asarray(ds["acquisition_date_img1"].values, dtype="datetime64[ns]")
    img2 = np.asarray(ds["acquisition_date_img2"].values, dtype="datetime64[ns]")
    valid = img2 > img1
    if not valid.any():
        raise EmptySelectionError(
            "no image pair has acquisition_date_img2 > acquisition_date_img1; check the "
            "cube's acquisition dates"
        )
    if (~valid).any():
        warnings.warn(
            f"{int((~valid).sum())} pairs have acquisition_date_img2 <= acquisition_date_img1 "
            "(or a missing date) and are dropped",
            UserWarning,
            stacklevel=3,
        )
    lo = to_datetime64(start, "start") if start is not None else None
    hi = to_datetime64(end, "end") if end is not None else None
    if lo is not None and hi is not None and hi <= lo:
        raise InvalidParameterError(
            f"start must be before end, got start={start!r} and end={end!r}; swap them"
        )
    kept = valid.copy()
    if lo is not None:
        kept &= img1 >= lo
    if hi is not None:
        kept &= img2 <= hi
    if not kept.any():
        raise EmptySelectionError(
            f"no image pair lies inside start={start!r}..end={end!r} (pairs span "
            f"{np.datetime_as_string(img1[valid].min(), 'D')}.."
            f"{np.datetime_as_string(img2[valid].max(), 'D')}); widen start/end"
        )
    t1 = decimal_years(img1[kept])
    t2 = decimal_years(img2[kept])
    first_year = int(np.floor(decimal_years(lo))) if lo is not None else int(np.floor(t1.min()))
    # a pair ending at 00:00 on January 1 does not reach into that year
    last_time = hi if hi is not None else img2[kept].max()
    last_year = int(np.floor(decimal_years(last_time - np.timedelta64(1, "ns"))))
    n_years = last_year - first_year + 1
    mid = 0.5 * (t1 + t2)
    in_window = (mid >= window[0]) & (mid < window[1] + 1)
    if not in_window.any():
        raise EmptySelectionError(
            f"no pair has its mid-date in the climatology years {window[0]}-{window[1]}: the "
            f"pairs' mid-dates span {mid.min():.2f}-{mid.max():.2f}. Pass climatology=(first, "
            f"last) years inside the data, e.g. climatology=({int(np.floor(mid.min()))}, "
            f"{int(np.floor(mid.max()))})"
        )
    if center_date is None:
        center = 0.5 * (window[0] + window[1] + 1)  # the middle of the window
    else:
        center = float(decimal_years(to_datetime64(center_date, "center_date")))
        span = (float(t1.min()), float(t2.max()))
        inside_window = window[0] <= center < window[1] + 1
        if not (inside_window and span[0] <= center <= span[1]):
            raise InvalidParameterError(
                f"center_date={center_date!r} lies outside "
                + (
                    f"the climatology window {window[0]}-01-01..{window[1]}-12-31"
                    if not inside_window
                    else f"the data ({_date_text(span[0])}..{_date_text(span[1])})"
                )
                + "; the line through the annual means would be extrapolated to it. Pass a "
                "date inside both, or center_date=None for the middle of the window"
            )
    design = kc.composite_design(t1, t2, first_year, n_years, window, center)
    return _Setup(
        design=design,
        kept=kept,
        first_year=first_year,
        window=window,
        center=_from_decimal(center),
        n_dropped=int((~kept).sum()),
    )


def _from_decimal(value: float) -> np.datetime64:
    year = int(np.floor(value))
    start, stop = _year_start(year), _year_start(year + 1)
    length = (stop - start).astype(np.int64)
    return start + np.timedelta64(int(round((value - year) * length)), "ns")


def _date_text(value: float) -> str:
    return str(np.datetime_as_string(_from_decimal(value), "D"))


# --------------------------------------------------------------------------- outputs


def _output_layout(variables: Sequence[str]) -> list[tuple[str, bool, Any]]:
    """(name, per year?, dtype) of every kernel output, in the order the kernel returns them."""
    layout = []
    for name in variables:
        layout += [(name, True, np.float32), (f"{name}_error", True, np.float32)]
        layout += [(f"{name}_std", True, np.float32)]
        for stem in (f"{name}0", f"d{name}_dt", f"{name}_amp", f"{name}_phase"):
            layout += [(stem, False, np.float32), (f"{stem}_error", False, np.float32)]
    if _has_speed(variables):
        layout += [("v", True, np.float32), ("v_error", True, np.float32)]
        layout += [("v_std", True, np.float32)]
        layout += [("v_debiased", True, np.float32), ("v_significant", True, np.int32)]
        for stem in ("v0", "dv_dt", "v_amp", "v_phase"):
            layout += [(stem, False, np.float32), (f"{stem}_error", False, np.float32)]
    layout += [
        ("count", True, np.int32),
        ("count0", False, np.int32),
        ("outlier_percent", False, np.float32),
    ]
    return layout


def _has_speed(variables: Sequence[str]) -> bool:
    return "vx" in variables and "vy" in variables


def _outputs(final: dict[str, dict[str, Any]], variables: Sequence[str], xp: Any) -> list[Any]:
    keys = (("offset", "offset_error"), ("slope", "slope_error"), ("amp", "amp_error"),
            ("phase", "phase_error"))  # fmt: skip
    out = []
    parts = [final[name] for name in variables]
    if _has_speed(variables):
        parts.append(final["v"])
    for part in parts:
        out += [part["mean"], part["error"], part["std"]]
        if "debiased" in part:  # the speed's
            out += [part["debiased"], xp.astype(part["significant"], xp.int32)]
        for value, error in keys:
            out += [part[value], part[error]]
    counts = [xp.astype(final[name]["count"], xp.float64) for name in variables]
    # ITS_LIVE's count of a speed is the mean of its components' counts, rounded up
    count = xp.ceil(sum(counts) / len(counts))
    first = final[variables[0]]
    return out + [count, first["count0"], first["outlier_percent"]]


def _array_batch(n_pairs: int, n_years: int, sample: Any) -> int | None:
    """Pixels per batch of the array engine: ``$XR_ITSLIVE_ARRAY_BATCH``, else what fits
    half the free device memory (CuPy), else everything (host memory is bounded by the
    chunk)."""
    fixed = fixed_batch_size()
    if fixed is not None:
        return fixed
    free = free_device_bytes(sample)
    if free is None:
        return None
    q = n_years + 2
    # tracemalloc on numpy (5,000 pairs, 12 years, Tukey): a peak of 0.68 MB a pixel, about 17
    # float64 (pairs, pixels) arrays; 24 leaves room for CuPy's pool to fragment. The
    # (q, q) terms: normal matrix, factor, and L⁻¹ with its product for the annual stds
    per_pixel = 8 * (24 * n_pairs + 6 * q * q + 8 * n_years)
    return max(1, int(DEVICE_MEMORY_FRACTION * free // per_pixel))


def composite_block(
    *arrays: Any,
    variables: Sequence[str],
    weighted: Sequence[bool],
    options: kc.CompositeOptions,
    engine: str | None = None,
    threads: int = 1,
    lazy: bool = False,
) -> tuple[Any, ...]:
    """The composite of one block of pixels: the kernel behind :func:`composite`.

    Values that cannot be trusted are taken as missing, with one ``UserWarning`` per variable
    and block that counts them (:func:`~xr_itslive.workflows.common.warn_untrusted`, as the
    inversion's blocks do): ITS_LIVE's fill -32767 (undecoded data cast to float; for a cube
    in memory :func:`~xr_itslive.workflows.invert.check_cube` refuses it first), infinite
    values, and the observations whose weight is NaN or inf. A lazy cube's values are first
    read here, so building the graph computes nothing.

    Parameters
    ----------
    *arrays
        For each variable its values ``(..., n_pairs)``; then, for each weighted variable,
        its weights ``1 / σ²`` (``(..., n_pairs)`` or broadcastable, e.g. per pair); then
        the shared :class:`~xr_itslive.kernels.composite.CompositeDesign` (itself, or in a
        0-d object array).
    variables
        The variables' names (``vx`` and ``vy`` together add the speed).
    weighted
        Per variable, whether weights follow.
    options
        The shared settings.
    engine
        ``"numba"`` or ``"array"``; by default from the array type.
    threads
        Threads of the numba engine.
    lazy
        The block is one of a dask cube (the warnings say the count is this block's).

    Returns
    -------
    tuple
        The outputs in the order of the names of :func:`composite`'s result: per-year ones
        ``(..., n_years)``, the others ``(...)``.
    """
    design = unwrap_shared(arrays[-1])
    values = list(arrays[: len(variables)])
    weights = list(arrays[len(variables) : -1])
    xp = get_namespace(values[0])
    engine = choose_engine(engine, values[0])
    lead = values[0].shape[:-1]
    n_pairs = values[0].shape[-1]
    n_years = design.n_years
    final = {}
    pending = iter(weights)
    for name, has_weights, block in zip(variables, weighted, values, strict=True):
        flat = xp.reshape(block, (-1, n_pairs))
        weight = None
        if has_weights:
            weight = xp.reshape(xp.astype(xp.asarray(next(pending)), xp.float64), (-1, n_pairs))
            if bool(xp.any(weight < 0)):
                raise InvalidParameterError(
                    f"weights of {name!r} must be >= 0; pass 1 / error² (or weights='error')"
                )
        # The kernels leave out ±inf and NaN or inf weights by themselves, but would fit the
        # fill as a velocity of -32767 m/yr; all three become NaN here so that a warning can
        # count them (the kernels then see NaN: missing, whatever its weight).
        flat, n_fill = fill_as_nan(xp, flat)
        flat, n_inf, n_weighted = finite_or_nan(xp, flat, weight)
        warn_untrusted(
            name, flat.shape[0], n_fill, n_inf, n_weighted, lazy, counts="count or count0"
        )
        if engine == "numba":
            raw = kc.composite_pixels_compiled(
                np.asarray(flat), None if weight is None else np.asarray(weight), design,
                options, threads=threads,
            )  # fmt: skip
        else:
            raw = _composite_array(xp, flat, weight, design, options)
        final[name] = kc.finish_composite(raw, design)
    if _has_speed(variables):
        final["v"] = kc.speed_composite(final["vx"], final["vy"])
    outputs = _outputs(final, variables, xp)
    layout = _output_layout(variables)
    shaped = []
    for (_, per_year, dtype), value in zip(layout, outputs, strict=True):
        target = xp.int32 if dtype is np.int32 else xp.float32
        shape = (*lead, n_years) if per_year else lead
        shaped.append(xp.reshape(xp.astype(value, target), shape))
    return tuple(shaped)


def _composite_array(xp, flat, weight, design, options) -> dict[str, Any]:
    """The array engine over pixel batches that fit the device."""
    n_pix, n_pairs = flat.shape
    batch = _array_batch(n_pairs, design.n_years, flat) or max(n_pix, 1)
    parts: dict[str, list[Any]] = {}
    for lo in range(0, n_pix, batch):
        hi = min(lo + batch, n_pix)
        w = None
        if weight is not None:
            w = weight if weight.shape[0] == 1 else weight[lo:hi, ...]
            w = xp.permute_dims(w, (1, 0))
        raw = kc.composite_pixels(xp.permute_dims(flat[lo:hi, ...], (1, 0)), w, design, options)
        for key, value in raw.items():
            parts.setdefault(key, []).append(value)
    if not parts:
        raw = kc.composite_pixels(xp.zeros((n_pairs, 0), dtype=xp.float32), None, design, options)
        return raw
    return {k: v[0] if len(v) == 1 else xp.concat(v, axis=0) for k, v in parts.items()}


def _kernel(*arrays, **kwargs):
    return composite_block(*arrays, **kwargs)


def _trend_units(units: str) -> str:
    return f"{units}^2" if units.endswith(("/year", "/yr", "/a")) else f"{units}/year"


def _attributes(name: str, units: str, window: tuple[int, int], center: str) -> dict[str, dict]:
    clim = f"{window[0]}-{window[1]}"
    what = "speed" if name == "v" else name
    trend = _trend_units(units)
    speed_note = (
        " (the components' fits projected onto the mean flow direction vx0, vy0)"
        if name == "v"
        else ""
    )
    return {
        name: {"units": units, "long_name": f"mean annual {what} of the annual fit"},
        f"{name}_error": {
            "units": units,
            "long_name": f"error of the mean annual {what}, ITS_LIVE's convention"
            + (
                " (propagated from vx_error, vy_error)"
                if name == "v"
                else ": 1/sqrt(sum_i M_ik/error_i^2), not a standard deviation of the estimate"
            ),
        },
        f"{name}_std": {
            "units": units,
            "long_name": f"standard deviation of the mean annual {what}"
            + (
                " (first order, from vx_std, vy_std; not meaningful where v_significant is 0)"
                if name == "v"
                else ": least squares, max(residual scale, 1) sqrt((N^-1)_kk) with errors, "
                "residual scale sqrt((N^-1)_kk) without"
            ),
        },
        f"{name}0": {
            "units": units,
            "long_name": f"climatological [{clim}] {what} at the centre date {center}: "
            + (
                "magnitude of vx0 and vy0"
                if name == "v"
                else f"line through the annual means weighted by 1/{name}_std^2"
            ),
        },
        f"{name}0_error": {"units": units, "long_name": f"error of {name}0"},
        f"d{name}_dt": {
            "units": trend,
            "long_name": f"trend [{clim}] of {what}: slope of the weighted line through the "
            f"annual means{speed_note}",
        },
        f"d{name}_dt_error": {"units": trend, "long_name": f"error of d{name}_dt"},
        f"{name}_amp": {
            "units": units,
            "long_name": f"climatological [{clim}] seasonal amplitude (half peak-to-peak) of "
            f"{what}{speed_note}",
        },
        f"{name}_amp_error": {"units": units, "long_name": f"error of {name}_amp"},
        f"{name}_phase": {
            "units": "days",  # after January 1 (UDUNITS has no "day of year"; see io/cf.py)
            "long_name": f"climatological [{clim}] day of the seasonal maximum of {what} "
            f"(days after January 1){speed_note}",
        },
        f"{name}_phase_error": {"units": "days", "long_name": f"error of {name}_phase"},
    }


def _assemble(ds, results, variables, setup, options, engine, weights, start, end, title):
    names = [name for name, _, _ in _output_layout(variables)]
    out = dict(zip(names, results, strict=True))
    center = str(np.datetime_as_string(setup.center, "D"))
    attrs: dict[str, dict] = {}
    for name in variables:
        units = str(ds[name].attrs.get("units", "meter/year"))
        attrs.update(_attributes(name, units, setup.window, center))
    if _has_speed(variables):
        units = str(ds["vx"].attrs.get("units", "meter/year"))
        attrs.update(_attributes("v", units, setup.window, center))
        attrs["v_debiased"] = {
            "units": units,
            "long_name": "mean annual speed corrected for the noise bias of a magnitude: "
            "sqrt(max(v^2 - vx_std^2 - vy_std^2, 0))",
        }
        attrs["v_significant"] = {
            "units": "1",
            "long_name": "1 where the annual velocity vector differs from zero at 95%: "
            "(vx/vx_std)^2 + (vy/vy_std)^2 > chi2_2(0.95); read v only there",
            "flag_values": np.array([0, 1], dtype=np.int32),
            "flag_meanings": "not_significant significant",
        }
    clim = f"{setup.window[0]}-{setup.window[1]}"
    first = variables[0]
    attrs["count"] = {
        "units": "1",
        "long_name": "image pairs overlapping the year used in its fit (the components' mean, "
        "rounded up); for a year left out, the pairs it had (fewer than min_year_obs); a "
        "year with pairs but no mean is one they span less than half of",
    }
    attrs["count0"] = {
        "units": "1",
        "long_name": f"image pairs of {first} used in the climatological [{clim}] seasonal fit",
    }
    attrs["outlier_percent"] = {
        "units": "percent",
        "long_name": f"percentage of the valid pairs of {first} with their mid-date in "
        f"[{clim}] rejected by the robust fit",
    }
    data = {}
    for name, value in out.items():
        value = value.transpose(TIME_DIM, ...) if TIME_DIM in value.dims else value
        data[name] = value.assign_attrs(attrs[name])
    result = xr.Dataset(data)
    n_years = setup.design.n_years
    years = setup.first_year + np.arange(n_years + 1)
    edges = np.array([_year_start(int(y)) for y in years])
    centers = edges[:-1] + (edges[1:] - edges[:-1]) / 2
    result = result.assign_coords(
        {
            TIME_DIM: (
                TIME_DIM,
                centers,
                {"bounds": "time_bounds", "long_name": "middle of the year"},
            )
        }
    )
    result["time_bounds"] = ((TIME_DIM, "bnds"), np.stack([edges[:-1], edges[1:]], axis=1))
    keep = [c for c in ds.coords if PAIR_DIM not in ds[c].dims and c in ("x", "y", "spatial_ref",
                                                                         "mapping")]  # fmt: skip
    result = result.assign_coords({c: ds[c] for c in keep})
    result.attrs = {
        "title": title,
        "model": (
            "per pixel and component: one mean per calendar year plus a sin 2pi t + b cos 2pi t "
            "(t in decimal years), each pair the model's mean over its interval, weighted least "
            "squares with weights 1/error^2 (ITS_LIVE's displacement fit divided by dt)"
        ),
        "composite_variables": list(variables),
        "climatology_years": [int(setup.window[0]), int(setup.window[1])],
        "center_date": center,
        "first_year": int(setup.first_year),
        "last_year": int(setup.first_year + n_years - 1),
        "requested_start": "" if start is None else str(start),
        "requested_end": "" if end is None else str(end),
        "weights": "none" if weights is None else (weights if isinstance(weights, str) else "user"),
        "robust": options.robust or "none",
        "robust_iterations": int(options.iterations) if options.robust else 0,
        "min_obs": int(options.min_obs),
        "min_year_obs": int(options.min_year_obs),
        "engine": engine,
        "n_pairs_used": int(setup.kept.sum()),
        "n_pairs_dropped": int(setup.n_dropped),
    }
    for key in ("url", "s3", "projection"):
        if key in ds.attrs:
            result.attrs[f"source_{key}"] = ds.attrs[key]
    # CF-1.8 and writable by every netCDF writer (io/cf.py): the last step of every result
    return to_cf(result, crs=cube_crs(ds), history="xr_itslive.composite")


def composite(
    ds: xr.Dataset,
    *,
    start: Any = None,
    end: Any = None,
    climatology: tuple[int, int] = DEFAULTS["climatology"],
    center_date: Any = None,
    weights: Any = DEFAULTS["weights"],
    robust: bool | str = DEFAULTS["robust"],
    variables: Sequence[Hashable] | str = DEFAULTS["variables"],
    min_obs: int = DEFAULTS["min_obs"],
    min_year_obs: int = DEFAULTS["min_year_obs"],
    robust_iterations: int | None = None,
    engine: Engine | None = None,
) -> xr.Dataset:
    """Annual and climatological composites of every pixel, ITS_LIVE's way, lazily.

    Per pixel and component, fits one mean velocity per calendar year plus one annual
    sinusoid ``a sin 2πt + b cos 2πt`` directly to the image pairs, each pair observing the
    model's mean over its interval (ITS_LIVE's displacement-weighted least squares, weights
    ``1 / error²``), after outlier rejection. Then, over the climatology years: a weighted
    line through the annual means (``vx0`` at ``center_date``, ``dvx_dt``) and the same fit
    on the pairs whose mid-date lies in the window (``vx_amp``, ``vx_phase``). The speed's
    variables come from the components: ``v`` and ``v0`` as magnitudes, its trend and
    seasonal cycle projected onto the mean flow direction ``(vx0, vy0)``.

    Parameters
    ----------
    ds
        An ITS_LIVE cube (:func:`xr_itslive.open_cube`), ``mid_date`` in one chunk. Dask-backed
        cubes stay lazy: building the result computes nothing.
    start, end
        Time window: pairs reaching outside it are dropped, and the output's years are those
        it spans. Default: all pairs.
    climatology
        First and last year (both included) of the climatology window (ITS_LIVE's 2025
        release: 2014-2024).
    center_date
        Where the line through the annual means is centred (``vx0`` is its value there).
        Default: the middle of the window (2019-07-02 for 2014-2024, as ITS_LIVE).
        Must lie in the window and in the data.
    weights
        ``"error"`` (``1 / <variable>_error²``; pairs without a positive error are left out),
        None (all pairs equal; the errors then come from the residual scale), or a DataArray of
        weights ``1 / σ²`` along ``mid_date``.
    robust
        ``True`` or ``"tukey"``: iteratively reweighted least squares with Tukey's biweight
        (pairs beyond 4.685 robust standard deviations, 1.4826 × the median absolute
        standardized residual, are rejected), as :func:`xr_itslive.invert` does; ``"huber"``
        downweights instead; ``False`` none. ITS_LIVE's production code cuts residuals from a
        15-point moving median instead; ``benchmarks/bench_composite.py`` compares both.
    variables
        Per-pair variables to composite. ``vx`` and ``vy`` together add the speed ``v``.
    min_obs
        Fewest pairs a fit needs (the production code's 30); pixels with fewer, or with no
        more pairs than unknowns, come out NaN with their ``count``.
    min_year_obs
        Fewest pairs overlapping a year for its mean; a year with fewer is left out of the
        fit with the pairs that overlap it (they cannot be modelled without it) and is NaN,
        its ``count`` saying how many it had. A year whose pairs, from the earliest date to
        the latest inside it, span less than half of it (the first and last years of a
        record often: a record starting in late October) is fitted but reported NaN, with
        its ``count``: its mean would be the seasonal fit's extrapolation of a few weeks
        (:data:`xr_itslive.kernels.composite.MIN_YEAR_COVERAGE`).
    robust_iterations
        Reweightings (each one more fit); by default 2 with weights, 4 without, as the
        inversion.
    engine
        ``"numba"`` (CPU) or ``"array"`` (any array namespace: numpy, CuPy on a GPU); by
        default from the chunk type.

    Returns
    -------
    xarray.Dataset
        ITS_LIVE's names. Per year (``time`` at the middle of each calendar year, with
        ``time_bounds``): ``vx``, ``vy``, ``v``, their ``*_error`` and ``*_std``, ``count``;
        with ``vx`` and ``vy``, ``v_debiased`` and ``v_significant``. Per pixel:
        ``vx0``, ``vy0``, ``v0``, ``dvx_dt``, ``dvy_dt``, ``dv_dt`` (per year),
        ``vx_amp``, ``vy_amp``, ``v_amp``, ``vx_phase``, ``vy_phase``, ``v_phase`` (day of
        year of the maximum) and their ``*_error``, ``count0``, ``outlier_percent``.

        Uncertainty of the annual means: ``*_error`` is ITS_LIVE's ``1 / sqrt(Σ_i M_ik
        w_i)``, kept to compare with the published product; it is not the spread of the
        estimate (on the bundled demo cube 0.7-0.9 of it in most years, and a third of it
        for a year seen through small parts of long pairs). ``*_std`` is the least-squares standard
        deviation, ``max(σ̂, 1) sqrt((N⁻¹)_kk)`` from the fit's normal matrix ``N`` (``σ̂``,
        the weighted residual scale, alone with ``weights=None``): the pairs' errors are a
        floor, raised where the residuals scatter more. The std is what the rest uses:
        ``v_significant`` (the annual vector differs from zero at 95%:
        ``(vx/vx_std)² + (vy/vy_std)² > 5.99``; where 0, ``v`` is noise), ``v_debiased``
        (``sqrt(max(v² - vx_std² - vy_std², 0))``, see :func:`xr_itslive.speed`) and the
        weights ``1 / std²`` of the line through the annual means (ITS_LIVE weights it by
        ``1 / error²``, which favours the years the data say least about). It assumes
        independent pair errors: pairs sharing an image share its error, so where few
        images make many pairs the std is still too small. ``*0`` and ``d*_dt`` have the
        line fit's formal errors (ITS_LIVE reports ``sqrt(Σ σ_k²) / (n - 1)`` instead);
        amplitude and phase errors are propagated from the covariance of ``a``, ``b`` scaled
        by the residual variance; speed errors from the components (``v_error`` from their
        errors, ``v_std`` from their stds).

    Raises
    ------
    EmptySelectionError
        No pair in ``start..end``, none in the climatology window, or fewer pairs in all
        than ``min_obs``.
    InvalidParameterError
        A parameter out of range, or ``center_date`` outside the window or the data.
    MissingVariableError
        A variable, or its ``*_error`` with ``weights="error"``, is not in the cube.

    Examples
    --------
    >>> import xr_itslive
    >>> cube = xr_itslive.synthetic_cube(n_pairs=600, ny=2, nx=2, years=6, start="2014-01-01")
    >>> result = composite(cube, climatology=(2015, 2018))
    >>> result["vx"].dims, result["vx_amp"].dims
    (('time', 'y', 'x'), ('y', 'x'))
    >>> sorted(map(str, result["time"].dt.year.values))[:2]
    ['2014', '2015']
    """
    variables = [variables] if isinstance(variables, str) else [str(v) for v in variables]
    # before the cube's checks: a cube without 'v' would otherwise answer "'v' not found",
    # as if it were missing data rather than a request that makes no sense
    if "v" in variables and _has_speed(variables):
        raise InvalidParameterError(
            "variables holds 'v' with 'vx' and 'vy': the speed's composite is derived from the "
            "components (magnitudes and projections onto the flow). Drop 'v' from variables"
        )
    check_cube(ds, variables)
    if len(set(variables)) != len(variables):
        raise InvalidParameterError(f"variables has repeated names: {variables}")
    min_obs = _positive_int(min_obs, "min_obs")
    min_year_obs = _positive_int(min_year_obs, "min_year_obs")
    kind = robust_kind(robust)
    if robust_iterations is None:
        robust_iterations = 2 if weights is not None else 4
    robust_iterations = _positive_int(robust_iterations, "robust_iterations")
    if isinstance(weights, xr.DataArray):  # checked against the cube as given
        resolve_weights(ds, variables[0], weights, match_pair_id=False)
    ds, unique = drop_duplicated_pairs(ds)
    setup = _setup(ds, start, end, climatology, center_date)
    n_kept = int(setup.kept.sum())
    if n_kept < min_obs:
        raise EmptySelectionError(
            f"the cube has {n_kept} pairs in the window; a fit needs at least min_obs={min_obs} "
            "(and more pairs than unknowns: one per year plus two). Widen start..end, or pass a "
            "smaller min_obs"
        )
    cube = ds.isel({PAIR_DIM: np.flatnonzero(setup.kept)}) if n_kept < ds.sizes[PAIR_DIM] else ds
    options = kc.CompositeOptions(
        min_obs=min_obs,
        min_year_obs=min_year_obs,
        robust=kind,
        iterations=robust_iterations,
        scale_errors=weights is None,
    )
    sample = cube[variables[0]].data
    chunk_type = getattr(sample, "_meta", sample)
    engine = choose_engine(engine, chunk_type)
    is_dask = cube[variables[0]].chunks is not None
    threads = 1 if is_dask else (os.cpu_count() or 1)

    args = [cube[name] for name in variables]
    weighted = []
    for name in variables:
        if isinstance(weights, xr.DataArray):  # the user's, over the pairs given: the same ones
            positions = np.flatnonzero(setup.kept)
            positions = positions if unique is None else unique[positions]
            weight = resolve_weights(
                cube, name, weights.isel({PAIR_DIM: positions}), match_pair_id=False
            )
        else:
            weight = resolve_weights(cube, name, weights, match_pair_id=False)
        weighted.append(weight is not None)
        if weight is not None:
            args.append(weight)
    args.append(shared_key(setup.design, is_dask))
    layout = _output_layout(variables)
    core_in = [[PAIR_DIM]] * (len(args) - 1) + [[]]
    core_out = [[TIME_DIM] if per_year else [] for _, per_year, _ in layout]
    meta = None
    if is_dask and not is_host_numpy(chunk_type):
        # dask learns the chunk type from meta: CuPy chunks in, CuPy chunks out
        ndim = cube[variables[0]].ndim - 1
        meta = tuple(
            empty_like_chunk(chunk_type, ndim + per_year, dtype) for _, per_year, dtype in layout
        )
    results = apply_per_pixel(
        _kernel,
        *args,
        input_core_dims=core_in,
        output_core_dims=core_out,
        output_dtypes=[dtype for _, _, dtype in layout],
        output_sizes={TIME_DIM: setup.design.n_years},
        meta=meta,
        kwargs={
            "variables": variables,
            "weighted": weighted,
            "options": options,
            "engine": engine,
            "threads": threads,
            "lazy": is_dask,
        },
    )
    title = "ITS_LIVE annual and climatological composites (xr_itslive)"
    return _assemble(cube, results, variables, setup, options, engine, weights, start, end, title)


def _recorded_variables(result: xr.Dataset) -> list[str]:
    """The variables an inversion recorded: ``inverted_variables`` (or the older
    ``variables``), a list or its JSON text (as netCDF-safe results store lists)."""
    for key in ("inverted_variables", "variables"):
        value = result.attrs.get(key)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = value.split()
        if value is not None and len(value):
            return [str(v) for v in np.atleast_1d(value)]
    return []


def seasonal(
    result: xr.Dataset,
    *,
    climatology: tuple[int, int] = DEFAULTS["climatology"],
    center_date: Any = None,
    weights: str | None = "std",
    robust: bool | str = False,
    variables: Sequence[Hashable] | str | None = None,
    min_obs: int = DEFAULTS["min_obs"],
    min_year_obs: int = DEFAULTS["min_year_obs"],
    engine: Engine | None = None,
) -> xr.Dataset:
    """The composite's variables from an inverted series, to compare with :func:`composite`.

    Each cell of ``result`` (the output of :func:`xr_itslive.invert`) is taken as an
    observation of the mean velocity over its ``time_bounds``, and the composite's model (one
    mean per calendar year plus one annual sinusoid, then the climatology) is fitted to the
    cells exactly as :func:`composite` fits it to the pairs.

    Parameters
    ----------
    result
        An inversion result: ``(time, y, x)`` variables and ``time_bounds``.
    climatology, center_date, robust, min_obs, min_year_obs, engine
        As for :func:`composite` (``robust`` off by default: the series is already fitted).
    weights
        ``"std"``: ``1 / <variable>_std²`` when the result has them (``invert(...,
        uncertainty=True)``), else equal weights; None: equal weights.
    variables
        The series to fit; default those the inversion recorded.

    Returns
    -------
    xarray.Dataset
        As :func:`composite`. The cells are not independent (the inversion's smoothness ties
        neighbours), so the errors are not those of independent data, and the inversion's
        values in gaps (carried by the smoothness) count as data.

    Examples
    --------
    >>> import xr_itslive
    >>> cube = xr_itslive.synthetic_cube(n_pairs=600, ny=1, nx=2, years=6, start="2014-01-01")
    >>> fitted = seasonal(xr_itslive.invert(cube, step=12), climatology=(2015, 2018))
    >>> fitted["vx_amp"].dims
    ('y', 'x')
    """
    if not isinstance(result, xr.Dataset) or "time_bounds" not in result.variables:
        raise InvalidParameterError(
            "seasonal() takes an inversion result (a Dataset with 'time' and 'time_bounds', as "
            f"xr_itslive.invert returns), got {type(result).__name__}"
            + ("" if not isinstance(result, xr.Dataset) else " without 'time_bounds'")
        )
    if variables is None:
        variables = _recorded_variables(result) or [v for v in ("vx", "vy") if v in result]
    variables = [variables] if isinstance(variables, str) else [str(v) for v in variables]
    missing = [v for v in variables if v not in result.data_vars]
    if missing or not variables:
        raise MissingVariableError(
            f"variables {missing or variables} not found in the result; it has "
            f"{sorted(map(str, result.data_vars))}. Pass variables=(...) naming inverted series"
        )
    if weights not in (None, "std"):
        raise InvalidParameterError(f"weights must be 'std' or None, got weights={weights!r}")
    bounds = np.asarray(result["time_bounds"].values)
    use_std = weights == "std" and all(f"{v}_std" in result for v in variables)
    pseudo = {}
    for name in variables:
        pseudo[name] = result[name].rename({TIME_DIM: PAIR_DIM})
        if use_std:
            pseudo[f"{name}_error"] = result[f"{name}_std"].rename({TIME_DIM: PAIR_DIM})
    cube = xr.Dataset(
        pseudo,
        coords={
            "acquisition_date_img1": (PAIR_DIM, bounds[:, 0]),
            "acquisition_date_img2": (PAIR_DIM, bounds[:, 1]),
            **{c: result[c] for c in ("x", "y", "spatial_ref", "mapping") if c in result.coords},
        },
        attrs={k: v for k, v in result.attrs.items() if k in ("url", "s3", "projection")},
    )
    cube = cube.drop_vars([TIME_DIM], errors="ignore")
    for name in pseudo:
        if cube[name].chunks is not None:
            cube[name] = cube[name].chunk({PAIR_DIM: -1})
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*acquisition_date_img2 <=.*")
        out = composite(
            cube,
            climatology=climatology,
            center_date=center_date,
            weights="error" if use_std else None,
            robust=robust,
            variables=variables,
            min_obs=min_obs,
            min_year_obs=min_year_obs,
            engine=engine,
        )
    out.attrs["title"] = "composite variables fitted to an inverted series (xr_itslive.seasonal)"
    out.attrs["seasonal_of"] = (
        f"inversion result: {result.attrs.get('step_days', '?')}-day cells, "
        f"lam={result.attrs.get('lam', '?')}"
    )
    out.attrs["weights"] = "std" if use_std else "none"
    return to_cf(out, history="xr_itslive.seasonal")


# --------------------------------------------------------------------------- several cubes


def _lattice(ds: xr.Dataset) -> tuple[float, float]:
    dx, dy = (grid_spacing(np.asarray(ds[d].values, float)) for d in ("x", "y"))
    return dx or 120.0, dy or 120.0


def _on_lattice(values: np.ndarray, origin: float, step: float) -> bool:
    offset = (np.asarray(values, float) - origin) / step
    return bool(np.all(np.abs(offset - np.round(offset)) < 1e-6))


def composite_mosaic(
    cubes: Sequence[Any],
    *,
    chunks: Mapping[str, int] | None = None,
    **composite_kwargs: Any,
) -> xr.Dataset:
    """:func:`composite` of several cubes of one CRS on one grid: a glacier over tiles.

    Each cube is composited on its own and placed on the union of their grids (the same
    120 m lattice: an index selection, no resampling) and on the union of their years; where
    cubes overlap (neighbouring tiles share their edge pixels), each pixel comes from the cube
    with the most pairs in its climatology fit (``count0``), ties to the earlier cube.

    Parameters
    ----------
    cubes
        Datasets (:func:`xr_itslive.open_cube`), paths, URLs or catalog entries, all in one
        CRS on one pixel lattice.
    chunks
        Spatial chunks of the output (``{"y": n, "x": n}``); default: the first cube's.
    **composite_kwargs
        Passed to :func:`composite` for every cube (``climatology``, ``weights``, ...).

    Returns
    -------
    xarray.Dataset
        As :func:`composite`, with ``source`` (``(y, x)``: the index of the cube each pixel
        came from, -1 where none).

    Raises
    ------
    InvalidParameterError
        No cube, cubes in different CRSs (composites of neighbouring UTM zones would need the
        components' seasonal cycles rotated: not supported; composite each cube, or invert
        them together with :func:`xr_itslive.invert_mosaic`), or grids off each other's
        lattice.
    """
    check_cube_sequence(cubes, "composite_mosaic", "xr_itslive.composite")
    variables = composite_kwargs.get("variables", DEFAULTS["variables"])
    variables = [variables] if isinstance(variables, str) else [str(v) for v in variables]
    weights = composite_kwargs.get("weights", DEFAULTS["weights"])
    opened = [open_with_name(c, variables, weights) for c in cubes]
    keys = {crs_key(cube_crs(ds)) if cube_crs(ds) is not None else None for ds, _ in opened}
    if len(keys) > 1:
        raise InvalidParameterError(
            f"the cubes are in different CRSs ({sorted(map(str, keys))}); a composite mosaic "
            "places cubes of one CRS only (rotating the components' seasonal cycles between "
            "UTM zones is not supported). Composite each cube with xr_itslive.composite, or "
            "invert them together with xr_itslive.invert_mosaic"
        )
    reference = opened[0][0]
    dx, dy = _lattice(reference)
    x0, y0 = float(reference["x"].values[0]), float(reference["y"].values[0])
    for ds, name in opened[1:]:
        if not (_on_lattice(ds["x"].values, x0, dx) and _on_lattice(ds["y"].values, y0, dy)):
            raise InvalidParameterError(
                f"cube {name or '?'} is not on the first cube's {dx:g} m pixel lattice; a "
                "composite mosaic places pixels without resampling. Pass cubes of one ITS_LIVE "
                "grid (one EPSG), or use xr_itslive.invert_mosaic"
            )
    results = [composite(ds, **composite_kwargs) for ds, _ in opened]
    first = min(int(r.attrs["first_year"]) for r in results)
    last = max(int(r.attrs["last_year"]) for r in results)
    times = np.array(
        [_year_start(y) + (_year_start(y + 1) - _year_start(y)) / 2 for y in range(first, last + 1)]
    )
    xs_all = np.concatenate([np.asarray(ds["x"].values, float) for ds, _ in opened])
    ys_all = np.concatenate([np.asarray(ds["y"].values, float) for ds, _ in opened])
    xs = x0 + dx * np.arange(np.round((xs_all.min() - x0) / dx), np.round((xs_all.max() - x0) / dx)
                             + 1)  # fmt: skip
    ys = y0 - dy * np.arange(np.round((y0 - ys_all.max()) / dy), np.round((y0 - ys_all.min()) / dy)
                             + 1)  # fmt: skip
    placed = []
    for result in results:
        spatial = [n for n, v in result.data_vars.items() if {"y", "x"} <= set(v.dims)]
        fill = {n: (0 if result[n].dtype.kind in "iu" else np.nan) for n in spatial}
        moved = result[spatial].reindex(
            x=xs, y=ys, method="nearest", tolerance=dx / 4, fill_value=fill
        ).reindex(time=times, fill_value=fill)  # fmt: skip
        placed.append(moved.assign_coords(x=xs, y=ys))
    out = placed[0]
    best = out["count0"]
    source = xr.where(best > 0, 0, -1)
    for index, other in enumerate(placed[1:], start=1):
        better = other["count0"] > best
        for name in out.data_vars:
            out[name] = xr.where(better, other[name], out[name], keep_attrs=True)
        best = xr.where(better, other["count0"], best)
        source = xr.where(better, index, source)
    labels = [(name or f"cube_{i}").replace(" ", "_") for i, (_, name) in enumerate(opened)]
    out["source"] = source.astype("int16").assign_attrs(
        units="1",
        long_name="index of the cube each pixel came from (-1: none)",
        flag_values=list(range(len(opened))),
        flag_meanings=" ".join(labels),
    )
    bounds = np.array([[_year_start(y), _year_start(y + 1)] for y in range(first, last + 1)])
    out["time_bounds"] = ((TIME_DIM, "bnds"), bounds)
    out["time"].attrs = dict(results[0]["time"].attrs)
    out.attrs = dict(results[0].attrs)
    out.attrs.update(
        title="ITS_LIVE annual composites of several cubes on one grid (xr_itslive)",
        first_year=first,
        last_year=last,
        n_pairs_used=int(sum(int(r.attrs["n_pairs_used"]) for r in results)),
        n_pairs_dropped=int(sum(int(r.attrs["n_pairs_dropped"]) for r in results)),
        mosaic_cubes=labels,
        mosaic_rule="per pixel, the cube with the most pairs in its climatology fit (count0); "
        "ties: the order given",
    )
    for key in ("source_url", "source_s3"):
        out.attrs.pop(key, None)
    out = to_cf(out, crs=cube_crs(reference), history="xr_itslive.composite_mosaic")
    if out["count0"].chunks is not None:
        sizes = dict(chunks or {})
        for dim in ("y", "x"):
            if dim not in sizes:
                chunked = reference[variables[0]].chunksizes.get(dim)
                sizes[dim] = int(chunked[0]) if chunked else out.sizes[dim]
        out = out.chunk({TIME_DIM: -1, "y": sizes["y"], "x": sizes["x"]})
    return out.transpose(TIME_DIM, "y", "x", ...)


# --------------------------------------------------------------------------- writing


def composite_to_zarr(
    cube: xr.Dataset | Sequence[Any],
    store: str | os.PathLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    scheduler: Any = None,
    progress: bool = True,
    chunks: Mapping[Hashable, int] | None = None,
    gpu: bool = False,
    **composite_kwargs: Any,
) -> WriteSummary:
    """:func:`composite` of ``cube`` written chunk by chunk to ``store``, resumably.

    Re-running the same call after an interruption finishes the store without recomputing
    the chunks already written; on a finished store it computes nothing; with other settings
    or on another cube it is refused (:class:`~xr_itslive.StoreConflictError`).

    Parameters
    ----------
    cube
        An ITS_LIVE cube, ``mid_date`` in one chunk, chunked in space (one task a chunk); or
        a list of cubes of one CRS (Datasets, paths or URLs), composited as one mosaic
        (:func:`~xr_itslive.composite_mosaic`).
    store, storage_options, overwrite, scheduler, progress
        As for :func:`~xr_itslive.write_resumable`.
    chunks
        Spatial chunks to give the cube first (e.g. ``{"y": 20, "x": 20}``); for a mosaic,
        the output's.
    gpu
        Fit on the GPU (CuPy, the ``gpu`` extra): each chunk is copied to the device, fitted
        with the ``array`` engine and its result copied back and written.
    **composite_kwargs
        Passed to :func:`composite`.

    Returns
    -------
    WriteSummary
    """
    if isinstance(cube, list | tuple):
        if gpu:
            raise InvalidParameterError(
                "gpu=True fits one cube at a time; write each cube with composite_to_zarr(cube, "
                "..., gpu=True), or drop gpu for the mosaic"
            )
        result = composite_mosaic(cube, chunks=chunks, **composite_kwargs)
        parameters = dict(result.attrs)
        parameters["input"] = [
            input_identity(c) if isinstance(c, xr.Dataset) else str(c) for c in cube
        ]
    else:
        if chunks is not None:
            cube = cube.chunk({PAIR_DIM: -1, **chunks})
        result = call_on_device(composite, cube, gpu=gpu, **composite_kwargs)
        parameters = dict(result.attrs)
        user_weights = composite_kwargs.get("weights")
        if isinstance(user_weights, xr.DataArray):
            from dask.base import tokenize

            parameters["weights"] = {"DataArray": tokenize(user_weights)}
        parameters["input"] = input_identity(cube)
    return write_resumable(
        result,
        store,
        storage_options=storage_options,
        parameters=parameters,
        overwrite=overwrite,
        scheduler=scheduler,
        progress=progress,
    )
