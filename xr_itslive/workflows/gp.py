"""Gaussian-process regression of a point series: the xarray layer over the model in
:mod:`xr_itslive.kernels.gp`."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import xarray as xr

from ..errors import (
    InvalidParameterError,
    MissingVariableError,
    NotAnITSLiveCubeError,
    renamed_parameters,
)
from ..io.cf import to_cf
from ..io.format import PAIR_DIM, TIME_DIM, check_dataset, check_pairs, check_variables
from ..kernels.gp import GaussianProcessFit, gp_fit

__all__ = ["GaussianProcessFit", "gp_fit", "gp_fit_series", "gp_regress", "series_arrays"]


def series_arrays(ds: Any, variable: Hashable, weights: Hashable | None = None):
    """``(img1, img2, values, errors)`` of a point series, with clear errors for anything else
    (shared by the GP and :func:`xr_itslive.plot_series`).

    Parameters
    ----------
    ds
        One pixel of an ITS_LIVE cube along ``mid_date``.
    variable
        The velocity variable.
    weights
        Where the per-pair errors come from (see :func:`~xr_itslive.gp_fit_series`); None for none.

    Returns
    -------
    tuple of numpy.ndarray
        ``(img1, img2, values, errors)``; ``errors`` is None without error weights.
    """
    check_dataset(
        ds,
        "a point series",
        "select one pixel of a cube, e.g. cube.sel(x=..., y=..., method='nearest')",
    )
    check_variables(ds, [variable], "Pass variable=... naming the velocity.")
    da = ds[variable]
    extra = [d for d in da.dims if d != PAIR_DIM]
    if PAIR_DIM not in da.dims or any(da.sizes[d] != 1 for d in extra):
        raise NotAnITSLiveCubeError(
            f"{variable!r} has dims {dict(da.sizes)}; one point series along "
            f"{PAIR_DIM!r} is needed: select a pixel first, e.g. ds.isel(x=0, y=0)"
        )
    check_pairs(ds, need_dimension=False)
    values = (
        np.asarray(da.squeeze(extra, drop=True).values, dtype=np.float64)
        if extra
        else (np.asarray(da.values, dtype=np.float64))
    )
    error = _error_variable(ds, variable, weights)
    errors = None
    if error is not None:
        if error not in ds.variables:
            raise MissingVariableError(
                f"error variable {error!r} not found; the dataset has "
                f"{sorted(map(str, ds.data_vars))}. Pass weights=None to fit the noise from dt"
            )
        errors = np.asarray(ds[error].squeeze(drop=True).values, dtype=np.float64)
        errors = np.where(errors > 0, errors, np.nan)
    img1 = np.asarray(ds["acquisition_date_img1"].values)
    img2 = np.asarray(ds["acquisition_date_img2"].values)
    return img1, img2, values, errors


def _error_variable(ds: Any, variable: Hashable, weights: Any) -> Hashable | None:
    """The name of the per-pair error variable that ``weights`` asks for, or None."""
    if weights is None:
        return None
    if weights == "auto":
        return f"{variable}_error" if f"{variable}_error" in ds.variables else None
    if weights == "error":
        return f"{variable}_error"  # as in invert(weights="error"): missing is an error
    return weights  # the name of an error variable


@renamed_parameters(error="weights")
def gp_fit_series(
    ds: xr.Dataset, variable: Hashable = "v", *, weights: Hashable | None = "auto", **kwargs
) -> GaussianProcessFit:
    """Fit :func:`~xr_itslive.gp_fit` to one point series (a Dataset along ``mid_date``).

    Parameters
    ----------
    ds
        One pixel of an ITS_LIVE cube (``acquisition_date_img1/2`` along ``mid_date``).
    variable
        The velocity variable.
    weights
        The per-pair errors that weight the pairs (the noise is ``error_scale`` times them),
        as in :func:`xr_itslive.invert`: ``"error"`` uses ``f"{variable}_error"``,
        ``"auto"`` uses it when present, ``None`` fits a ``1 / dt`` noise instead; another
        name picks that error variable. (``error=``, the old spelling, still works for one
        release.)
    **kwargs
        Passed to :func:`~xr_itslive.gp_fit`.
    """
    img1, img2, values, errors = series_arrays(ds, variable, weights)
    return gp_fit(img1, img2, values, errors, **kwargs)


@renamed_parameters(error="weights")
def gp_regress(
    ds: xr.Dataset,
    variable: Hashable = "v",
    *,
    times: Any = None,
    freq: str = "6D",
    weights: Hashable | None = "auto",
    **kwargs,
) -> xr.Dataset:
    """GP regression of a point series onto a time axis.

    Parameters
    ----------
    ds
        One pixel of an ITS_LIVE cube along ``mid_date``.
    variable, weights
        See :func:`~xr_itslive.gp_fit_series`.
    times
        Dates to predict at; by default every ``freq`` across the pairs' extent.
    freq
        A pandas frequency such as ``"6D"``: the spacing of the default ``times``.
    **kwargs
        Passed to :func:`~xr_itslive.gp_fit`.

    Returns
    -------
    xarray.Dataset
        ``{variable}`` (posterior mean) and ``{variable}_std`` along ``time``; the fitted
        hyperparameters in the attributes (``gp_*``).

    Examples
    --------
    >>> series = cube.isel(x=1, y=1)  # doctest: +SKIP
    >>> result = xr_itslive.gp_regress(series, "v")  # doctest: +SKIP
    """
    fit = gp_fit_series(ds, variable, weights=weights, **kwargs)
    if times is None:
        first = np.datetime64(fit.start, "D") + np.timedelta64(1, "D")
        last = np.datetime64(fit.end, "D") - np.timedelta64(1, "D")
        import pandas as pd

        try:
            times = pd.date_range(first, last, freq=freq).to_numpy("datetime64[ns]")
        except ValueError as err:
            raise InvalidParameterError(
                f"freq={freq!r} is not a pandas frequency; pass e.g. freq='6D' or times=..."
            ) from err
    times = np.asarray(times, dtype="datetime64[ns]")
    mean, std = fit.predict(times)
    attrs = {f"gp_{k}": float(v) for k, v in fit.params.items()}
    attrs.update(
        gp_step_days=fit.step,
        gp_harmonics=fit._harmonics,
        gp_n_pairs=fit.n_pairs,
        gp_log_marginal_likelihood=fit.log_marginal_likelihood,
        gp_uses_errors=int(fit.uses_errors),
    )
    units = ds[variable].attrs.get("units")
    var_attrs = {"units": units} if units else {}
    # the point's place (scalar x, y and the grid mapping of a pixel's series) stays with it
    place = ("x", "y", "mapping", "spatial_ref")
    location = {c: ds[c].variable for c in place if c in ds.coords and ds[c].ndim == 0}
    result = xr.Dataset(
        {
            str(variable): (TIME_DIM, mean, {**var_attrs, "long_name": "GP posterior mean"}),
            f"{variable}_std": (TIME_DIM, std, {**var_attrs, "long_name": "GP posterior std"}),
        },
        coords={TIME_DIM: times, **location},
        attrs=attrs,
    )
    # CF-1.8, and writable by every netCDF writer and zarr (xr_itslive/io/cf.py)
    title = "ITS_LIVE point series by Gaussian-process regression (xr_itslive)"
    return to_cf(result, title=title, history="xr_itslive.gp_regress")
