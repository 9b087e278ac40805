"""``open_cube`` and ``open_composite``: a cube, or its annual composite, by path, URL or point
(the catalog finds the cube)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import xarray as xr

from ..crs import crs_from_attributes
from ..errors import InvalidParameterError, MissingVariableError
from .catalog import Catalog, find_cubes
from .cube import open_source, open_store
from .urls import composite_url, is_composite_url


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
        A local zarr path (or a netCDF file, such as :func:`~xr_itslive.demo_cube_path`), an ``s3://``
        URL, the catalog's
        ``http://its-live-data.s3.amazonaws.com/...`` form (rewritten to S3, and tried under the
        bucket's current prefix when the catalog's path is gone), or a zarr store mapping.
    lon, lat, catalog
        Instead of ``source``: the cube covering this point, found in ``catalog``
        (see :func:`xr_itslive.open_cube_at`).
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

    Raises
    ------
    DataAccessError
        Nothing at ``source``, the storage failed, the store is damaged, or it lacks chunks
        of the variables opened (or of its coordinates) that zarr would read as made-up
        values (0.0 m/yr for ITS_LIVE's velocities): re-download or copy it again.

    Examples
    --------
    >>> import xr_itslive
    >>> ds = xr_itslive.open_cube("N30E090_3x3_cube.zarr", variables=["vx", "vy"])  # doctest: +SKIP
    """
    if source is None or lon is not None or lat is not None:
        if source is not None:
            raise InvalidParameterError(
                f"pass either source or lon=/lat=, not both (got source={source!r}, "
                f"lon={lon!r}, lat={lat!r})"
            )
        return open_cube_at(
            lon, lat, variables, catalog=catalog, storage_options=storage_options, chunks=chunks
        )
    return open_source(source, variables, storage_options=storage_options, chunks=chunks)


def open_cube_at(
    lon: float | None,
    lat: float | None,
    variables: Iterable[str] | None = None,
    *,
    catalog: str | os.PathLike | Catalog | None = None,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Mapping[str, int] | None = None,
):
    """Open, lazily, the ITS_LIVE cube that best covers a lon/lat point.

    The cube is the first of :func:`~xr_itslive.find_cubes` (the one the point lies deepest
    in), opened
    with :func:`xr_itslive.open_cube`; ``xr_itslive.open_cube(lon=..., lat=...)`` calls this.

    Parameters
    ----------
    lon, lat
        The point, in degrees.
    variables, storage_options, chunks
        As for :func:`xr_itslive.open_cube`.
    catalog
        As for :func:`~xr_itslive.find_cubes`.

    Returns
    -------
    xarray.Dataset
        The lazy cube; ``ds.attrs["catalog_url"]`` records the catalog entry's URL.

    Examples
    --------
    >>> ds = open_cube_at(95.97, 29.91, variables=["vx", "vy"])  # doctest: +SKIP
    """
    if lon is None or lat is None:
        raise InvalidParameterError(
            f"open a cube at a point with both lon= and lat= (degrees), got lon={lon!r}, "
            f"lat={lat!r}; or pass a source (path or URL) instead."
        )
    entry = find_cubes(point=(lon, lat), catalog=catalog)[0]
    ds = open_cube(entry.zarr_url, variables, storage_options=storage_options, chunks=chunks)
    ds.attrs["catalog_url"] = entry.zarr_url
    return ds


def open_composite(
    source: Any = None,
    variables: Iterable[str] | None = None,
    *,
    lon: float | None = None,
    lat: float | None = None,
    catalog: str | os.PathLike | Catalog | None = None,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Mapping[str, int] | None = None,
) -> xr.Dataset:
    """Open ITS_LIVE's annual composite of a tile lazily, like :func:`open_cube`.

    Parameters
    ----------
    source : str, path-like or CubeEntry, optional
        The composite's own URL or path, or a datacube's URL (or catalog entry): the
        composite of the same tile (:func:`xr_itslive.io.urls.composite_url`).
    variables : iterable of str, optional
        Variables to keep (default: all), e.g. ``["v", "v_error", "v_amp", "v_phase"]``.
    lon, lat, catalog
        Instead of ``source``: the tile covering this point, found in ``catalog`` (see
        :func:`~xr_itslive.find_cubes`).
    storage_options : mapping, optional
        s3fs options; reads are anonymous by default with bounded retries.
    chunks : mapping, optional
        Dask chunks; default: the store's.

    Returns
    -------
    xarray.Dataset
        Lazy; the CRS recorded (``ds.rio.crs``), ``attrs["composite_url"]`` the URL read.
    """
    if source is None or lon is not None or lat is not None:
        if source is not None or lon is None or lat is None:
            raise InvalidParameterError(
                "pass either source or both lon= and lat= (degrees), not both; got "
                f"source={source!r}, lon={lon!r}, lat={lat!r}"
            )
        source = find_cubes(point=(lon, lat), catalog=catalog)[0]
    if hasattr(source, "zarr_url"):  # a catalog entry
        source = source.zarr_url
    url = str(source)
    if not (is_composite_url(url) or os.path.exists(url)):
        url = composite_url(url)
    ds = open_store(url, storage_options, chunks={} if chunks is None else chunks)
    crs = crs_from_attributes(ds)  # before the selection drops the mapping variable
    if variables is not None:
        wanted = [variables] if isinstance(variables, str) else list(variables)
        absent = [v for v in wanted if v not in ds.variables]
        if absent:
            raise MissingVariableError(
                f"variables {absent} not found in the composite {url!r}; it has "
                f"{sorted(map(str, ds.data_vars))}"
            )
        ds = ds[[v for v in wanted if v in ds.data_vars]]
    if crs is not None:
        import rioxarray  # noqa: F401  (registers .rio)

        ds = ds.rio.write_crs(crs)
    ds.attrs["composite_url"] = url
    return ds
