"""Invert a cube and write the result resumably: the job behind ``xr-itslive invert``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InvalidParameterError
from .device import gpu_engine, to_device, to_host
from .invert import invert
from .mosaic import invert_mosaic
from .store import WriteSummary, coord_digest, write_resumable


def _describe(value: Any) -> Any:
    """A stable, JSON-friendly stand-in for a parameter value (masks, outlines...)."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    if isinstance(value, xr.DataArray):
        return {"DataArray": coord_digest(np.asarray(value.values)), "dims": list(value.dims)}
    return {type(value).__name__: hashlib.sha256(repr(value).encode()).hexdigest()[:16]}


def invert_to_zarr(
    cube: xr.Dataset | Sequence[Any],
    store: str | os.PathLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    scheduler: Any = None,
    progress: bool = True,
    chunks: Mapping[Hashable, int] | None = None,
    gpu: bool = False,
    **invert_kwargs: Any,
) -> WriteSummary:
    """Invert ``cube`` with :func:`xr_itslive.invert` and write it resumably to ``store``.

    Re-running the same call after an interruption finishes the store without recomputing the
    chunks already written; on a finished store it computes nothing.

    Parameters
    ----------
    cube
        An ITS_LIVE cube (:func:`xr_itslive.open_cube`), ``mid_date`` in one chunk, chunked in
        space; each spatial chunk is one task. A list of cubes (Datasets, paths or URLs) is
        inverted as one mosaic (:func:`xr_itslive.invert_mosaic`).
    store, storage_options, overwrite, scheduler, progress
        As in :func:`~xr_itslive.write_resumable`.
    chunks
        Spatial chunks to give the cube first (e.g. ``{"y": 20, "x": 20}``); ``mid_date`` is
        kept whole. Default: the cube's own chunks. For a mosaic: the output's chunks.
    gpu
        Solve on the GPU (CuPy, the ``gpu`` extra): each chunk is copied to the device,
        inverted with the ``array`` engine, and its result copied back and written.
    **invert_kwargs
        Passed to :func:`xr_itslive.invert` (``variables``, ``step``, ``lam``, ``derivative``,
        ``start``, ``end``, ``min_obs``, ``mask``, ``engine``), or to
        :func:`xr_itslive.invert_mosaic` for a list of cubes (also ``crs``).

    Returns
    -------
    WriteSummary
    """
    if isinstance(cube, list | tuple):
        if gpu:
            raise InvalidParameterError(
                "gpu=True solves one cube at a time; write each cube of the mosaic with "
                "invert_to_zarr(cube, ..., gpu=True), or drop gpu for the mosaic"
            )
        result = invert_mosaic(cube, chunks=chunks, **invert_kwargs)
    else:
        if chunks is not None:
            cube = cube.chunk({"mid_date": -1, **chunks})
        if gpu:
            invert_kwargs["engine"] = gpu_engine(invert_kwargs.get("engine"))
            result = to_host(invert(to_device(cube), **invert_kwargs))
        else:
            result = invert(cube, **invert_kwargs)
    parameters = dict(result.attrs)
    # Settings that leave no trace in the result's attributes still tell runs apart.
    for key in ("mask",):
        if invert_kwargs.get(key) is not None:
            parameters[key] = _describe(invert_kwargs[key])
    return write_resumable(
        result,
        store,
        storage_options=storage_options,
        parameters=parameters,
        overwrite=overwrite,
        scheduler=scheduler,
        progress=progress,
    )
