"""One-call plots of a point series: pairs as bars, an inverted series, a GP with its band."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import InvalidParameterError, MissingVariableError
from .workflows.gp import GaussianProcessFit, gp_fit_series, series_arrays

__all__ = ["plot_series"]


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
        Optional :class:`xr_itslive.GaussianProcessFit` (or ``True`` to fit one with
        :func:`xr_itslive.gp_fit_series`); its mean and central ``level`` band are drawn.
    times
        Where to evaluate the GP; by default 1,000 dates across its grid.
    level
        Probability of the GP's central band, in (0, 1); default 0.95.
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
        fit = gp_fit_series(series, variable) if gp is True else gp
        if not isinstance(fit, GaussianProcessFit):
            raise InvalidParameterError(
                f"gp must be a GaussianProcessFit (from xr_itslive.gp_fit...) or True, got "
                f"{type(gp).__name__}"
            )
        if times is None:
            start = np.datetime64(fit.start, "ns")
            span = np.datetime64(fit.end, "ns") - start
            times = start + (span * np.linspace(0.002, 0.998, 1000)).astype("timedelta64[ns]")
        mean, std = fit.predict(times)
        from scipy.special import ndtri

        half = ndtri(0.5 + level / 2) * std
        ax.fill_between(times, mean - half, mean + half, color="tab:orange", alpha=0.3,
                        linewidth=0, label=f"GP {level:.0%} band")  # fmt: skip
        ax.plot(times, mean, color="tab:orange", linewidth=1.8, label="GP mean")

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
