"""Invert a cube and write the result resumably: the job behind ``xr-itslive invert``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import xarray as xr

from ..errors import InvalidParameterError
from .common import input_identity
from .device import call_on_device
from .invert import invert
from .mosaic import invert_mosaic
from .store import WriteSummary, write_resumable


def _describe(value: Any) -> Any:
    """A stable, JSON-friendly stand-in for a parameter value that identifies its content, so
    that a resume with another mask, outline or weights is refused instead of mixing runs."""
    if value is None or isinstance(value, str | int | float | bool) and not _is_file(value):
        return value
    if _is_file(value):  # an outline file: its path and what it holds
        path = os.fspath(value)
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()[:16]
        return {"file": path, "sha256": digest}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    if isinstance(value, xr.DataArray | xr.Dataset):
        # dask's token: the data of numpy-backed arrays, the graph (source and operations) of
        # lazy ones, without computing them
        from dask.base import tokenize

        return {type(value).__name__: tokenize(value), "dims": list(value.dims)}
    if hasattr(value, "outline") and hasattr(value, "crs"):  # a Glacier
        return {
            "glacier": getattr(value, "rgi_id", None),
            "outline": hashlib.sha256(value.outline.wkb).hexdigest()[:16],
            "crs": str(value.crs),
        }
    return {type(value).__name__: hashlib.sha256(repr(value).encode()).hexdigest()[:16]}


def _is_file(value: Any) -> bool:
    return isinstance(value, str | os.PathLike) and os.path.isfile(value)


def _input_identity(cube: Any) -> Any:
    """What identifies the input cubes cheaply (:func:`~.common.input_identity` of a Dataset;
    a path or URL as :func:`_describe` gives it: the mosaic opens it)."""
    if isinstance(cube, list | tuple):
        return [_input_identity(c) for c in cube]
    if not isinstance(cube, xr.Dataset):
        return _describe(cube)
    return input_identity(cube)


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
            unknown = sorted(map(str, set(chunks) - {"y", "x"}))
            if unknown:
                raise InvalidParameterError(
                    f"chunks names {unknown}; only the spatial dims can be chunked (mid_date "
                    "stays whole): pass e.g. chunks={'y': 20, 'x': 20}"
                )
            cube = cube.chunk({"mid_date": -1, **chunks})
        result = call_on_device(invert, cube, gpu=gpu, **invert_kwargs)
    parameters = dict(result.attrs)
    # Settings that leave no trace in the result's attributes (or only a word, such as
    # weights="user") still tell runs apart: their content, and the input's identity.
    for key in ("mask", "weights"):
        if invert_kwargs.get(key) is not None:
            parameters[key] = _describe(invert_kwargs[key])
    parameters["input"] = _input_identity(cube)
    return write_resumable(
        result,
        store,
        storage_options=storage_options,
        parameters=parameters,
        overwrite=overwrite,
        scheduler=scheduler,
        progress=progress,
    )
