"""One-call plots: a point series (pairs as bars, an inverted series, a daily GP with its band),
a map of a composite variable with the glacier outline, and a point's series against its
annual composite (annual means and the seasonal fit)."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import InvalidParameterError, MissingVariableError
from .geo.masks import outline_in_cube_crs
from .kernels.speed import nonnegative_summary
from .workflows.composite import decimal_years
from .workflows.gp import GaussianProcessFit, gp_regress, series_arrays

__all__ = ["plot_composite_map", "plot_point_composite", "plot_series"]


def _pair_arrays(series: xr.Dataset, variable: Hashable):
    img1, img2, values, _ = series_arrays(series, variable, weights=None)
    return img1.astype("datetime64[ns]"), img2.astype("datetime64[ns]"), values


def _series_line(inverted: Any, variable: Hashable) -> tuple[np.ndarray, np.ndarray, Any]:
    """Time, values and (optionally) cell bounds of an inverted series of one pixel."""
    bounds = None
    if isinstance(inverted, xr.Dataset):
        if variable not in inverted.data_vars:
            raise MissingVariableError(
                f"inverted has no {variable!r}; it has {sorted(map(str, inverted.data_vars))}"
            )
        if "time_bounds" in inverted.variables:
            bounds = np.asarray(inverted["time_bounds"].values)
        inverted = inverted[variable]
    elif isinstance(inverted, xr.DataArray) and "time_bounds" in inverted.coords:
        bounds = np.asarray(inverted.coords["time_bounds"].values)
    if not isinstance(inverted, xr.DataArray):
        raise InvalidParameterError(
            f"inverted must be an xarray DataArray or Dataset along 'time', got "
            f"{type(inverted).__name__}; pass e.g. xr_itslive.invert(series, ('v',))"
        )
    dims = [d for d in inverted.dims if inverted.sizes[d] > 1]
    time_dim = "time" if "time" in inverted.dims else (dims[0] if len(dims) == 1 else None)
    if time_dim is None or any(d != time_dim for d in dims):
        raise InvalidParameterError(
            f"inverted has dims {dict(inverted.sizes)}; expected one series along 'time': "
            "select a pixel first, e.g. result.isel(x=0, y=0)"
        )
    line = inverted.squeeze([d for d in inverted.dims if d != time_dim], drop=True)
    return np.asarray(line[time_dim].values), np.asarray(line.values, float), bounds


def _gp_curves(series: xr.Dataset, variable: Hashable, gp: Any, times: Any, level: float):
    """(times, mean, lower, upper, level, legend note) of the GP to draw."""
    if gp is True:
        gp = gp_regress(series, variable, times=times, level=level)
    if isinstance(gp, xr.Dataset):
        name = str(variable)
        needed = [name, f"{name}_lower", f"{name}_upper"]
        missing = [n for n in needed if n not in gp.data_vars]
        if missing:
            raise MissingVariableError(
                f"gp lacks {missing}; pass the Dataset of xr_itslive.gp_regress(series, "
                f"{name!r}) (it has {sorted(map(str, gp.data_vars))})"
            )
        fitted = gp.attrs.get("gp_components")
        note = f" of {', '.join(str(fitted).split())} (daily)" if fitted else " (daily)"
        return (
            np.asarray(gp["time"].values),
            np.asarray(gp[name].values, float),
            np.asarray(gp[f"{name}_lower"].values, float),
            np.asarray(gp[f"{name}_upper"].values, float),
            float(gp.attrs.get("gp_level", level)),
            note,
        )
    if not isinstance(gp, GaussianProcessFit):
        raise InvalidParameterError(
            f"gp must be a GaussianProcessFit (from xr_itslive.gp_fit...), a Dataset from "
            f"xr_itslive.gp_regress or True, got {type(gp).__name__}"
        )
    if times is None:
        first = np.datetime64(gp.start, "D") + np.timedelta64(1, "D")
        last = np.datetime64(gp.end, "D") - np.timedelta64(1, "D")
        times = np.arange(first, last + np.timedelta64(1, "D")).astype("datetime64[ns]")
    mean, std = gp.predict(times)
    if variable == "v":  # a speed: the posterior given v >= 0, as gp_regress reports it
        mean, _, lower, upper = nonnegative_summary(mean, std, level=level)
    else:
        from scipy.special import ndtri

        half = ndtri(0.5 + level / 2) * std
        lower, upper = mean - half, mean + half
    return np.asarray(times), mean, lower, upper, level, ""


def plot_series(
    series: xr.Dataset,
    variable: Hashable = "v",
    *,
    inverted: xr.DataArray | None = None,
    gp: Any = None,
    times: Any = None,
    level: float = 0.95,
    ax: Any = None,
    path: str | Path | None = None,
    title: str | None = None,
    max_pairs: int | None = 20000,
    figsize: tuple[float, float] = (11.0, 4.5),
):
    """Plot a point series: raw pairs as bars over their intervals, an inverted series, a GP.

    Parameters
    ----------
    series
        One pixel of an ITS_LIVE cube along ``mid_date`` (``acquisition_date_img1/2``).
    variable
        The velocity variable.
    inverted
        Optional regular series of this pixel along ``time``: a DataArray, or a Dataset such
        as ``xr_itslive.invert(...)`` (its ``variable`` is drawn); as steps over
        ``time_bounds`` when present, else as a line.
    gp
        Optional GP, drawn as its mean and central ``level`` band at daily resolution:
        ``True`` runs :func:`xr_itslive.gp_regress` (for ``"v"`` of a series with ``vx``
        and ``vy``: the speed of the components' GPs), a Dataset is such a result (its
        ``{variable}``, ``{variable}_lower`` and ``{variable}_upper``), and a
        :class:`xr_itslive.GaussianProcessFit` is evaluated at ``times`` (a fit of ``"v"``
        conditioned on ``v >= 0``, as :func:`~xr_itslive.gp_regress` does).
    times
        Where to evaluate a fit, or the GP of ``gp=True``; by default every day of its grid.
    level
        Probability of the GP's central band, in (0, 1); default 0.95 (a Dataset keeps the
        band it was made with).
    ax
        Matplotlib axes to draw on; a new figure otherwise.
    path
        Save the figure there (any format matplotlib knows: png, pdf, svg...).
    title
        Axes title; default ``"<variable>: image pairs and fitted series"``.
    max_pairs
        Draw at most this many pairs (an even subsample) to keep big series readable; None
        draws all.
    figsize
        Size (inches) of a new figure; ignored with ``ax``.

    Returns
    -------
    matplotlib.figure.Figure, matplotlib.axes.Axes

    Examples
    --------
    >>> fig, ax = xr_itslive.plot_series(series, "v", gp=True, path="v.png")  # doctest: +SKIP
    """
    if ax is None and path is not None:
        # Saving only: a figure outside pyplot needs no display and is never leaked.
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize)
        ax = fig.add_subplot()
    elif ax is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    if not 0 < level < 1:
        raise InvalidParameterError(f"level must be in (0, 1), got level={level!r}")

    img1, img2, values = _pair_arrays(series, variable)
    keep = np.isfinite(values) & ~np.isnat(img1) & ~np.isnat(img2)
    index = np.flatnonzero(keep)
    if max_pairs is not None and index.size > max_pairs:
        index = index[np.linspace(0, index.size - 1, max_pairs).astype(int)]
    units = series[variable].attrs.get("units", "")
    if index.size:
        from matplotlib.collections import LineCollection
        from matplotlib.dates import date2num

        x1 = date2num(img1[index])
        x2 = date2num(img2[index])
        segments = np.stack([np.column_stack([x1, values[index]]),
                             np.column_stack([x2, values[index]])], axis=1)  # fmt: skip
        alpha = float(np.clip(30.0 / np.sqrt(index.size), 0.05, 0.8))
        ax.add_collection(
            LineCollection(
                segments,
                colors="0.45",
                linewidths=1.0,
                alpha=alpha,
                label=f"image pairs ({index.size})",
            )  # fmt: skip
        )
        ax.xaxis_date()
        ax.autoscale_view()

    if inverted is not None:
        t, v, bounds = _series_line(inverted, variable)
        if bounds is not None and bounds.shape == (t.size, 2):
            edges = np.concatenate([bounds[:, 0], bounds[-1:, 1]])
            ax.stairs(
                v, edges, baseline=None, color="tab:blue", linewidth=1.6, label="inverted series"
            )
        else:
            ax.plot(t, v, color="tab:blue", linewidth=1.6, label="inverted series")

    if gp is not None:
        gp_times, mean, lower, upper, band_level, note = _gp_curves(
            series, variable, gp, times, level
        )
        ax.fill_between(gp_times, lower, upper, color="tab:orange", alpha=0.3,
                        linewidth=0, label=f"GP {band_level:.0%} band")  # fmt: skip
        ax.plot(gp_times, mean, color="tab:orange", linewidth=1.4, label=f"GP mean{note}")

    if index.size:
        # Gross outliers (a few % of real pairs) would squash everything else: frame the bulk
        # of the pairs and the fitted series instead.
        low, high = np.nanpercentile(values[index], [2.0, 98.0])
        if inverted is not None and np.isfinite(v).any():
            fit_low, fit_high = np.nanpercentile(v, [1.0, 99.0])
            low, high = min(low, fit_low), max(high, fit_high)
        pad = 0.1 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + pad)
    ax.set_ylabel(f"{variable} [{units}]" if units else str(variable))
    ax.set_xlabel("date")
    ax.set_title(title if title is not None else f"{variable}: image pairs and fitted series")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig, ax


# --------------------------------------------------------------------------- composites
#: Day-of-year ticks of a phase colour bar (days after January 1, as in ITS_LIVE's composites).
PHASE_TICKS = ((0.0, "Jan 1"), (90.0, "Apr 1"), (181.0, "Jul 1"), (273.0, "Oct 1"), (365.25, ""))


def _new_axes(ax: Any, path: Any, figsize: tuple[float, float]):
    """Axes to draw on: the given ones, a pyplot figure, or (saving only) a bare Figure."""
    if ax is not None:
        return ax.figure, ax
    if path is not None:
        # saving only: a figure outside pyplot needs no display and is never leaked
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        return fig, fig.add_subplot()
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    return fig, ax


def _select_year(da: xr.DataArray, time: Any) -> tuple[xr.DataArray, str]:
    """One year of a per-year composite variable (the last by default) and its label."""
    if "time" not in da.dims:
        if time is not None:
            raise InvalidParameterError(
                f"{da.name!r} is a climatology (no 'time' dimension); pass time=None"
            )
        return da, ""
    years = np.asarray(da["time"].values).astype("datetime64[Y]").astype(int) + 1970
    if time is None:
        index = years.size - 1
    else:
        year = int(time) if isinstance(time, int | np.integer) else None
        if year is None:
            try:
                year = int(str(np.datetime64(time, "Y")))
            except ValueError as err:
                raise InvalidParameterError(
                    f"time must be a year (e.g. 2020) or a date, got time={time!r}"
                ) from err
        matches = np.flatnonzero(years == year)
        if not matches.size:
            raise InvalidParameterError(
                f"the composite has no year {year}; it has {years.min()}..{years.max()}: pass "
                "one of them as time="
            )
        index = int(matches[0])
    return da.isel(time=index), str(years[index])


def _map_style(name: str, values: np.ndarray) -> dict[str, Any]:
    """Colour map and limits that suit a composite variable."""
    finite = values[np.isfinite(values)]
    high = float(np.percentile(finite, 98)) if finite.size else 1.0
    if name.endswith("_phase") and not name.endswith("_phase_error"):
        return {"cmap": "twilight", "vmin": 0.0, "vmax": 365.25}  # cyclic: Dec 31 meets Jan 1
    signed = name.startswith(("d", "vx", "vy")) and not name.endswith(("_error", "_amp"))
    if signed:
        limit = float(np.percentile(np.abs(finite), 98)) if finite.size else 1.0
        return {"cmap": "RdBu_r", "vmin": -(limit or 1.0), "vmax": limit or 1.0}
    return {"cmap": "viridis", "vmin": 0.0, "vmax": high or 1.0}


def _draw_outline(ax: Any, grid: xr.DataArray, outline: Any) -> None:
    geometry = outline_in_cube_crs(grid, outline)
    polygons = getattr(geometry, "geoms", [geometry])
    first = True
    for polygon in polygons:
        rings = [polygon.exterior, *polygon.interiors] if hasattr(polygon, "exterior") else []
        for ring in rings:
            x, y = ring.xy
            ax.plot(x, y, color="k", linewidth=1.2, label="glacier outline" if first else None)
            first = False


def plot_composite_map(
    composite: xr.Dataset,
    variable: str = "v_amp",
    time: Any = None,
    outline: Any = None,
    ax: Any = None,
    *,
    path: str | Path | None = None,
    cmap: str | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (6.5, 5.5),
    dpi: int = 120,
):
    """Map one variable of an annual composite, with the glacier outline over it.

    Parameters
    ----------
    composite
        An annual composite on ``(y, x)``: :func:`xr_itslive.composite`'s result or
        ITS_LIVE's own (``v``, ``vx``, ``vy``, ``*_error``, ``count`` per year along
        ``time``; ``v0``, ``v_amp``, ``v_phase``, ``dv_dt``... for the climatology).
    variable
        The variable to map. ``*_phase`` (day of the seasonal maximum, days after January 1)
        gets the cyclic ``twilight`` colour map and day-of-year ticks, so that late December
        and early January look alike; signed variables (``vx``, ``vy``, ``dv_dt``) a
        diverging one centred on zero; the others ``viridis`` from zero.
    time
        For a per-year variable: the year (``2020``, ``"2020"`` or a date in it); by default
        the last year.
    outline
        Optional glacier outline in any form :func:`xr_itslive.glacier_mask` takes (a
        :class:`~xr_itslive.Glacier`, a GeoDataFrame, a shapely geometry, a file path),
        reprojected to the composite's CRS.
    ax
        Matplotlib axes to draw on; a new figure otherwise.
    path
        Save the figure there (``figsize × dpi`` pixels).
    cmap
        Colour map instead of the default for the variable.
    title
        Axes title; by default the variable, its year and its long name.
    figsize, dpi
        Size of a new figure (inches) and of the saved image (dots per inch).

    Returns
    -------
    matplotlib.figure.Figure, matplotlib.axes.Axes

    Examples
    --------
    >>> fig, ax = xr_itslive.plot_composite_map(composite, "v_phase",
    ...                                         outline=glacier)  # doctest: +SKIP
    """
    if variable not in composite.data_vars:
        raise MissingVariableError(
            f"variable {variable!r} not found in the composite; it has "
            f"{sorted(map(str, composite.data_vars))}. Pass variable=... naming one of them"
        )
    da, year = _select_year(composite[variable], time)
    extra = [d for d in da.dims if d not in ("y", "x")]
    if set(da.dims) - set(extra) != {"y", "x"} or any(da.sizes[d] != 1 for d in extra):
        raise InvalidParameterError(
            f"{variable!r} has dims {dict(da.sizes)}; a map needs ('y', 'x') (and 'time' for "
            "a per-year variable)"
        )
    da = da.squeeze(extra, drop=True).transpose("y", "x")
    values = np.asarray(da.values, dtype=float)
    style = _map_style(variable, values)
    if cmap is not None:
        style["cmap"] = cmap
    fig, ax = _new_axes(ax, path, figsize)
    mesh = ax.pcolormesh(
        np.asarray(da["x"].values), np.asarray(da["y"].values), values,
        shading="nearest", **style,
    )  # fmt: skip
    units = str(composite[variable].attrs.get("units", ""))
    bar = fig.colorbar(mesh, ax=ax, shrink=0.85)
    bar.set_label(f"{variable} [{units}]" if units else variable)
    if style["cmap"] == "twilight":
        bar.set_ticks([tick for tick, _ in PHASE_TICKS])
        bar.set_ticklabels([f"{tick:.0f}\n{label}".rstrip() for tick, label in PHASE_TICKS])
    if outline is not None:
        _draw_outline(ax, composite[variable], outline)
        ax.legend(loc="lower right", fontsize="small")
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.ticklabel_format(style="plain", useOffset=False)
    if title is None:
        long_name = str(composite[variable].attrs.get("long_name", ""))
        title = f"{variable} {year}".strip() + (f"\n{long_name}" if long_name else "")
    ax.set_title(title, fontsize="medium")
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig, ax


def _one_point(composite: xr.Dataset) -> xr.Dataset:
    spatial = [d for d in ("y", "x") if d in composite.dims]
    if any(composite.sizes[d] != 1 for d in spatial):
        raise InvalidParameterError(
            f"composite_at_point has dims {dict(composite.sizes)}; select the point first, "
            "e.g. composite.sel(x=..., y=..., method='nearest')"
        )
    return composite.squeeze(spatial, drop=True) if spatial else composite


def seasonal_curve(composite_at_point: xr.Dataset, times: Any, variable: str = "v") -> np.ndarray:
    """The composite's climatological fit at ``times``: trend line plus annual sinusoid.

    ``{variable}0 + d{variable}_dt · (t - center_date) + {variable}_amp ·
    cos(2π (t - {variable}_phase / 365.25))`` with ``t`` in decimal years (the phase is the
    day of the maximum after January 1); a missing trend counts as zero.

    Parameters
    ----------
    composite_at_point
        A composite at one point (no ``y``/``x`` dimensions, or of size 1).
    times
        Dates.
    variable
        The composite's variable stem (``v``, ``vx``, ``vy``).

    Returns
    -------
    numpy.ndarray
    """
    point = _one_point(composite_at_point)
    names = [f"{variable}0", f"{variable}_amp", f"{variable}_phase"]
    missing = [n for n in names if n not in point.data_vars]
    if missing:
        raise MissingVariableError(
            f"the composite lacks {missing} for a seasonal fit of {variable!r}; it has "
            f"{sorted(map(str, point.data_vars))}"
        )
    t = decimal_years(times)
    offset, amp, phase = (float(point[n].values) for n in names)
    trend_name = f"d{variable}_dt"
    trend = float(point[trend_name].values) if trend_name in point.data_vars else 0.0
    center = point.attrs.get("center_date")
    center_year = float(decimal_years(np.datetime64(center))) if center else float(np.mean(t))
    if not np.isfinite(trend):
        trend = 0.0
    return offset + trend * (t - center_year) + amp * np.cos(2 * np.pi * (t - phase / 365.25))


def plot_point_composite(
    series: xr.Dataset | xr.DataArray,
    composite_at_point: xr.Dataset,
    variable: str = "v",
    *,
    gp: Any = None,
    ax: Any = None,
    path: str | Path | None = None,
    title: str | None = None,
    max_pairs: int | None = 20000,
    figsize: tuple[float, float] = (11.0, 4.5),
    dpi: int = 120,
):
    """A point's series with its annual composite over it: annual means and the seasonal fit.

    Parameters
    ----------
    series
        The point's series: its image pairs (one pixel along ``mid_date``, drawn as bars
        over their intervals) or a regular series along ``time`` (an
        :func:`xr_itslive.invert` or :func:`xr_itslive.gp_regress` result of the pixel, or a
        DataArray; drawn as steps over ``time_bounds`` when present).
    composite_at_point
        The annual composite at the same point (``composite.sel(x=..., y=...,
        method="nearest")``): ``{variable}`` per year (steps over each year, with
        ``{variable}_error`` as a band when present) and the climatology ``{variable}0``,
        ``{variable}_amp``, ``{variable}_phase`` (and ``d{variable}_dt``) as a curve.
    variable
        The velocity variable (``v``, ``vx``, ``vy``).
    gp
        With pairs: a GP to draw too, as in :func:`~xr_itslive.plot_series`.
    ax, path, title, max_pairs
        As in :func:`~xr_itslive.plot_series`.
    figsize, dpi
        Size of a new figure (inches) and of the saved image (dots per inch).

    Returns
    -------
    matplotlib.figure.Figure, matplotlib.axes.Axes

    Examples
    --------
    >>> point = composite.sel(x=x0, y=y0, method="nearest")  # doctest: +SKIP
    >>> xr_itslive.plot_point_composite(series, point, "v", path="point.png")  # doctest: +SKIP
    """
    point = _one_point(composite_at_point)
    if variable not in point.data_vars:
        raise MissingVariableError(
            f"the composite has no {variable!r}; it has {sorted(map(str, point.data_vars))}"
        )
    fig, ax = _new_axes(ax, path, figsize)
    is_pairs = isinstance(series, xr.Dataset) and "mid_date" in series.dims
    if is_pairs:
        plot_series(series, variable, gp=gp, ax=ax, max_pairs=max_pairs, title="")
    else:
        t, v, bounds = _series_line(series, variable)
        if bounds is not None and bounds.shape == (t.size, 2):
            edges = np.concatenate([bounds[:, 0], bounds[-1:, 1]])
            ax.stairs(v, edges, baseline=None, color="tab:blue", linewidth=1.2, label="series")
        else:
            ax.plot(t, v, color="tab:blue", linewidth=1.2, label="series")
    annual = point[variable]
    years = np.asarray(annual["time"].values)
    if "time_bounds" in point.variables:
        bounds = np.asarray(point["time_bounds"].values).astype("datetime64[ns]")
    else:  # calendar years around the per-year time stamps
        start = years.astype("datetime64[Y]")
        bounds = np.stack([start, start + np.timedelta64(1, "Y")], axis=1).astype("datetime64[ns]")
    means = np.asarray(annual.values, float)
    error_name = f"{variable}_error"
    errors = (
        np.asarray(point[error_name].values, float)
        if error_name in point.data_vars
        else np.full(means.shape, np.nan)
    )
    labelled = {"mean": False, "error": False}
    for span, mean, error in zip(bounds, means, errors, strict=True):
        if not np.isfinite(mean):
            continue  # a year left out of the composite (too few pairs)
        if np.isfinite(error):
            label = None if labelled["error"] else "annual mean ± error"
            ax.fill_between(
                span, mean - error, mean + error, color="tab:red", alpha=0.15, linewidth=0,
                label=label,
            )  # fmt: skip
            labelled["error"] = True
        label = None if labelled["mean"] else "composite annual mean"
        ax.plot(span, [mean, mean], color="tab:red", linewidth=2.2, label=label)
        labelled["mean"] = True
    if {f"{variable}0", f"{variable}_amp", f"{variable}_phase"} <= set(point.data_vars):
        days = np.arange(bounds[0, 0], bounds[-1, 1], np.timedelta64(1, "D"))
        curve = seasonal_curve(point, days, variable)
        window = point.attrs.get("climatology_years")
        label = "seasonal fit"
        if window is not None and len(window) == 2:
            label += f" ({int(window[0])}-{int(window[1])} climatology)"
        ax.plot(days, curve, color="k", linewidth=1.0, linestyle="--", label=label)
    else:
        curve = np.zeros(0)
    # the series' framing (the bulk of the pairs) must not hide the composite
    shown = np.concatenate([means, means + errors, means - errors, curve])
    shown = shown[np.isfinite(shown)]
    if shown.size:
        low, high = ax.get_ylim()
        pad = 0.05 * (max(high, shown.max()) - min(low, shown.min()) or 1.0)
        ax.set_ylim(min(low, shown.min() - pad), max(high, shown.max() + pad))
    units = str(point[variable].attrs.get("units", ""))
    ax.set_ylabel(f"{variable} [{units}]" if units else variable)
    ax.set_xlabel("date")
    ax.set_title(
        title if title is not None else f"{variable}: the point's series and its composite"
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    if path is not None:
        fig.savefig(path, dpi=dpi)
    return fig, ax
