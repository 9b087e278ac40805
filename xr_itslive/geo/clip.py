"""Clip a cube to a glacier outline."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .masks import glacier_mask
from .subset import apply_mask


def clip(
    ds: xr.Dataset,
    outline: Any,
    *,
    crs: Any = None,
    all_touched: bool = False,
    drop: bool = True,
) -> xr.Dataset:
    """Keep a glacier's pixels: crop to the outline's box and set the rest to NaN, lazily.

    Parameters
    ----------
    ds
        An ITS_LIVE cube.
    outline
        Anything :func:`xr_itslive.glacier_mask` accepts (a shapely geometry, a
        GeoDataFrame/GeoSeries, a :class:`~xr_itslive.Glacier`, a file path).
    crs
        CRS of a bare shapely ``outline`` (default: the cube's).
    all_touched
        Count pixels the outline touches, not only those whose centre is inside.
    drop
        Crop to the rows and columns that hold outline pixels.

    Returns
    -------
    xarray.Dataset
        With a boolean ``glacier_mask`` ``(y, x)`` coordinate.
    """
    mask = glacier_mask(ds, outline, crs=crs, all_touched=all_touched)
    if drop:
        rows = np.flatnonzero(mask.values.any(axis=1))
        cols = np.flatnonzero(mask.values.any(axis=0))
        window_ = {"y": slice(rows[0], rows[-1] + 1), "x": slice(cols[0], cols[-1] + 1)}
        ds, mask = ds.isel(window_), mask.isel(window_)
    out = apply_mask(ds, mask)
    return out.assign_coords(glacier_mask=mask)
