"""Integer velocities with a fill value to float32 with NaN, the pairs put in order on the way.

ITS_LIVE stores ``v``, ``vx``, ``vy`` (...) as int16 with ``missing_value`` -32767, and its
``mid_date`` unsorted. xarray's CF decoding makes the float copy in several passes (a cast, a
comparison with the fill, a ``where``), and the sort by ``mid_date`` is one more copy of every
chunk; at the scale of a whole cube these passes cost about as much CPU as reading and
decompressing the chunks. :func:`mask_fill` does both in one pass over a chunk that holds every
pair, which is how :func:`xr_itslive.open_cube` decodes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

_JIT = {"nogil": True, "cache": True}

#: The integer dtypes that float32 holds exactly (every value, so the decoded numbers are
#: those xarray's CF decoding gives).
EXACT_IN_FLOAT32 = (np.int8, np.uint8, np.int16, np.uint16)


@numba.njit(**_JIT)
def _mask_fill(values, fills, order, out):
    """``out[j] = values[order[j]]`` as float32, NaN where the value is one of ``fills``.

    ``values`` and ``out`` are ``(n_pairs, rest)``, C-contiguous; ``fills`` holds one or two
    values (``missing_value`` and ``_FillValue`` may differ).
    """
    n_fills = fills.shape[0]
    first = fills[0]
    second = fills[n_fills - 1]
    for j in range(order.shape[0]):
        source = values[order[j]]
        target = out[j]
        for i in range(source.shape[0]):
            v = source[i]
            target[i] = np.nan if (v == first or v == second) else np.float32(v)


def mask_fill(
    values: np.ndarray, fills: Sequence[int], order: np.ndarray | None = None
) -> np.ndarray:
    """``values`` decoded to float32 with NaN for ``fills``, rows (axis 0) taken in ``order``.

    Parameters
    ----------
    values : numpy.ndarray
        Integers of a dtype in :data:`EXACT_IN_FLOAT32`, pairs on the first axis (a chunk
        of a ``(mid_date, y, x)`` variable).
    fills : sequence of int
        The values that mean "missing" (one or two: ``missing_value``, ``_FillValue``).
    order : numpy.ndarray, optional
        Positions along the first axis, e.g. the argsort of ``mid_date`` (default: as stored).

    Returns
    -------
    numpy.ndarray
        float32, shaped like ``values`` (with ``len(order)`` rows).

    Examples
    --------
    >>> mask_fill(np.array([[3, -32767], [-1, 7]], np.int16), [-32767], np.array([1, 0]))
    array([[-1.,  7.],
           [ 3., nan]], dtype=float32)
    """
    values = np.asarray(values)
    if values.dtype.type not in EXACT_IN_FLOAT32:
        raise TypeError(f"mask_fill decodes {EXACT_IN_FLOAT32} exactly, not {values.dtype}")
    if not 1 <= len(fills) <= 2:
        raise ValueError(f"one or two fill values, got {list(fills)}")
    info = np.iinfo(values.dtype)
    # a fill the dtype cannot hold (out of range, not a whole number, NaN) marks nothing
    held = [
        int(f) for f in (float(f) for f in fills) if f.is_integer() and info.min <= f <= info.max
    ]
    rows = values.shape[0]
    if order is None:
        order = np.arange(rows, dtype=np.int64)
    order = np.asarray(order, dtype=np.int64)
    if order.size and (order.min() < 0 or order.max() >= rows):
        raise IndexError(f"order must index the {rows} rows of values")
    out = np.empty((order.shape[0], *values.shape[1:]), dtype=np.float32)
    if not held or out.size == 0:  # no fill value the dtype can hold: nothing is missing
        out[...] = values[order]
        return out
    flat = np.ascontiguousarray(values).reshape(rows, -1)
    _mask_fill(flat, np.asarray(held, dtype=values.dtype), order, out.reshape(order.shape[0], -1))
    return out
