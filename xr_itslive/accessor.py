"""The ``ds.itslive`` accessor: names and defaults only; the work is in the function layer."""

from __future__ import annotations

import xarray as xr


@xr.register_dataset_accessor("itslive")
class ITSLiveAccessor:
    """ITS_LIVE methods on an image-pair cube (``mid_date × y × x``) or a result of it."""

    def __init__(self, obj: xr.Dataset) -> None:
        self._obj = obj

    # --- inversion core (issue 2) ---
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

    # --- subsets, filters, glaciers (issue 3) ---

    # --- scaling out (issue 4) ---

    # --- robust / GP / plots (issue 5) ---
