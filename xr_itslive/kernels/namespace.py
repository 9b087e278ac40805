"""Pick the array namespace (numpy, cupy or another array-API library) of the arrays at hand.

The kernels in :mod:`xr_itslive.kernels` are written against the array API standard
(``xp.concat``, ``xp.permute_dims``, ``xp.astype``, ``xp.take_along_axis`` ...). NumPy 2 has
all of these in its main namespace, which is the fastest way to call them; CuPy (up to 13 at
least) lacks some, so CuPy arrays get :mod:`array_api_compat.cupy`, a thin layer over CuPy
that adds the missing names and returns plain CuPy arrays. CuPy is imported only when CuPy
arrays are seen.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

from ..errors import OptionalDependencyError

#: Array-API names the kernels, :func:`xr_itslive.workflows.invert.solve_block` and
#: :func:`xr_itslive.workflows.composite.composite_block` call through ``xp``.
#: A namespace missing any of them is wrapped by array-api-compat.
KERNEL_NAMES: tuple[str, ...] = (
    "abs", "all", "any", "arange", "asarray", "astype", "atan2", "bool", "ceil", "clip", "concat",
    "cumulative_sum", "flip", "float32", "float64", "floor", "full", "inf", "int32", "int64",
    "isnan", "matmul", "max", "maximum", "nan", "nonzero", "ones", "permute_dims", "reshape",
    "searchsorted", "sort", "sqrt", "stack", "sum", "take", "take_along_axis", "where", "zeros",
)  # fmt: skip

GPU_INSTALL_HINT = (
    "Install the GPU extra with `pip install 'xr_itslive[gpu]'` (CuPy for CUDA 12; for CUDA 13 "
    "use `pip install cupy-cuda13x`), or keep the cube on the host (numpy chunks)."
)


def missing_names(xp: ModuleType, names: tuple[str, ...] = KERNEL_NAMES) -> list[str]:
    """The names of ``names`` that namespace ``xp`` lacks."""
    return [name for name in names if not hasattr(xp, name)]


def is_cupy_array(array: Any) -> bool:
    """True for a CuPy array, without importing CuPy when it is not loaded."""
    return type(array).__module__.split(".")[0] == "cupy"


def import_cupy() -> ModuleType:
    """Import CuPy lazily, with an install hint naming the ``gpu`` extra when it is missing."""
    try:
        import cupy
    except ImportError as err:
        raise OptionalDependencyError(
            f"CuPy is needed for GPU arrays but could not be imported ({err}). {GPU_INSTALL_HINT}"
        ) from err
    return cupy


def _import_compat(name: str) -> ModuleType:
    import importlib

    try:
        return importlib.import_module(f"array_api_compat.{name}")
    except ImportError as err:
        if name == "cupy" and "cupy" in str(err).lower() and "compat" not in str(err):
            raise OptionalDependencyError(
                f"CuPy is needed for GPU arrays but could not be imported ({err}). "
                f"{GPU_INSTALL_HINT}"
            ) from err
        raise OptionalDependencyError(
            f"array-api-compat is needed for {name} arrays but could not be imported ({err}). "
            "Install it with `pip install array-api-compat` (a dependency of xr_itslive)."
        ) from err


@functools.cache
def numpy_namespace() -> ModuleType:
    """numpy itself when it has every name the kernels use (NumPy ≥ 2.1), else the
    :mod:`array_api_compat.numpy` wrapper (older NumPy)."""
    return np if not missing_names(np) else _import_compat("numpy")


@functools.cache
def cupy_namespace() -> ModuleType:
    """:mod:`array_api_compat.cupy`: CuPy with the array-API names it lacks added.

    Raises
    ------
    OptionalDependencyError
        When CuPy (or array-api-compat) cannot be imported.
    """
    import_cupy()
    return _import_compat("cupy")


def get_namespace(*arrays: Any) -> ModuleType:
    """Return the array namespace shared by ``arrays``.

    numpy (see :func:`numpy_namespace`) for numpy arrays, scalars and None; the compat
    namespace of CuPy (:func:`cupy_namespace`) when any array is a CuPy array; and the
    array's own ``__array_namespace__()`` for other array-API arrays (such as
    ``array_api_strict``, used in the tests to prove the kernels are namespace-generic).

    Raises
    ------
    TypeError
        When the arrays come from several non-numpy namespaces.

    Examples
    --------
    >>> import numpy as np
    >>> get_namespace(np.zeros(3)) is np
    True
    """
    namespaces: dict[str, ModuleType] = {}
    for array in arrays:
        if is_cupy_array(array):
            xp = cupy_namespace()
        elif array is None or isinstance(array, int | float | bool | np.ndarray | np.generic):
            continue
        elif hasattr(array, "__array_namespace__"):
            xp = array.__array_namespace__()
        else:
            continue
        namespaces[xp.__name__] = xp
    namespaces.pop(np.__name__, None)
    namespaces.pop(numpy_namespace().__name__, None)
    if len(namespaces) > 1:
        raise TypeError(
            f"arrays from several namespaces {sorted(namespaces)}; expected one. "
            "Move them to one device first (e.g. cupy.asarray(...) or .get())."
        )
    return next(iter(namespaces.values())) if namespaces else numpy_namespace()


def is_host_numpy(array: Any) -> bool:
    """True for a numpy array (not a CuPy array, whatever its class hierarchy)."""
    return isinstance(array, np.ndarray) and not is_cupy_array(array)


def to_numpy(array: Any) -> np.ndarray:
    """Copy an array of any namespace to host numpy."""
    if is_cupy_array(array):
        return array.get()
    return np.asarray(array)


def empty_like_chunk(sample: Any, ndim: int, dtype: Any) -> Any:
    """An empty ``ndim``-dimensional array of ``dtype`` of the same type as ``sample``.

    Used as dask's ``meta`` so that a graph over CuPy chunks says its chunks are CuPy.
    """
    xp = get_namespace(sample)
    if is_cupy_array(sample):
        import cupy

        return cupy.empty((0,) * ndim, dtype=dtype)
    return xp.empty((0,) * ndim, dtype=_dtype_in(xp, dtype))


def _dtype_in(xp: ModuleType, dtype: Any) -> Any:
    if xp is np or xp.__name__.endswith("numpy"):
        return dtype
    name = {bool: "bool", np.bool_: "bool"}.get(dtype) or np.dtype(dtype).name
    return getattr(xp, name)


def supports_fancy_setitem(xp: ModuleType) -> bool:
    """True where ``a[index_array] = b`` works (numpy, cupy); the array API lacks it."""
    return xp is np or xp.__name__.split(".")[-1] in ("numpy", "cupy")


def put_rows(xp: ModuleType, target: Any, index: Any, value: Any) -> Any:
    """``target`` with rows ``index`` (sorted, unique) replaced by ``value``.

    In place with fancy indexing where the namespace has it (numpy, cupy); otherwise (strict
    array-API namespaces) rebuilt with a gather: row ``i`` of the result is ``value[rank(i)]``
    where ``i`` is among ``index``, else ``target[i]``.
    """
    if supports_fancy_setitem(xp):
        target[index, ...] = value
        return target
    if index.shape[0] == 0:
        return target
    n_rows = target.shape[0]
    rows_all = xp.arange(n_rows, dtype=index.dtype)
    rank = xp.clip(xp.searchsorted(index, rows_all), 0, index.shape[0] - 1)
    selected = xp.take(index, rank) == rows_all
    rows = xp.take(xp.astype(value, target.dtype), rank, axis=0)
    shape = (n_rows,) + (1,) * (target.ndim - 1)
    return xp.where(xp.reshape(selected, shape), rows, target)
