"""The ``ds.itslive`` accessor: names and defaults only; the work is in the function layer."""

from __future__ import annotations

import xarray as xr


@xr.register_dataset_accessor("itslive")
class ITSLiveAccessor:
    """ITS_LIVE methods on an image-pair cube (``mid_date × y × x``) or a result of it."""

    def __init__(self, obj: xr.Dataset) -> None:
        self._obj = obj

    # --- inversion core (issue 2) ---

    # --- subsets, filters, glaciers (issue 3) ---

    # --- scaling out (issue 4) ---

    # --- robust / GP / plots (issue 5) ---
