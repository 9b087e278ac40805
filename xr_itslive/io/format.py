"""What an ITS_LIVE image-pair cube holds, and the one check every entry point runs.

A cube has a ``mid_date`` dimension (one entry per image pair) and the two acquisition dates
of every pair. :func:`~xr_itslive.open_cube`, :func:`xr_itslive.invert`, :func:`xr_itslive.predict`,
:func:`xr_itslive.design_matrix` and the GP of a point series all call :func:`check_pairs`
(and :func:`check_variables`), so that a wrong input gets the same clear message wherever it
enters.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

import xarray as xr

from ..errors import MissingVariableError, NotAnITSLiveCubeError

#: The pair dimension of ITS_LIVE cubes.
PAIR_DIM = "mid_date"
#: The time dimension of regular series (inversions, GP regressions).
TIME_DIM = "time"
#: Per-pair variables every inversion needs (loaded eagerly: they are small).
PAIR_DATE_VARIABLES = ("acquisition_date_img1", "acquisition_date_img2")


def check_dataset(
    ds: Any, what: str = "an ITS_LIVE cube", hint: str = "open one with xr_itslive.open_cube(...)"
) -> None:
    """Raise :class:`~xr_itslive.NotAnITSLiveCubeError` unless ``ds`` is a Dataset.

    Parameters
    ----------
    ds
        The object to check.
    what
        What the Dataset should be, for the message.
    hint
        How to get one, for the message.
    """
    if not isinstance(ds, xr.Dataset):
        raise NotAnITSLiveCubeError(
            f"expected an xarray.Dataset ({what}), got {type(ds).__name__}; {hint}"
        )


def check_pairs(ds: xr.Dataset, *, need_dimension: bool = True) -> None:
    """Raise :class:`~xr_itslive.NotAnITSLiveCubeError` unless ``ds`` is an image-pair cube.

    Parameters
    ----------
    ds
        The Dataset to check.
    need_dimension
        Require the ``mid_date`` dimension too (a point series already reduced to pairs may
        carry it on its variables only).
    """
    if need_dimension and PAIR_DIM not in ds.dims:
        raise NotAnITSLiveCubeError(
            f"this is not an ITS_LIVE cube: no 'mid_date' dimension (dims: {list(ds.dims)}). "
            "Open a cube with xr_itslive.open_cube, or rename the pair dimension to 'mid_date'."
        )
    missing = [name for name in PAIR_DATE_VARIABLES if name not in ds.variables]
    if missing:
        raise NotAnITSLiveCubeError(
            f"this is not an ITS_LIVE cube: {missing[0]!r} not found; the cube has "
            f"{sorted(map(str, ds.variables))}. Each pair needs both acquisition dates "
            "(open the cube with xr_itslive.open_cube, which keeps them)."
        )


def check_variables(
    ds: xr.Dataset,
    names: Iterable[Hashable],
    hint: str = "Pass variables=(...) naming variables of the cube.",
    *,
    coordinates: bool = False,
) -> None:
    """Raise :class:`~xr_itslive.MissingVariableError` naming the absent variables.

    Parameters
    ----------
    ds
        The Dataset to check.
    names
        The variables wanted.
    hint
        How to fix it, for the message.
    coordinates
        Count coordinates as present too.
    """
    present = ds.variables if coordinates else ds.data_vars
    absent = [name for name in names if name not in present]
    if absent:
        shown = f"variable {absent[0]!r}" if len(absent) == 1 else f"variables {absent}"
        raise MissingVariableError(
            f"{shown} not found; the cube has {sorted(map(str, ds.data_vars))}. {hint}"
        )
