"""Open ITS_LIVE datacubes: URL rules, anonymous S3 reads and decoding of the real format."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from .errors import (
    DataAccessError,
    InvalidParameterError,
    MissingVariableError,
    NotAnITSLiveCubeError,
)

#: The bucket's prefix now, when the catalog still names ``datacubes/v2/``.
CURRENT_PREFIX = "datacubes/v2-updated-october2024/"
LEGACY_PREFIX = "datacubes/v2/"

#: Per-pair variables loaded eagerly: they are small and every inversion needs them.
PAIR_DATE_VARIABLES = ("acquisition_date_img1", "acquisition_date_img2")

#: Bounded retries and timeouts, so that unreachable S3 fails with a clear error, not a hang.
DEFAULT_S3_CONFIG = {
    "connect_timeout": 5,
    "read_timeout": 60,
    "retries": {"max_attempts": 3, "mode": "standard"},
}

_HTTP_S3 = re.compile(
    r"^https?://(?P<bucket>[a-z0-9.\-]+)\.s3(?:[.\-][a-z0-9\-]+)?\.amazonaws\.com/(?P<key>.*)$"
)


def to_s3_url(url: str) -> str:
    """Rewrite the catalog's ``http(s)://BUCKET.s3.amazonaws.com/KEY`` form to ``s3://BUCKET/KEY``.

    Other URLs and local paths are returned unchanged.

    Examples
    --------
    >>> to_s3_url("http://its-live-data.s3.amazonaws.com/datacubes/v2/N30E090/c.zarr")
    's3://its-live-data/datacubes/v2/N30E090/c.zarr'
    """
    match = _HTTP_S3.match(str(url))
    if match:
        return f"s3://{match['bucket']}/{match['key']}"
    return str(url)


def candidate_urls(url: str) -> list[str]:
    """The S3 URLs to try for a catalog URL: as given, then under the bucket's current prefix."""
    s3_url = to_s3_url(url)
    urls = [s3_url]
    if LEGACY_PREFIX in s3_url:
        urls.append(s3_url.replace(LEGACY_PREFIX, CURRENT_PREFIX, 1))
    return urls


def s3_storage_options(storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Anonymous S3 options with bounded retries; user options take precedence."""
    options: dict[str, Any] = {"anon": True, "config_kwargs": dict(DEFAULT_S3_CONFIG)}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    options.update(storage_options or {})
    return options


def _open_zarr(store: Any, chunks: Any) -> xr.Dataset:
    # Real cubes are zarr v2 with consolidated metadata: 6 requests to open instead of ~70.
    try:
        return xr.open_zarr(store, consolidated=True, zarr_format=2, chunks=chunks)
    except (KeyError, FileNotFoundError, ValueError):
        return xr.open_zarr(store, chunks=chunks)


def _open_store(source: Any, storage_options: Mapping[str, Any] | None, chunks: Any) -> xr.Dataset:
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


def _crs_of(ds: xr.Dataset) -> Any:
    from pyproj import CRS

    for name in ("mapping", "spatial_ref"):
        if name in ds.variables:
            attrs = ds[name].attrs
            for key in ("crs_wkt", "spatial_ref"):
                if attrs.get(key):
                    return CRS.from_wkt(attrs[key])
            if attrs.get("spatial_epsg"):
                return CRS.from_epsg(int(attrs["spatial_epsg"]))
    projection = ds.attrs.get("projection")
    if projection:
        return CRS.from_user_input(
            f"EPSG:{projection}" if str(projection).isdigit() else projection
        )
    return None


def decode_cube(ds: xr.Dataset, variables: Iterable[str] | None = None) -> xr.Dataset:
    """Bring an ITS_LIVE cube into the form the rest of the library expects.

    Keeps ``variables`` (and the per-pair dates), loads the pair dates as ``mid_date``
    coordinates, sorts by ``mid_date`` (duplicates kept: they are distinct pairs), adds a
    unique ``pair_id`` coordinate (the position in the original cube), and records the CRS.
    Integer ``missing_value`` is already turned into NaN by xarray's CF decoding.
    """
    if "mid_date" not in ds.dims:
        raise NotAnITSLiveCubeError(
            f"this is not an ITS_LIVE cube: no 'mid_date' dimension (dims: {list(ds.dims)}). "
            "Open a cube with xr_itslive.open_cube, or rename your time dimension to 'mid_date'."
        )
    missing_dates = [name for name in PAIR_DATE_VARIABLES if name not in ds.variables]
    if missing_dates:
        raise NotAnITSLiveCubeError(
            f"this is not an ITS_LIVE cube: {missing_dates} not found; the cube has "
            f"{sorted(map(str, ds.variables))}. Image-pair cubes need both acquisition dates."
        )
    if variables is not None:
        variables = [variables] if isinstance(variables, str) else list(variables)
        absent = [v for v in variables if v not in ds.variables]
        if absent:
            raise MissingVariableError(
                f"variables {absent} not found; the cube has {sorted(map(str, ds.data_vars))}. "
                "Pass variables=(...) naming variables of the cube."
            )
        keep = set(variables) | set(PAIR_DATE_VARIABLES) | {"mapping"}
        ds = ds.drop_vars([v for v in ds.data_vars if v not in keep])

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
    crs = _crs_of(ds)
    if crs is not None:
        import rioxarray  # noqa: F401  (registers .rio)

        ds = ds.rio.write_crs(crs)
    return ds


def demo_cube_path() -> str:
    """The bundled real cube subset: 3×3 pixels, 7,397 pairs (1986-2024) of ITS_LIVE tile
    N30E090 in its original int16 encoding (vx, vy, v, their errors, satellite_img1)."""
    from importlib.resources import files

    return str(files("xr_itslive") / "data" / "N30E090_3x3_subset.nc")


def open_cube(
    source: Any = None,
    variables: Iterable[str] | None = None,
    *,
    lon: float | None = None,
    lat: float | None = None,
    catalog: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Open an ITS_LIVE datacube lazily.

    Parameters
    ----------
    source
        A local zarr path (or a netCDF file, such as :func:`demo_cube_path`), an ``s3://``
        URL, the catalog's
        ``http://its-live-data.s3.amazonaws.com/...`` form (rewritten to S3, and tried under the
        bucket's current prefix when the catalog's path is gone), or a zarr store mapping.
    lon, lat, catalog
        Instead of ``source``: the cube covering this point, found in ``catalog``
        (see :func:`xr_itslive.catalog.open_cube_at`).
    variables
        Variables to keep (default: all). The pair dates are always kept.
    storage_options
        Passed to s3fs; reads are anonymous by default with bounded retries.
    chunks
        Dask chunks. By default the store's spatial chunks with ``mid_date`` in one chunk,
        which is what :func:`xr_itslive.invert` needs.

    Returns
    -------
    xarray.Dataset
        Lazy (dask-backed) dataset, ``mid_date`` sorted (duplicates kept, told apart by the
        ``pair_id`` coordinate), pair dates as datetime64 coordinates, missing values as NaN,
        CRS available as ``ds.rio.crs``.

    Examples
    --------
    >>> import xr_itslive
    >>> ds = xr_itslive.open_cube("N30E090_3x3_cube.zarr", variables=["vx", "vy"])  # doctest: +SKIP
    """
    if source is None or lon is not None or lat is not None:
        from .catalog import open_cube_at

        if source is not None:
            raise InvalidParameterError(
                f"pass either source or lon=/lat=, not both (got source={source!r}, "
                f"lon={lon!r}, lat={lat!r})"
            )
        return open_cube_at(
            lon, lat, variables, catalog=catalog, storage_options=storage_options, chunks=chunks
        )
    ds = _open_store(source, storage_options, chunks={} if chunks is None else chunks)
    if chunks is None:
        # One mid_date chunk first, so that sorting permutes within chunks only.
        ds = ds.chunk({"mid_date": -1})
    return decode_cube(ds, variables)
