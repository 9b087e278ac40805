"""The ``ds.itslive`` accessor: names and defaults only; the work is in the function layer."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import xarray as xr

if TYPE_CHECKING:  # annotations only
    from .store import WriteSummary


@xr.register_dataset_accessor("itslive")
class ITSLiveAccessor:
    """ITS_LIVE methods on an image-pair cube (``mid_date × y × x``) or a result of it."""

    def __init__(self, obj: xr.Dataset) -> None:
        self._obj = obj

    # --- inversion ---
    def design_matrix(self, step: float = 12.0, start=None, end=None, derivative: int = 2):
        """The date-span design matrix and regularizer; see :func:`xr_itslive.design_matrix`."""
        from .invert import design_matrix

        return design_matrix(self._obj, step=step, start=start, end=end, derivative=derivative)

    def invert(self, variables=("vx", "vy"), **kwargs) -> xr.Dataset:
        """Invert to a regular time series; see :func:`xr_itslive.invert` for the parameters."""
        from .invert import invert

        return invert(self._obj, variables, **kwargs)

    def predict(self, result: xr.Dataset, variables=None) -> xr.Dataset:
        """Mean velocity of ``result`` over each pair's interval; see :func:`xr_itslive.predict`."""
        from .invert import predict

        return predict(self._obj, result, variables)

    # --- subsets, filters, glaciers ---
    def point(self, lon=None, lat=None, *, x=None, y=None, max_offset=None) -> xr.Dataset:
        """Series of the pixel nearest a point; see :func:`xr_itslive.subset.point_series`."""
        from .subset import point_series

        return point_series(self._obj, lon, lat, x=x, y=y, max_offset=max_offset)

    def window(self, lon=None, lat=None, *, x=None, y=None, size=3, clip_edges=False):
        """``size × size`` pixels around a point; see :func:`xr_itslive.subset.window`."""
        from .subset import window

        return window(self._obj, lon, lat, x=x, y=y, size=size, clip_edges=clip_edges)

    def bbox(self, bounds, *, crs=None) -> xr.Dataset:
        """Pixels in a box; see :func:`xr_itslive.subset.bbox`."""
        from .subset import bbox

        return bbox(self._obj, bounds, crs=crs)

    def clip(self, outline, *, crs=None, all_touched=False, drop=True) -> xr.Dataset:
        """Crop to an outline, NaN outside; see :func:`xr_itslive.subset.clip`."""
        from .subset import clip

        return clip(self._obj, outline, crs=crs, all_touched=all_touched, drop=drop)

    def glacier_mask(self, outline, *, crs=None, all_touched=False) -> xr.DataArray:
        """Boolean ``(y, x)`` glacier mask; see :func:`xr_itslive.glaciers.glacier_mask`."""
        from .glaciers import glacier_mask

        return glacier_mask(self._obj, outline, crs=crs, all_touched=all_touched)

    def centerline(self, line, *, spacing=None, crs=None) -> xr.Dataset:
        """Series along a centerline; see :func:`xr_itslive.glaciers.centerline_series`."""
        from .glaciers import centerline_series

        return centerline_series(self._obj, line, spacing=spacing, crs=crs)

    def filter(self, **criteria) -> xr.Dataset:
        """Keep pairs by mission, satellite, sensor, dates, baseline, valid fraction; see
        :func:`xr_itslive.subset.filter_pairs` for the keywords."""
        from .subset import filter_pairs

        return filter_pairs(self._obj, **criteria)

    # --- resumable writes ---
    def invert_to_zarr(self, store: str | os.PathLike, **kwargs: Any) -> WriteSummary:
        """Invert and write chunk by chunk, resumably; see :func:`xr_itslive.invert_to_zarr`."""
        from .store import invert_to_zarr

        return invert_to_zarr(self._obj, store, **kwargs)

    def to_zarr_resumable(self, store: str | os.PathLike, **kwargs: Any) -> WriteSummary:
        """Write a (lazy) result chunk by chunk; see :func:`xr_itslive.write_resumable`."""
        from .store import write_resumable

        return write_resumable(self._obj, store, **kwargs)

    # --- point series: GP and plots ---
    def gp(self, variable="v", *, times=None, error="auto", **kwargs) -> xr.Dataset:
        """GP regression of this point series; see :func:`xr_itslive.gp_regress`."""
        from .gp import gp_regress

        return gp_regress(self._obj, variable, times=times, error=error, **kwargs)

    def gp_fit(self, variable="v", *, error="auto", **kwargs):
        """The fitted GP of this point series; see :func:`xr_itslive.gp_fit_series`."""
        from .gp import gp_fit_series

        return gp_fit_series(self._obj, variable, error=error, **kwargs)

    def plot_series(self, variable="v", **kwargs):
        """Pairs as bars, an inverted series and a GP; see :func:`xr_itslive.plot_series`."""
        from .plot import plot_series

        return plot_series(self._obj, variable, **kwargs)
