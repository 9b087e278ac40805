"""Open one ITS_LIVE datacube from a path or URL, and decode the real format.

Anonymous S3 reads with bounded retries, consolidated zarr v2 metadata, pair dates as
coordinates, ``mid_date`` sorted with a ``pair_id`` for duplicates, the CRS recorded.
Finding a cube by a point is :mod:`xr_itslive.io.open`'s job (it needs the catalog).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from ..crs import crs_from_attributes
from ..errors import DataAccessError
from .format import PAIR_DATE_VARIABLES, check_pairs, check_variables
from .urls import candidate_urls, s3_storage_options


def _open_zarr(store: Any, chunks: Any) -> xr.Dataset:
    # Real cubes are zarr v2 with consolidated metadata: 6 requests to open instead of ~70.
    try:
        return xr.open_zarr(store, consolidated=True, zarr_format=2, chunks=chunks)
    except (KeyError, FileNotFoundError, ValueError):
        return xr.open_zarr(store, chunks=chunks)


def open_store(source: Any, storage_options: Mapping[str, Any] | None, chunks: Any) -> xr.Dataset:
    """The zarr (or netCDF) store at ``source`` as it is stored, lazily, or a clear error.

    Parameters
    ----------
    source : str, path-like or mapping
        A local path, an ``s3://`` or ITS_LIVE ``http(s)://`` URL (tried under the bucket's
        current prefix too), or a zarr store mapping.
    storage_options : mapping, optional
        s3fs options (anonymous reads with bounded retries by default).
    chunks : mapping
        Dask chunks, as :func:`xarray.open_zarr` takes them.

    Returns
    -------
    xarray.Dataset
    """
    if not isinstance(source, str | os.PathLike):
        return _open_zarr(source, chunks)  # a MutableMapping / zarr store
    source = str(source)
    if not source.startswith(("s3://", "http://", "https://")):
        if not os.path.exists(source):
            raise DataAccessError(
                f"no cube at {source!r}: the path does not exist. Pass an existing local zarr "
                "path, an s3:// URL, or a catalog URL (see xr_itslive.find_cubes)."
            )
        if source.endswith((".nc", ".nc4", ".h5")):
            return xr.open_dataset(source, chunks=chunks)
        return _open_zarr(source, chunks)

    import s3fs

    options = s3_storage_options(storage_options)
    errors = []
    for url in candidate_urls(source):
        if not url.startswith("s3://"):
            break
        fs = s3fs.S3FileSystem(**options)
        try:
            if not fs.exists(url.rstrip("/") + "/.zmetadata") and not fs.exists(url):
                errors.append(f"{url}: not found")
                continue
            return _open_zarr(fs.get_mapper(url), chunks)
        except (OSError, ValueError) as err:  # botocore errors surface as OSError via s3fs
            errors.append(f"{url}: {type(err).__name__}: {err}")
        except Exception as err:  # botocore EndpointConnectionError & co.
            errors.append(f"{url}: {type(err).__name__}: {err}")
    raise DataAccessError(
        f"could not open the cube {source!r} after bounded retries: "
        + "; ".join(errors)
        + ". Check the URL (xr_itslive.find_cubes gives valid ones), your network, and "
        "storage_options (anonymous reads are the default; "
        "set AWS_ENDPOINT_URL for another endpoint)."
    )


def _as_datetime(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[ns]")
    # Undecoded float days since 1970, as some writers leave them.
    return np.datetime64("1970-01-01", "ns") + (values * 86400e9).astype("timedelta64[ns]")


#: ITS_LIVE's velocity variables, stored as int16 with ``missing_value`` -32767.
VELOCITY_VARIABLES = ("v", "vx", "vy", "v_error", "va", "vr")
#: The fill value of those int16 variables.
ITSLIVE_FILL = -32767


def _mask_undecoded_fill(ds: xr.Dataset) -> xr.Dataset:
    """Velocities still stored as integers (the store lacks ``missing_value``, or was opened
    with ``mask_and_scale=False``): ITS_LIVE's -32767 fill masked as NaN, lazily, with a
    warning that names them; never taken as a velocity."""
    undecoded = [
        name for name in VELOCITY_VARIABLES if name in ds.data_vars and ds[name].dtype.kind in "iu"
    ]
    if not undecoded:
        return ds
    warnings.warn(
        f"{undecoded} are stored as undecoded integers (no missing_value attribute): their "
        f"{ITSLIVE_FILL} fill values are taken as missing (ITS_LIVE's convention)",
        UserWarning,
        stacklevel=4,
    )
    out = ds.copy()
    for name in undecoded:
        var = ds[name]
        out[name] = var.where(var != ITSLIVE_FILL).astype("float32").assign_attrs(var.attrs)
    return out


def decode_cube(ds: xr.Dataset, variables: Iterable[str] | None = None) -> xr.Dataset:
    """Bring an ITS_LIVE cube into the form the rest of the library expects.

    Keeps ``variables`` (and the per-pair dates), loads the pair dates as ``mid_date``
    coordinates, sorts by ``mid_date`` (duplicates kept: they are distinct pairs), adds a
    unique ``pair_id`` coordinate (the position in the original cube), and records the CRS.
    Integer ``missing_value`` is already turned into NaN by xarray's CF decoding.

    Parameters
    ----------
    ds : xarray.Dataset
        A cube as opened from the store: a ``mid_date`` dimension and the
        ``acquisition_date_img1``/``acquisition_date_img2`` variables.
    variables : str or iterable of str, optional
        Data variables to keep (default: all); the pair dates and ``mapping`` are always kept.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    NotAnITSLiveCubeError
        ``ds`` has no ``mid_date`` dimension or lacks a pair date.
    MissingVariableError
        A name of ``variables`` is not in ``ds``.
    """
    check_pairs(ds)
    if variables is not None:
        variables = [variables] if isinstance(variables, str) else list(variables)
        check_variables(ds, variables, coordinates=True)
        keep = set(variables) | set(PAIR_DATE_VARIABLES) | {"mapping"}
        ds = ds.drop_vars([v for v in ds.data_vars if v not in keep])
    ds = _mask_undecoded_fill(ds)

    # One small read of both date arrays (a few hundred kB even for full cubes).
    dates = xr.Dataset({name: ds[name].variable for name in PAIR_DATE_VARIABLES}).compute()
    img1 = _as_datetime(dates["acquisition_date_img1"].values)
    img2 = _as_datetime(dates["acquisition_date_img2"].values)
    mid = _as_datetime(ds["mid_date"].values)
    ds = ds.assign_coords(
        acquisition_date_img1=("mid_date", img1),
        acquisition_date_img2=("mid_date", img2),
        mid_date=("mid_date", mid),
        pair_id=("mid_date", np.arange(ds.sizes["mid_date"], dtype=np.int64)),
    )
    order = np.argsort(mid, kind="stable")
    if np.any(order != np.arange(order.size)):
        ds = ds.isel(mid_date=order)
    crs = crs_from_attributes(ds)
    if crs is not None:
        import rioxarray  # noqa: F401  (registers .rio)

        ds = ds.rio.write_crs(crs)
    return ds


def demo_cube_path() -> str:
    """The bundled real cube subset: 3×3 pixels, 7,397 pairs (1986-2024) of ITS_LIVE tile
    N30E090 in its original int16 encoding (vx, vy, v, their errors, satellite_img1)."""
    from importlib.resources import files

    return str(files("xr_itslive") / "data" / "N30E090_3x3_subset.nc")


def open_source(
    source: Any,
    variables: Iterable[str] | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Open and decode the cube at ``source`` (path, URL or store); see
    :func:`xr_itslive.open_cube`, which also finds cubes by a point.

    Parameters
    ----------
    source : str, path-like or mapping
        A local zarr or netCDF path, an ``s3://`` or catalog ``http(s)://`` URL, or a zarr
        store mapping.
    variables : iterable of str, optional
        Data variables to keep (default: all); see :func:`decode_cube`.
    storage_options : mapping, optional
        s3fs options for URLs (anonymous reads with bounded retries by default).
    chunks : mapping, optional
        Dask chunks; default: the store's, with ``mid_date`` in one chunk.
    """
    ds = open_store(source, storage_options, chunks={} if chunks is None else chunks)
    if chunks is None:
        # One mid_date chunk first, so that sorting permutes within chunks only.
        ds = ds.chunk({"mid_date": -1})
    return decode_cube(ds, variables)
