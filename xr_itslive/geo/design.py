"""The time grid and where each image pair falls on it.

Each ITS_LIVE observation is the mean velocity between two acquisition dates. The grid is
regular cells of ``step`` days; each kept pair becomes a row of the date-span matrix
(:func:`xr_itslive.kernels.design.interval_fractions`: exact overlaps, rows sum to one).
The matrix itself, the regularizer and the scatter tables are arrays-only and live in
:mod:`xr_itslive.kernels.design`.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import EmptySelectionError, InvalidParameterError
from ..kernels.design import interval_fractions
from ..kernels.units import NS_PER_DAY


def to_datetime64(value: Any, name: str = "date") -> np.datetime64 | None:
    """A user's date parameter as ``datetime64[ns]`` (None stays None), or a clear error.

    Parameters
    ----------
    value
        An ISO date text, a ``datetime64``, a ``datetime``... or None.
    name
        The parameter's name, for the message.

    Returns
    -------
    numpy.datetime64 or None
    """
    if value is None:
        return None
    try:
        return np.datetime64(value, "ns")
    except (TypeError, ValueError) as err:
        raise InvalidParameterError(
            f"could not read {name}={value!r} as a date; pass an ISO date such as "
            "'2015-01-01' or a numpy.datetime64"
        ) from err


def check_parameters(step: float, lam: float, derivative: int) -> None:
    """Raise a clear error for a step, lambda or derivative order out of range."""
    if isinstance(step, bool) or not isinstance(step, numbers.Real):
        # compared as a number below: a text such as "12" would fail inside numpy
        raise InvalidParameterError(
            f"step must be a positive number of days, got step={step!r} "
            f"({type(step).__name__}); pass a number, e.g. step=12"
        )
    if not np.isfinite(step) or step <= 0:
        raise InvalidParameterError(
            f"step must be a positive number of days, got step={step!r}; e.g. step=12"
        )
    if not np.isfinite(lam) or lam < 0:
        raise InvalidParameterError(
            f"lam must be a finite number >= 0, got lam={lam!r}; e.g. lam=10.0 "
            "(0 turns the smoothness term off)"
        )
    if derivative not in (1, 2):
        raise InvalidParameterError(
            f"derivative must be 1 (penalize changes) or 2 (penalize curvature), "
            f"got derivative={derivative!r}"
        )


@dataclass(frozen=True)
class TimeGrid:
    """Regular cells of ``step`` days starting at ``start``."""

    start: np.datetime64
    step: float
    n_cells: int

    @property
    def edges(self) -> np.ndarray:
        offsets = np.round(np.arange(self.n_cells + 1) * self.step * NS_PER_DAY)
        return self.start + offsets.astype("timedelta64[ns]")

    @property
    def centers(self) -> np.ndarray:
        edges = self.edges
        return edges[:-1] + (edges[1:] - edges[:-1]) / 2

    @property
    def end(self) -> np.datetime64:
        return self.edges[-1]

    def days(self, dates: np.ndarray) -> np.ndarray:
        """Dates as float days since the grid's start."""
        delta = np.asarray(dates, dtype="datetime64[ns]") - self.start
        return delta.astype("int64") / NS_PER_DAY


def time_grid(img1: np.ndarray, img2: np.ndarray, step: float, start=None, end=None) -> TimeGrid:
    """The regular grid covering the pairs, or ``start``..``end`` when given."""
    img1 = np.asarray(img1, dtype="datetime64[ns]")
    img2 = np.asarray(img2, dtype="datetime64[ns]")
    valid = img2 > img1
    if not valid.any():
        if (img1 > img2).any() and not (img2 > img1).any():
            raise EmptySelectionError(
                "every pair ends before it starts (acquisition_date_img2 < "
                "acquisition_date_img1): the two dates look swapped. Swap them back, e.g. "
                "ds = ds.rename({'acquisition_date_img1': 'acquisition_date_img2', "
                "'acquisition_date_img2': 'acquisition_date_img1'})"
            )
        raise EmptySelectionError(
            "no image pair has acquisition_date_img2 > acquisition_date_img1 (the dates are "
            "missing or equal); check the cube's acquisition dates"
        )
    first = (
        to_datetime64(start, "start")
        if start is not None
        else img1[valid].min().astype("datetime64[D]")
    )
    last = to_datetime64(end, "end") if end is not None else img2[valid].max()
    first = np.datetime64(first, "ns")
    if last <= first:
        raise InvalidParameterError(
            f"start must be before end, got start={np.datetime_as_string(first, 'D')} and "
            f"end={np.datetime_as_string(last, 'D')}; swap them or widen the window"
        )
    span_days = (last - first).astype("int64") / NS_PER_DAY
    n_cells = max(1, int(np.ceil(span_days / step - 1e-9)))
    return TimeGrid(start=first, step=float(step), n_cells=n_cells)


@dataclass(frozen=True)
class PairGeometry:
    """Where each kept pair's interval falls on the grid.

    Row ``i`` of the date-span matrix is ``first_frac`` at ``first_cell``, ``inner`` on the
    cells strictly between, and ``last_frac`` at ``last_cell`` (a single 1.0 when the pair
    lies inside one cell).
    """

    grid: TimeGrid
    kept: np.ndarray  # bool over the cube's mid_date
    first_cell: np.ndarray
    last_cell: np.ndarray
    first_frac: np.ndarray
    last_frac: np.ndarray
    inner: np.ndarray
    bandwidth: int = field(default=0)

    @property
    def n_cells(self) -> int:
        return self.grid.n_cells

    @property
    def n_pairs(self) -> int:
        return int(self.first_cell.size)

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        """``(first_cell, last_cell, first_frac, last_frac, inner)``: what the kernels take."""
        return (self.first_cell, self.last_cell, self.first_frac, self.last_frac, self.inner)


def pair_geometry(
    img1: np.ndarray,
    img2: np.ndarray,
    step: float,
    start=None,
    end=None,
    derivative: int = 2,
) -> PairGeometry:
    """Locate every pair on the grid; drop reversed pairs (with a warning) and pairs outside."""
    img1 = np.asarray(img1, dtype="datetime64[ns]")
    img2 = np.asarray(img2, dtype="datetime64[ns]")
    grid = time_grid(img1, img2, step, start, end)
    reversed_pairs = ~(img2 > img1)
    if reversed_pairs.any():
        warnings.warn(
            f"{int(reversed_pairs.sum())} pairs have acquisition_date_img2 <= "
            "acquisition_date_img1 (or a missing date) and are dropped",
            UserWarning,
            stacklevel=3,
        )
    u1 = grid.days(img1) / grid.step
    u2 = grid.days(img2) / grid.step
    inside = ~reversed_pairs & (u1 >= -1e-9) & (grid.days(img2) <= grid.days(grid.end) + 1e-9)
    if end is not None:
        inside &= img2 <= to_datetime64(end, "end")
    if not inside.any():
        raise EmptySelectionError(
            f"no image pair lies inside {np.datetime_as_string(grid.start, 'D')}.."
            f"{np.datetime_as_string(grid.end, 'D')} (pairs span "
            f"{np.datetime_as_string(img1[~reversed_pairs].min(), 'D')}.."
            f"{np.datetime_as_string(img2[~reversed_pairs].max(), 'D')}); widen start/end"
        )
    u1 = np.clip(u1[inside], 0.0, None)
    u2 = np.minimum(u2[inside], grid.n_cells)
    first, last, first_frac, last_frac, inner = interval_fractions(u1, u2, grid.n_cells)
    span = int((last - first).max()) if last.size else 0
    return PairGeometry(
        grid=grid,
        kept=inside,
        first_cell=first,
        last_cell=last,
        first_frac=first_frac,
        last_frac=last_frac,
        inner=inner,
        bandwidth=max(span, derivative),
    )
