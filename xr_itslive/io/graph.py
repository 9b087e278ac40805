"""A value that every dask task reads as one key of the graph, not a copy in each task.

The inversion's problem (~1 MB per 4,000 pairs), the composites' rows (~80 bytes a pair) and
the sort order of a cube's pairs (8 bytes a pair) are read by every task; put into each
task they would make the graph and worker memory grow with the number of chunks. Here (the
lowest layer that may use dask) so that decoding a cube (:mod:`xr_itslive.io.cube`) and the
workflows (:func:`xr_itslive.workflows.common.shared_key`) hold them the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def one_key(value: Any, lazy: bool) -> Any:
    """``value`` in a 0-d object array; with ``lazy``, a dask array of one key.

    Parameters
    ----------
    value
        Anything: a task gets it back with :func:`unwrap_shared`.
    lazy
        A dask array (one key of the graph) rather than a numpy 0-d array.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        0-d, dtype object; give it to ``blockwise`` with the empty index ``""``.

    Examples
    --------
    >>> unwrap_shared(one_key({"a": 1}, lazy=False))
    {'a': 1}
    """
    holder = np.empty((), dtype=object)
    holder[()] = value
    if not lazy:
        return holder
    import dask
    import dask.array as da

    return da.from_delayed(dask.delayed(holder, pure=True), shape=(), dtype=object)


def unwrap_shared(holder: Any) -> Any:
    """The value of a :func:`one_key` (or a ``shared_key``) as a task receives it, or the
    value itself.

    Parameters
    ----------
    holder
        A 0-d object array, or the value itself.

    Returns
    -------
    Any
    """
    return holder[()] if isinstance(holder, np.ndarray) else holder
