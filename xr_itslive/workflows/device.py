"""Moving cubes to the GPU and back, lazily (CuPy, the ``gpu`` extra)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..errors import InvalidParameterError
from ..kernels.namespace import import_cupy, is_cupy_array


def _is_on_device(data: Any) -> bool:
    return is_cupy_array(getattr(data, "_meta", data))


def to_device(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with its numeric per-pair variables (along ``mid_date``) on the GPU, lazily.

    Dask chunks are copied to the GPU when they are computed (``_meta`` says CuPy), arrays in
    memory at once; coordinates stay on the host. Inverting the result runs the ``array``
    engine on the GPU.

    Raises
    ------
    OptionalDependencyError
        When CuPy cannot be imported (install the ``gpu`` extra).
    """
    cupy = import_cupy()
    out = ds.copy()
    for name, var in ds.data_vars.items():
        numeric = var.dtype.kind in "biuf"  # CuPy holds no strings, dates or objects
        if "mid_date" not in var.dims or not numeric or _is_on_device(var.data):
            continue
        data = var.data
        if hasattr(data, "map_blocks"):
            meta = cupy.empty((0,) * data.ndim, dtype=data.dtype)
            moved = data.map_blocks(cupy.asarray, dtype=data.dtype, meta=meta)
        else:
            moved = cupy.asarray(data)
        out[name] = var.copy(data=moved)
    return out


def to_host(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every GPU variable copied back to numpy, lazily for dask arrays."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        data = var.data
        if not _is_on_device(data):
            continue
        import cupy

        if hasattr(data, "map_blocks"):
            meta = np.empty((0,) * data.ndim, dtype=data.dtype)
            moved = data.map_blocks(cupy.asnumpy, dtype=data.dtype, meta=meta)
        else:
            moved = cupy.asnumpy(data)
        out[name] = var.copy(data=moved)
    return out


def gpu_engine(engine: str | None) -> str:
    """The engine a GPU solve runs (``"array"``), refusing any other that was asked for."""
    if engine not in (None, "array"):
        raise InvalidParameterError(
            f"the GPU runs the 'array' engine, got engine={engine!r}; "
            "leave the engine out (CLI: drop --engine) or run without --gpu"
        )
    return "array"


def call_on_device(function: Any, cube: xr.Dataset, *, gpu: bool, **kwargs: Any) -> xr.Dataset:
    """``function(cube, **kwargs)``; with ``gpu``, on the GPU and back.

    Parameters
    ----------
    function
        A workflow of one cube (:func:`xr_itslive.invert`, :func:`xr_itslive.composite`)
        with an ``engine`` parameter.
    cube
        Its cube.
    gpu
        Run it on :func:`to_device`'s copy of ``cube`` with the ``array`` engine
        (:func:`gpu_engine`) and return the result through :func:`to_host`: each chunk is
        copied there and back when it is computed.
    **kwargs
        Passed to ``function``.

    Returns
    -------
    xarray.Dataset
        ``function``'s result, on the host.
    """
    if not gpu:
        return function(cube, **kwargs)
    kwargs["engine"] = gpu_engine(kwargs.get("engine"))
    return to_host(function(to_device(cube), **kwargs))
