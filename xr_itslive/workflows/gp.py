"""Gaussian-process regression of a point series: the xarray layer over the model in
:mod:`xr_itslive.kernels.gp`."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import xarray as xr
from scipy.special import ndtri

from ..errors import (
    InvalidParameterError,
    MissingVariableError,
    NotAnITSLiveCubeError,
    renamed_parameters,
)
from ..io.cf import to_cf
from ..io.format import (
    PAIR_DATE_VARIABLES,
    PAIR_DIM,
    TIME_DIM,
    check_dataset,
    check_pairs,
    check_variables,
)
from ..kernels.gp import GaussianProcessFit, gp_fit
from ..kernels.speed import nonnegative_summary, speed_band
from .invert import check_cube
from .speed import speed_variables

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
    error = _error_variable(ds, variable, weights)
    _check_decoded(ds, [variable] + ([error] if error in ds.data_vars else []))
    values = (
        np.asarray(da.squeeze(extra, drop=True).values, dtype=np.float64)
        if extra
        else (np.asarray(da.values, dtype=np.float64))
    )
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


def _check_decoded(ds: xr.Dataset, names: list[Hashable]) -> None:
    """The inversion's checks of a cube (:func:`~xr_itslive.workflows.invert.check_cube`,
    with its messages) on the variables a series is read from: above all undecoded
    integers, whose fill value -32767 a GP would fit as a velocity like any other (a cube
    opened with ``mask_and_scale=False``). The GP reads a series whole, so one split along
    ``mid_date`` is checked as if in one chunk (lazily: nothing is read here)."""
    names = [n for n in names if PAIR_DIM in ds[n].dims]
    if any(ds[n].chunks is not None for n in names):
        dates = [d for d in PAIR_DATE_VARIABLES if d in ds.data_vars]  # coords come along
        ds = ds[[*names, *dates]].chunk({PAIR_DIM: -1})
    check_cube(ds, names)


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
    ds: xr.Dataset,
    variable: Hashable = "v",
    *,
    weights: Hashable | None = "auto",
    nonnegative: bool | None = None,
    **kwargs,
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
    nonnegative
        Mark the fit as one of a quantity that cannot be negative, so that its
        :meth:`~xr_itslive.GaussianProcessFit.predict` gives the posterior given ``>= 0``;
        by default for ``variable="v"`` (a speed fitted directly).
    **kwargs
        Passed to :func:`~xr_itslive.gp_fit`.
    """
    img1, img2, values, errors = series_arrays(ds, variable, weights)
    fit = gp_fit(img1, img2, values, errors, **kwargs)
    fit.nonnegative = (str(variable) == "v") if nonnegative is None else bool(nonnegative)
    return fit


@renamed_parameters(error="weights")
def gp_regress(
    ds: xr.Dataset,
    variable: Hashable = "v",
    *,
    times: Any = None,
    freq: str = "1D",
    weights: Hashable | None = "auto",
    level: float = 0.95,
    components: str | tuple[Hashable, Hashable] | None = "auto",
    nonnegative: bool | None = None,
    **kwargs,
) -> xr.Dataset:
    """GP regression of a point series onto a time axis (daily by default), with its band.

    The speed is never fitted where its components can be: ``variable="v"`` on a series that
    holds ``vx`` and ``vy`` fits one GP to each component and reports the speed as the
    magnitude of their posterior means, with the central ``level`` band of the speed under
    the two posteriors (by sampling; never below zero, and from zero where the vector is not
    significantly different from zero: ``xr_itslive.kernels.speed.speed_band``).
    The pairs' own ``v`` are magnitudes of noisy components, biased high where the noise is
    not small against the speed (short pairs, slow ice), a bias a GP of ``v`` would inherit.
    A series of ``v`` alone (such as ITS_LIVE's point CSV exports) is fitted as it is, and
    its posterior is conditioned on ``v >= 0`` pointwise (a truncated normal), so that
    neither the mean nor the band goes below zero.

    Parameters
    ----------
    ds
        One pixel of an ITS_LIVE cube along ``mid_date``.
    variable, weights
        See :func:`~xr_itslive.gp_fit_series` (``weights`` applies to each component:
        ``"auto"`` uses ``vx_error``/``vy_error`` when present).
    times
        Dates to predict at; by default every ``freq`` across the pairs' extent.
    freq
        A pandas frequency such as ``"1D"`` (the default: daily) for the default ``times``.
    level
        Probability of the central band (``*_lower``, ``*_upper``), in (0, 1).
    components
        The two components to fit for ``variable="v"``: ``"auto"`` takes ``("vx", "vy")``
        when the series has both, a pair of names, or None to fit ``variable`` itself.
    nonnegative
        Condition a directly fitted ``variable`` on being ``>= 0``; by default for ``"v"``.
    **kwargs
        Passed to :func:`~xr_itslive.gp_fit` (for each component).

    Returns
    -------
    xarray.Dataset
        Along ``time``: ``{variable}`` (posterior mean), ``{variable}_std``,
        ``{variable}_lower`` and ``{variable}_upper`` (the ``level`` band); with components
        also each component's mean and ``_std``, and as in every speed of the package
        (:func:`xr_itslive.speed`) ``{variable}_debiased`` (``sqrt(max(v² - vx_std² -
        vy_std², 0))``) and ``{variable}_significant`` (the vector of the posterior means
        differs from zero at ``level``: exactly where ``{variable}_lower > 0``). The fitted
        hyperparameters are in the attributes (``gp_*``, or ``gp_vx_*`` and ``gp_vy_*``),
        with ``gp_at_bounds`` naming any that stopped at a bound of the search.

    Examples
    --------
    >>> series = cube.isel(x=1, y=1)  # doctest: +SKIP
    >>> result = xr_itslive.gp_regress(series, "v")  # doctest: +SKIP
    """
    if not 0 < level < 1:
        raise InvalidParameterError(f"level must be in (0, 1), got level={level!r}")
    pair = _components(ds, variable, components)
    names = [str(variable)] if pair is None else [str(c) for c in pair]
    # raw Gaussian posteriors: the conditioning on v >= 0 is done below, with its band
    fits = {
        name: gp_fit_series(ds, name, weights=weights, nonnegative=False, **kwargs)
        for name in names
    }
    if times is None:
        # where every fit's grid is (the components' pairs may differ by a NaN or two)
        first = max(np.datetime64(f.start, "D") for f in fits.values()) + np.timedelta64(1, "D")
        last = min(np.datetime64(f.end, "D") for f in fits.values()) - np.timedelta64(1, "D")
        import pandas as pd

        try:
            times = pd.date_range(first, last, freq=freq).to_numpy("datetime64[ns]")
        except ValueError as err:
            raise InvalidParameterError(
                f"freq={freq!r} is not a pandas frequency; pass e.g. freq='1D' or times=..."
            ) from err
    times = np.asarray(times, dtype="datetime64[ns]")
    predicted = {name: fit.predict(times) for name, fit in fits.items()}
    units = ds[names[0]].attrs.get("units")
    var_attrs = {"units": units} if units else {}
    band = f"central {level:.0%} band"
    data: dict[str, Any] = {}
    attrs: dict[str, Any] = {"gp_level": float(level)}
    if pair is None:
        mean, std = predicted[names[0]]
        name = names[0]
        positive = (name == "v") if nonnegative is None else bool(nonnegative)
        if positive:
            mean, std, lower, upper = nonnegative_summary(mean, std, level=level)
            what = f"GP posterior of {name} given {name} >= 0 (truncated normal)"
        else:
            half = float(ndtri(0.5 + level / 2)) * std
            lower, upper = mean - half, mean + half
            what = f"GP posterior of {name}"
        data[name] = (TIME_DIM, mean, {**var_attrs, "long_name": f"mean of the {what}"})
        data[f"{name}_std"] = (TIME_DIM, std, {**var_attrs, "long_name": f"std of the {what}"})
        data[f"{name}_lower"] = (TIME_DIM, lower, {**var_attrs, "long_name": f"{band}: lower"})
        data[f"{name}_upper"] = (TIME_DIM, upper, {**var_attrs, "long_name": f"{band}: upper"})
        attrs.update(_fit_attributes(fits[name], "gp_"))
        attrs["gp_nonnegative"] = int(positive)
    else:
        (mx, sx), (my, sy) = (predicted[n] for n in names)
        for name, (mean, std) in zip(names, ((mx, sx), (my, sy)), strict=True):
            what = f"GP posterior of {name}"
            data[name] = (TIME_DIM, mean, {**var_attrs, "long_name": f"mean of the {what}"})
            data[f"{name}_std"] = (TIME_DIM, std, {**var_attrs, "long_name": f"std of the {what}"})
            attrs.update(_fit_attributes(fits[name], f"gp_{name}_"))
        # the package's one speed (as the inversion's and the composite's): the magnitude,
        # its std, and from the posterior stds the bias correction and the test against zero
        speed = speed_variables(
            *(xr.DataArray(a, dims=TIME_DIM, attrs=var_attrs) for a in (mx, my, sx, sy)),
            level=level,
        )
        lower, upper = speed_band(mx, my, sx, sy, level=level)
        name = str(variable)
        data[name] = (
            TIME_DIM, speed["v"].values,
            {**var_attrs, "long_name": f"speed: magnitude of the GP means of {names}"},
        )  # fmt: skip
        data[f"{name}_std"] = (
            TIME_DIM, speed["v_std"].values,
            {**var_attrs, "long_name": "std of the speed, first order (not meaningful near 0)"},
        )  # fmt: skip
        for kind in ("debiased", "significant"):
            data[f"{name}_{kind}"] = speed[f"v_{kind}"].variable
        for end, values in (("lower", lower), ("upper", upper)):
            data[f"{name}_{end}"] = (
                TIME_DIM, values,
                {**var_attrs, "long_name": f"{band} of the speed under the components' "
                 f"posteriors (sampled; from 0 where the vector is not significant): {end}"},
            )  # fmt: skip
        attrs["gp_components"] = " ".join(names)  # a string: any netCDF writer stores it
    at_bounds = [
        f"{prefix}{k} ({side})"
        for prefix, fit in (("", fits[n]) if pair is None else (f"{n}:", fits[n]) for n in names)
        for k, side in fit.at_bounds().items()
    ]
    attrs["gp_at_bounds"] = ", ".join(at_bounds)
    # the point's place (scalar x, y and the grid mapping of a pixel's series) stays with it
    place = ("x", "y", "mapping", "spatial_ref")
    location = {c: ds[c].variable for c in place if c in ds.coords and ds[c].ndim == 0}
    result = xr.Dataset(
        data,
        coords={TIME_DIM: times, **location},
        attrs=attrs,
    )
    # CF-1.8, and writable by every netCDF writer and zarr (xr_itslive/io/cf.py)
    title = "ITS_LIVE point series by Gaussian-process regression (xr_itslive)"
    return to_cf(result, title=title, history="xr_itslive.gp_regress")


def _components(
    ds: xr.Dataset, variable: Hashable, components: Any
) -> tuple[Hashable, Hashable] | None:
    """The two components to fit for ``variable``, or None to fit it directly."""
    if components is None:
        return None
    if isinstance(components, str):
        if components != "auto":
            raise InvalidParameterError(
                f"components must be 'auto', None or two variable names, got {components!r}"
            )
        have = "vx" in ds.variables and "vy" in ds.variables
        return ("vx", "vy") if variable == "v" and have else None
    try:
        x, y = components
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(
            f"components must be 'auto', None or two variable names, got {components!r}"
        ) from err
    missing = [str(c) for c in (x, y) if c not in ds.variables]
    if missing:
        raise MissingVariableError(
            f"components {missing} not found; the dataset has {sorted(map(str, ds.data_vars))}."
            " Pass components=None to fit the variable itself"
        )
    return x, y


def _fit_attributes(fit: GaussianProcessFit, prefix: str) -> dict[str, Any]:
    attrs = {f"{prefix}{k}": float(v) for k, v in fit.params.items()}
    attrs.update(
        {
            f"{prefix}step_days": fit.step,
            f"{prefix}harmonics": fit.harmonics,
            f"{prefix}n_pairs": fit.n_pairs,
            f"{prefix}log_marginal_likelihood": fit.log_marginal_likelihood,
            f"{prefix}uses_errors": int(fit.uses_errors),
            f"{prefix}min_length_scale": float(fit.bounds.get("length_scale", (np.nan,))[0]),
        }
    )
    return attrs
