"""The ``ds.itslive`` accessor: names only; the work, the parameters and their defaults are the
functions' own.

Each method is the library function of the same concept with the Dataset as its first
argument: its signature and docstring are taken from that function, so that a default or a
parameter is defined once (no restated defaults) and the accessor cannot drift from it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import xarray as xr

from .geo.centerlines import centerline_series
from .geo.clip import clip
from .geo.masks import glacier_mask
from .geo.pairs import filter_pairs
from .geo.subset import bbox, point_series, window
from .plot import plot_series
from .workflows.composite import composite, composite_to_zarr, seasonal
from .workflows.gp import gp_fit_series, gp_regress
from .workflows.invert import design_matrix, invert, predict
from .workflows.invert_to_zarr import invert_to_zarr
from .workflows.store import write_resumable


def _method(func: Callable[..., Any], name: str, summary: str) -> Callable[..., Any]:
    """``func(ds, ...)`` as the method ``ds.itslive.<name>(...)``, with its signature and
    docstring (the Dataset parameter dropped from the signature)."""

    def method(self: ITSLiveAccessor, *args: Any, **kwargs: Any) -> Any:
        return func(self._obj, *args, **kwargs)

    signature = inspect.signature(func)
    parameters = list(signature.parameters.values())
    this = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = signature.replace(parameters=[this, *parameters[1:]])  # type: ignore[attr-defined]
    method.__name__ = name
    method.__qualname__ = f"ITSLiveAccessor.{name}"
    method.__module__ = __name__
    reference = f":func:`{func.__module__}.{func.__name__}`"
    body = inspect.cleandoc(func.__doc__ or "")
    first, _, rest = body.partition("\n\n")
    method.__doc__ = (
        f"{summary}\n\n{reference} on this Dataset (its ``{parameters[0].name}``): {first}"
        + (f"\n\n{rest}" if rest else "")
    )
    return method


@xr.register_dataset_accessor("itslive")
class ITSLiveAccessor:
    """ITS_LIVE methods on an image-pair cube (``mid_date × y × x``) or a result of it.

    Parameters
    ----------
    obj
        The Dataset (``ds.itslive`` builds this for you).
    """

    def __init__(self, obj: xr.Dataset) -> None:
        self._obj = obj

    # --- inversion ---
    design_matrix = _method(
        design_matrix, "design_matrix", "The date-span design matrix and regularizer."
    )
    invert = _method(invert, "invert", "Invert every pixel to a regular time series.")
    predict = _method(predict, "predict", "The model's mean velocity over each pair's interval.")

    # --- composites ---
    composite = _method(
        composite, "composite", "ITS_LIVE's annual and climatological composites of the pairs."
    )
    seasonal = _method(
        seasonal, "seasonal", "The composite's variables from this inversion result."
    )

    # --- subsets, filters, glaciers ---
    point = _method(point_series, "point", "The series of the pixel nearest a point.")
    window = _method(window, "window", "``size × size`` pixels around a point.")
    bbox = _method(bbox, "bbox", "The pixels in a box.")
    clip = _method(clip, "clip", "Crop to a glacier outline, NaN outside.")
    glacier_mask = _method(glacier_mask, "glacier_mask", "Boolean ``(y, x)`` glacier mask.")
    centerline = _method(centerline_series, "centerline", "The series along a centerline.")
    filter = _method(
        filter_pairs,
        "filter",
        "Keep pairs by mission, satellite, sensor, dates, baseline, valid fraction.",
    )

    # --- resumable writes ---
    invert_to_zarr = _method(
        invert_to_zarr, "invert_to_zarr", "Invert and write chunk by chunk, resumably."
    )
    composite_to_zarr = _method(
        composite_to_zarr, "composite_to_zarr", "Composite and write chunk by chunk, resumably."
    )
    to_zarr_resumable = _method(
        write_resumable, "to_zarr_resumable", "Write a (lazy) result chunk by chunk, resumably."
    )

    # --- point series: GP and plots ---
    gp = _method(gp_regress, "gp", "GP regression of this point series.")
    gp_fit = _method(gp_fit_series, "gp_fit", "The fitted GP of this point series.")
    plot_series = _method(plot_series, "plot_series", "Pairs as bars, an inverted series and a GP.")
