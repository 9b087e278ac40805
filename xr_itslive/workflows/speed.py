"""Speed of a velocity Dataset, the xarray layer over :mod:`xr_itslive.kernels.speed`.

Every output that holds ``vx`` and ``vy`` derives its speed here: ``v`` is the magnitude of
the component estimates, and where their standard deviations are known, ``v_std``,
``v_debiased`` and ``v_significant`` come with it (what each means, and where it fails, is in
the docstring of :mod:`xr_itslive.kernels.speed`).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InvalidParameterError, MissingVariableError
from ..kernels.namespace import empty_like_chunk, get_namespace, is_host_numpy
from ..kernels.speed import chi2_2_quantile, speed_from_components

__all__ = ["SPEED_NAMES", "flow_and_noise", "speed", "speed_variables"]

#: The variables :func:`~xr_itslive.workflows.speed.speed_variables` adds, in order (the last
#: three need the standard deviations).
SPEED_NAMES = ("v", "v_std", "v_debiased", "v_significant")


def _kernel(vx, vy, vx_std, vy_std, *, level):
    out = speed_from_components(vx, vy, vx_std, vy_std, level=level)
    return tuple(out[name] for name in SPEED_NAMES)


def _kernel_plain(vx, vy):
    return speed_from_components(vx, vy)["v"]


def speed_variables(
    vx: xr.DataArray,
    vy: xr.DataArray,
    vx_std: xr.DataArray | None = None,
    vy_std: xr.DataArray | None = None,
    *,
    level: float = 0.95,
) -> dict[str, xr.DataArray]:
    """The speed variables of two component DataArrays (lazy when they are).

    Parameters
    ----------
    vx, vy
        The component estimates, on one grid.
    vx_std, vy_std
        Their standard deviations (or errors), or None for ``v`` alone.
    level
        Probability of the significance test behind ``v_significant``.

    Returns
    -------
    dict of xarray.DataArray
        ``v``; with both standard deviations also ``v_std``, ``v_debiased`` and
        ``v_significant``; with units and long names.
    """
    if not 0 < level < 1:
        raise InvalidParameterError(f"level must be in (0, 1), got level={level!r}")
    units = str(vx.attrs.get("units", ""))
    plain = vx_std is None or vy_std is None
    arrays = (vx, vy) if plain else (vx, vy, vx_std, vy_std)
    if vx.chunks is not None:  # dask needs the output dtypes; eager arrays bring their own
        dtype = np.result_type(*(a.dtype for a in arrays))
    else:  # any array-API namespace (numpy's result_type knows only numpy's dtypes)
        dtype = get_namespace(vx.data).result_type(*(a.dtype for a in arrays))
    dtypes = [dtype] if plain else [dtype, dtype, dtype, np.dtype(bool)]
    output_dtypes: list | None = dtypes
    gufunc_kwargs: dict[str, Any] = {}
    sample = vx.data
    chunk_type = getattr(sample, "_meta", sample)
    if vx.chunks is not None and not is_host_numpy(chunk_type):
        # dask learns the chunk type from meta: CuPy chunks in, CuPy chunks (and _meta) out
        gufunc_kwargs["meta"] = tuple(empty_like_chunk(chunk_type, vx.ndim, d) for d in dtypes)
        output_dtypes = None
    outputs = xr.apply_ufunc(
        _kernel_plain if plain else _kernel,
        *arrays,
        kwargs={} if plain else {"level": level},
        output_core_dims=[[]] * len(dtypes),
        dask="parallelized",
        output_dtypes=output_dtypes,
        dask_gufunc_kwargs=gufunc_kwargs,
    )
    outputs = (outputs,) if plain else outputs
    attrs = _attributes(units, level)
    return {
        name: value.assign_attrs(attrs[name])
        for name, value in zip(SPEED_NAMES, outputs, strict=False)
    }


def _attributes(units: str, level: float) -> dict[str, dict[str, Any]]:
    return {
        "v": {"units": units, "long_name": "speed: magnitude of the component estimates"},
        "v_std": {
            "units": units,
            "long_name": "standard deviation of the speed, first-order propagation (not "
            "meaningful where v_significant is False: the speed of noisy components is "
            "Rice-distributed there)",
        },
        "v_debiased": {
            "units": units,
            "long_name": "speed corrected for the noise bias of a magnitude: "
            "sqrt(max(v^2 - vx_std^2 - vy_std^2, 0)), unbiased in v^2; average this over "
            "slow ice",
        },
        "v_significant": {
            "long_name": f"speed different from zero at {level:.0%}: "
            f"(vx/vx_std)^2 + (vy/vy_std)^2 > chi2_2({level:g}); where False, v is noise",
            "flag_values": [0, 1],
            "flag_meanings": "not_significant significant",
        },
    }


def speed(
    ds: xr.Dataset,
    *,
    components: tuple[Hashable, Hashable] = ("vx", "vy"),
    errors: str | tuple[Hashable, Hashable] | None = "auto",
    level: float = 0.95,
) -> xr.Dataset:
    """Speed of a Dataset of velocity components, with its std, bias correction and test.

    Parameters
    ----------
    ds
        Holds the two components, e.g. an :func:`xr_itslive.invert` result or an annual
        composite.
    components
        Names of the two components.
    errors
        Their standard deviations: ``"auto"`` takes ``vx_std``/``vy_std`` (the inversion's,
        the GP's, and a composite's least-squares stds of its annual means) or else
        ``vx_error``/``vy_error``, when present; a pair of names; None for ``v`` alone.
        (A composite's ``*_error`` is ITS_LIVE's convention, not the spread of the
        estimate: it is not what a test of significance should divide by.)
    level
        Probability of the significance test behind ``v_significant``.

    Returns
    -------
    xarray.Dataset
        ``v`` and, with errors, ``v_std``, ``v_debiased``, ``v_significant``.

    Examples
    --------
    >>> result = xr_itslive.invert(cube, uncertainty=True)  # doctest: +SKIP
    >>> xr_itslive.speed(result)["v_debiased"].mean("time")  # doctest: +SKIP
    """
    x, y = components
    missing = [name for name in (x, y) if name not in ds.variables]
    if missing:
        raise MissingVariableError(
            f"speed needs the components {[x, y]}; {missing} not found in "
            f"{sorted(map(str, ds.data_vars))}. Pass components=(...) naming them"
        )
    if errors == "auto":
        pairs = ((f"{x}_std", f"{y}_std"), (f"{x}_error", f"{y}_error"))
        errors = next((p for p in pairs if all(n in ds.variables for n in p)), None)
    elif errors is not None:
        if isinstance(errors, str) or len(errors) != 2:
            raise InvalidParameterError(
                f"errors must be 'auto', None or two variable names, got errors={errors!r}"
            )
        absent = [name for name in errors if name not in ds.variables]
        if absent:
            raise MissingVariableError(
                f"error variable(s) {absent} not found; the dataset has "
                f"{sorted(map(str, ds.data_vars))}. Pass errors=None for the speed alone"
            )
    stds = (None, None) if errors is None else (ds[errors[0]], ds[errors[1]])
    return xr.Dataset(speed_variables(ds[x], ds[y], *stds, level=level))


def flow_and_noise(result: xr.Dataset, *, level: float = 0.95) -> xr.Dataset:
    """Per pixel of an inversion of ``vx`` and ``vy``: the mean flow, and the noise of a cell.

    For slow, steady ice the mean velocity vector over all cells is the signal. The
    component across that mean flow carries no flow, so its scatter from cell to cell
    measures the noise of one cell's component, whatever its source (the pairs' noise, or
    seasonal errors of the images that the posterior std knows nothing of). Where the ice
    speeds up and slows down, the scatter along the flow holds that change too; across it,
    it does not.

    Parameters
    ----------
    result
        :func:`xr_itslive.invert` of ``vx`` and ``vy`` (with ``uncertainty=True`` for the
        posterior std and ``v_significant``).
    level
        Probability of the noise level a cell's speed must exceed to count as significant.

    Returns
    -------
    xarray.Dataset
        On ``(y, x)``: ``mean_vx``, ``mean_vy``, ``mean_speed`` (of the mean vector),
        ``cell_speed`` (median per-cell speed), ``across_std`` (the cells' scatter across the
        mean flow), ``upstream_fraction`` (cells whose vector points against the mean flow),
        ``significant_fraction`` (cells faster than ``sqrt(χ²₂(level)) · across_std``), and
        with the posterior std ``posterior_std`` (median of ``vx_std``, ``vy_std``) and
        ``significant_fraction_posterior`` (of ``v_significant``); on ``(year, y, x)``:
        ``annual_speed``, the speed of each calendar year's mean velocity (NaN for a year
        with fewer than 90% of the most cells: a partial year keeps part of a seasonal
        cycle).
    """
    missing = [name for name in ("vx", "vy", "v") if name not in result.variables]
    if missing:
        raise MissingVariableError(
            f"flow_and_noise needs an inversion of vx and vy; {missing} not found in "
            f"{sorted(map(str, result.data_vars))}"
        )
    if not 0 < level < 1:
        raise InvalidParameterError(f"level must be in (0, 1), got level={level!r}")
    vx, vy = result["vx"], result["vy"]
    mean_vx, mean_vy = vx.mean("time"), vy.mean("time")
    mean_speed = np.hypot(mean_vx, mean_vy)
    safe = mean_speed.where(mean_speed > 0)
    along = (vx * mean_vx + vy * mean_vy) / safe
    across = (vy * mean_vx - vx * mean_vy) / safe
    across_std = across.std("time")
    threshold = np.sqrt(chi2_2_quantile(level)) * across_std
    out = xr.Dataset(
        {
            "mean_vx": mean_vx,
            "mean_vy": mean_vy,
            "mean_speed": mean_speed,
            "cell_speed": result["v"].median("time"),
            "across_std": across_std,
            "upstream_fraction": (along < 0).where(np.isfinite(along)).mean("time"),
            "significant_fraction": (result["v"] > threshold).mean("time"),
        }
    )
    if "vx_std" in result and "vy_std" in result:
        stds = xr.concat([result["vx_std"], result["vy_std"]], "component")
        out["posterior_std"] = stds.median(("component", "time"))
    if "v_significant" in result:
        out["significant_fraction_posterior"] = result["v_significant"].mean("time")
    yearly = result[["vx", "vy"]].groupby("time.year")
    means, counts = yearly.mean(), yearly.count()["vx"]
    full = counts >= 0.9 * counts.max("year")
    out["annual_speed"] = np.hypot(means["vx"], means["vy"]).where(full)
    return out.drop_vars([c for c in out.coords if c not in ("y", "x", "year")])
