"""Invert a cube and write the result resumably: the job behind ``xr-itslive invert``."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import InvalidParameterError
from .common import input_identity, needed_variables
from .device import call_on_device
from .invert import DEFAULTS, invert
from .mosaic import invert_mosaic
from .store import WriteSummary, values_token, write_resumable


def _describe(value: Any) -> Any:
    """A stable, JSON-friendly stand-in for an argument that identifies its content, so that a
    resume with another mask, outline, weights or cube is refused instead of mixing runs.

    Content, never ``repr``: reprs are truncated (two outlines differing past the first
    vertices looked alike) and some hold memory addresses. Scalars stand for themselves.

    Parameters
    ----------
    value
        An argument of :func:`invert_to_zarr`: a scalar or word, a file path (its content is
        hashed), a shapely geometry, a GeoDataFrame or GeoSeries (geometries as WKB, and the
        CRS), a :class:`~xr_itslive.Glacier` (outline and CRS), a DataArray, Dataset, numpy
        or dask array (:func:`~xr_itslive.workflows.store.values_token`), a GeoJSON mapping,
        a CRS, a catalog entry, or a list of these.

    Returns
    -------
    Any
        Scalars, strings, lists and dicts only.

    Raises
    ------
    InvalidParameterError
        ``value`` is of a kind whose content cannot be identified deterministically.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, np.generic):  # numpy scalars, dates included
        return str(value) if isinstance(value, np.datetime64 | np.timedelta64) else value.item()
    if isinstance(value, str | os.PathLike):
        return _file(os.fspath(value)) if os.path.isfile(value) else os.fspath(value)
    if isinstance(value, _dt.date | _dt.timedelta | pd.Timestamp | pd.Timedelta):
        return str(value)
    if isinstance(value, list | tuple):
        return [_describe(v) for v in value]
    if isinstance(value, Mapping):  # a GeoJSON mapping, or options
        try:
            text = json.dumps(value, sort_keys=True, allow_nan=True)
        except (TypeError, ValueError):  # not plain JSON: describe its values one by one
            return {str(k): _describe(v) for k, v in sorted(value.items(), key=str)}
        return {"mapping": _sha(text.encode())}
    geometry = _geometry(value)
    if geometry is not None:
        return geometry
    if isinstance(value, xr.DataArray | xr.Dataset):
        # Each variable (coordinates included) by its values: the data of numpy-backed
        # arrays, the graph (source and operations) of lazy ones, without computing them.
        ds = value.to_dataset(name="_") if isinstance(value, xr.DataArray) else value
        tokens = {str(n): values_token(v) for n, v in sorted(ds.variables.items(), key=str)}
        return {
            type(value).__name__: _sha(json.dumps(tokens, sort_keys=True).encode()),
            "dims": list(map(str, value.dims)),
        }
    if isinstance(value, np.ndarray) or hasattr(value, "__dask_graph__"):
        token = values_token(xr.Variable(tuple(f"d{i}" for i in range(value.ndim)), value))
        return {"array": token, "shape": list(value.shape), "dtype": str(value.dtype)}
    if hasattr(value, "zarr_url"):  # a catalog entry (CubeEntry) of a mosaic
        return {"cube": str(value.zarr_url)}
    if hasattr(value, "to_wkt"):  # a pyproj CRS
        return {"crs": _crs_text(value)}
    # Anything else by dask's deterministic token (its fields or its pickle), else refused:
    # an argument this cannot identify could change the numbers unnoticed.
    import dask
    from dask.base import tokenize

    try:
        with dask.config.set({"tokenize.ensure-deterministic": True}):
            return {type(value).__name__: tokenize(value)}
    except RuntimeError as err:  # dask's TokenizationError
        raise InvalidParameterError(
            f"cannot identify a {type(value).__name__} argument for a resumable store ({err}); "
            "pass it as a DataArray, numpy array, shapely geometry, GeoDataFrame or file path"
        ) from err


def _sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


def _file(path: str) -> dict[str, Any]:
    """A file by its path and content; a shapefile with its sidecar files (.dbf, .prj, ...),
    which hold its attributes and its CRS."""
    digest = hashlib.sha256()
    paths = [path]
    stem, suffix = os.path.splitext(path)
    if suffix.lower() == ".shp":
        folder = os.path.dirname(path) or "."
        base = os.path.basename(stem)
        paths += sorted(
            os.path.join(folder, name)
            for name in os.listdir(folder)
            if os.path.splitext(name)[0] == base and os.path.join(folder, name) != path
        )
    for each in paths:
        with open(each, "rb") as handle:
            digest.update(os.path.basename(each).encode() + b"\0" + handle.read() + b"\0")
    return {"file": path, "sha256": digest.hexdigest()[:16]}


def _crs_text(crs: Any) -> str | None:
    """A CRS as ``EPSG:<code>`` where it has one, else a digest of its WKT."""
    if crs is None:
        return None
    from pyproj import CRS

    parsed = CRS.from_user_input(crs)
    epsg = parsed.to_epsg()
    return f"EPSG:{epsg}" if epsg is not None else f"wkt:{_sha(parsed.to_wkt().encode())}"


def _geometry(value: Any) -> dict[str, Any] | None:
    """A shapely geometry, GeoSeries, GeoDataFrame or Glacier by its geometries' WKB (and its
    CRS), or None for anything else."""
    import shapely

    if isinstance(value, shapely.Geometry):
        return {"geometry": _sha(shapely.to_wkb(value)), "type": value.geom_type}
    outline = getattr(value, "outline", None)
    if isinstance(outline, shapely.Geometry) and hasattr(value, "crs"):  # a Glacier
        return {
            "glacier": getattr(value, "rgi_id", None),
            "outline": _geometry(outline),
            "crs": _crs_text(value.crs),
        }
    geometries = getattr(value, "geometry", None)
    if hasattr(value, "crs") and hasattr(geometries, "to_wkb"):  # GeoSeries, GeoDataFrame
        digest = hashlib.sha256()
        for wkb in geometries.to_wkb():
            payload = b"" if wkb is None else bytes(wkb)  # a missing geometry
            digest.update(len(payload).to_bytes(8, "little") + payload)
        return {
            type(value).__name__: digest.hexdigest()[:16],
            "n": int(len(geometries)),
            "crs": _crs_text(value.crs),
        }
    return None


def _is_plain(value: Any) -> bool:
    """A scalar or word that the result's attributes record as it is (not a file to hash)."""
    if value is None or isinstance(value, bool | int | float):
        return True
    return isinstance(value, str) and not os.path.isfile(value)


def _input_identity(cube: Any, result: xr.Dataset, variables: Sequence[Hashable]) -> Any:
    """What identifies the input: :func:`~.common.input_identity` of one cube; for a mosaic,
    each cube (a Dataset's identity, a path or URL as :func:`_describe` gives it: the mosaic
    opens it) and the stores the result's graph reads."""
    if not isinstance(cube, list | tuple):
        return input_identity(cube, variables)
    from .store import sources_identity

    return {
        "cubes": [
            input_identity(c, variables) if isinstance(c, xr.Dataset) else _describe(c)
            for c in cube
        ],
        "stores": sources_identity([v.variable for v in result.data_vars.values()]),
    }


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
        :func:`xr_itslive.invert_mosaic` for a list of cubes (also ``crs``). Arguments the
        result's attributes do not record in full (an outline, a mask or weights array) are
        recorded by their content, the input by its values
        (:func:`~xr_itslive.workflows.common.input_identity`): a resume with others is refused.

    Returns
    -------
    WriteSummary

    Raises
    ------
    StoreConflictError
        ``store`` holds another run (other settings, arguments or input values); the message
        names what differs and ``overwrite=True`` (CLI: ``--overwrite``).
    DataAccessError
        The input's metadata or the store could not be read or written.
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
    # Arguments that leave no trace in the result's attributes (mask, a mosaic's crs), or only
    # a word (weights="user"), still tell runs apart: by their content. So does the input, by
    # its values (write_resumable adds the result's own token). Those the attributes record
    # in full (lam's candidates, start and end) stay as they are recorded.
    for key, value in sorted(invert_kwargs.items()):
        if not _is_plain(value) and (key not in parameters or key == "weights"):
            parameters[key] = _describe(value)
    variables = invert_kwargs.get("variables", DEFAULTS["variables"])
    variables = [variables] if isinstance(variables, str) else list(variables)
    read = needed_variables(variables, invert_kwargs.get("weights"))
    parameters["input"] = _input_identity(cube, result, read)
    return write_resumable(
        result,
        store,
        storage_options=storage_options,
        parameters=parameters,
        overwrite=overwrite,
        scheduler=scheduler,
        progress=progress,
    )
