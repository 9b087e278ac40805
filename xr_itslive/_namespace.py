"""Pick the array namespace (numpy or cupy) of the arrays at hand."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .errors import OptionalDependencyError


def is_cupy_array(array: Any) -> bool:
    """True for a CuPy array, without importing CuPy when it is not loaded."""
    return type(array).__module__.split(".")[0] == "cupy"


def import_cupy() -> ModuleType:
    """Import CuPy lazily, with an install hint when it is missing."""
    try:
        import cupy
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise OptionalDependencyError(
            "CuPy is needed for GPU arrays but is not installed. "
            "Install it with `pip install 'xr_itslive[gpu]'` (CUDA 12) or use numpy arrays."
        ) from err
    return cupy


def get_namespace(*arrays: Any) -> ModuleType:
    """Return the array namespace shared by ``arrays``.

    numpy for numpy arrays and scalars, cupy when any array is a CuPy array, and the
    array's own ``__array_namespace__`` for other array-API arrays (such as
    ``array_api_strict``, used in the tests to prove the kernels are namespace-generic).
    """
    namespaces = set()
    for array in arrays:
        if array is None or isinstance(array, int | float | np.ndarray | np.generic):
            continue
        if is_cupy_array(array):
            namespaces.add(import_cupy())
        elif hasattr(array, "__array_namespace__"):
            namespaces.add(array.__array_namespace__())
    namespaces.discard(np)
    if len(namespaces) > 1:
        names = sorted(ns.__name__ for ns in namespaces)
        raise TypeError(f"arrays from several namespaces {names}; move them to one device first")
    return namespaces.pop() if namespaces else np


def to_numpy(array: Any) -> np.ndarray:
    """Copy an array of any namespace to host numpy."""
    if is_cupy_array(array):
        return array.get()
    return np.asarray(array)
