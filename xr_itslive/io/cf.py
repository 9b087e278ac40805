"""Results that open anywhere: the one function that makes a result CF-1.8 conformant.

Every result of the library (:func:`xr_itslive.invert`, :func:`xr_itslive.invert_mosaic`,
:func:`xr_itslive.gp_regress`, the composites) passes through :func:`to_cf` as the last step of
its workflow. Why in the workflows and not at write time: a result must write with a plain
``result.to_netcdf()`` (scipy's netCDF-3 writer, netCDF4, h5netcdf) or ``result.to_zarr()``, and
xarray offers no hook between a Dataset and its writer; and why one function: the rules (what
netCDF can store, what CF-1.8 asks for, which grid-mapping variable) then live in one place, and
a result assembled elsewhere (or changed by a user) is made writable the same way.

What :func:`to_cf` does:

- global attributes ``Conventions``, ``title``, ``source``, ``history``, ``references``;
- attribute values netCDF cannot store (lists of strings, dicts, None, booleans) are encoded
  (JSON text, ``""``, 0/1); numeric lists stay numeric arrays; attributes named like a member
  of a Dataset, a DataArray or scipy's netCDF objects (``variables``, ``dims``, ``data``...) are
  renamed ``<name>_attribute`` (scipy's writer stores attributes as Python attributes of its
  file object, so a global ``variables`` replaces its own and the write fails);
- one grid-mapping variable, ``mapping`` (ITS_LIVE's name), with ``grid_mapping_name``,
  ``crs_wkt``, ``spatial_ref`` (GDAL) and ``spatial_epsg``, referenced by the ``grid_mapping``
  attribute of every spatial data variable (rioxarray's ``spatial_ref`` copy is dropped);
- ``standard_name``, ``long_name``, ``units`` and ``axis`` on the coordinates; standard names
  only from the CF table (ITS_LIVE cubes use a few that are not: they become long names);
- dates as ``float64`` days since 1970-01-01 (as ITS_LIVE cubes store them, and netCDF-3 has no
  64-bit integers), ``time`` and its ``bounds`` on the same units;
- 64-bit integers written as 32-bit ones (CF-1.8 has no ``int64``), booleans as 0/1 flags, no
  ``_FillValue`` on coordinates and bounds.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from ..crs import cube_crs

__all__ = ["CONVENTIONS", "GRID_MAPPING", "TIME_UNITS", "read_list_attribute", "to_cf"]

#: The conventions results follow (``Conventions`` attribute).
CONVENTIONS = "CF-1.8"
#: The name of the grid-mapping variable: ITS_LIVE's own (its cubes and composites use it).
GRID_MAPPING = "mapping"
#: Units of every date: ITS_LIVE cubes store theirs the same way, so a pair's dates come back as
#: the cube had them, and float64 fits netCDF-3, which has no 64-bit integers.
TIME_UNITS = "days since 1970-01-01"
CALENDAR = "proleptic_gregorian"
REFERENCES = (
    "ITS_LIVE (NASA MEaSUREs Inter-mission Time Series of Land Ice Velocity and Elevation), "
    "https://its-live.jpl.nasa.gov; Gardner et al. (2018), The Cryosphere 12, 521-547, "
    "https://doi.org/10.5194/tc-12-521-2018"
)

# Standard names results use that are in the CF standard-name table (version 93). Others
# (ITS_LIVE cubes call v 'land_ice_surface_velocity' and v_error 'velocity_error', which the
# table lacks) would be errors for a CF checker; they are kept as long names instead.
_CF_STANDARD_NAMES = frozenset(
    {
        "land_ice_surface_x_velocity",
        "land_ice_surface_y_velocity",
        "land_ice_x_velocity",
        "land_ice_y_velocity",
        "land_ice_surface_upward_velocity",
        "projection_x_coordinate",
        "projection_y_coordinate",
        "latitude",
        "longitude",
        "time",
    }
)
# CF standard-name modifiers (CF-1.8 Appendix C) that may follow a name.
_MODIFIERS = frozenset({"standard_error", "number_of_observations", "status_flag"})

# Coordinates of results and of the pairs they carry (outliers): what CF asks of each.
_COORDINATES: dict[str, dict[str, str]] = {
    "time": {"standard_name": "time", "long_name": "time", "axis": "T"},
    "mid_date": {
        "standard_name": "time",
        "long_name": "midpoint of the image pair's acquisition dates",
    },
    "acquisition_date_img1": {
        "standard_name": "time",
        "long_name": "acquisition date of the pair's first image",
    },
    "acquisition_date_img2": {
        "standard_name": "time",
        "long_name": "acquisition date of the pair's second image",
    },
    "pair_id": {"long_name": "index of the image pair in its cube", "units": "1"},
}
_PROJECTED_AXES = {
    "x": {"standard_name": "projection_x_coordinate", "long_name": "x coordinate of projection",
          "axis": "X", "units": "m"},
    "y": {"standard_name": "projection_y_coordinate", "long_name": "y coordinate of projection",
          "axis": "Y", "units": "m"},
}  # fmt: skip
_GEOGRAPHIC_AXES = {
    "x": {"standard_name": "longitude", "long_name": "longitude", "axis": "X",
          "units": "degrees_east"},
    "y": {"standard_name": "latitude", "long_name": "latitude", "axis": "Y",
          "units": "degrees_north"},
}  # fmt: skip

# Spellings of velocity units that UDUNITS does not parse (ITS_LIVE granules write "m/y"; "a"
# is UDUNITS' are, an area, not the glaciologists' annum). Valid spellings ("m/yr",
# "meter/year", "m year-1") are kept as they are.
_UNIT_FIXES = {
    "m/y": "m/year",
    "meter/y": "m/year",
    "meters/y": "m/year",
    "m/a": "m/year",
    "m a-1": "m year-1",
    "m y-1": "m year-1",
    # a day of the year (a seasonal phase) counts days after January 1: UDUNITS' "days"
    "day of year": "days",
}

# CF attributes whose values must have the variable's own type (CF-1.8 §2.5.1, §3.5).
_TYPED_ATTRIBUTES = ("flag_values", "flag_masks", "valid_range", "valid_min", "valid_max",
                     "actual_range", "missing_value")  # fmt: skip

# Attribute names that break a writer or hide behind a member: scipy's netcdf_file and
# netcdf_variable keep attributes as Python attributes of themselves, so these replace their
# own (the file's variables, a variable's data or shape); the Dataset/DataArray members hide an
# attribute from attribute-style access.
_SCIPY_FILE_MEMBERS = frozenset(
    {"variables", "dimensions", "filename", "mode", "version_byte", "fp", "use_mmap",
     "maskandscale", "close", "flush", "sync", "createDimension", "createVariable"}
)  # fmt: skip
_SCIPY_VARIABLE_MEMBERS = frozenset(
    {"data", "shape", "dimensions", "isrec", "maskandscale", "typecode", "itemsize",
     "assignValue", "getValue"}
)  # fmt: skip


@functools.cache
def _reserved(kind: str) -> frozenset[str]:
    if kind == "global":
        members = {n for n in dir(xr.Dataset) if not n.startswith("_")}
        return frozenset(members | _SCIPY_FILE_MEMBERS)
    members = {n for n in dir(xr.DataArray) if not n.startswith("_")}
    return frozenset(members | _SCIPY_VARIABLE_MEMBERS)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _attr_value(value: Any) -> Any:
    """``value`` as netCDF (3 and 4) and zarr can store it."""
    if value is None:
        return ""
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _attr_value(value.item())
        if value.dtype.kind == "b":
            return value.astype(np.int8)
        if value.dtype.kind in "iuf" and value.ndim == 1 and value.size:
            return value
        return json.dumps(value.tolist(), default=str)
    if isinstance(value, list | tuple) and value and all(_is_number(v) for v in value):
        return np.asarray(value)
    if isinstance(value, list | tuple | dict | set | frozenset):
        items = sorted(value, key=str) if isinstance(value, set | frozenset) else value
        return json.dumps(items if not isinstance(value, tuple) else list(items), default=str)
    return str(value)


def _encode_attrs(attrs: Mapping[Hashable, Any], kind: str) -> dict[str, Any]:
    reserved = _reserved(kind)
    out: dict[str, Any] = {}
    for key, value in attrs.items():
        name = str(key)
        if name in reserved:
            name = f"{name}_attribute"
        out[name] = _attr_value(value)
    return out


def read_list_attribute(attrs: Mapping[Hashable, Any], name: str, *old_names: str) -> list:
    """A list-valued attribute as :func:`to_cf` writes it, or as older results held it.

    Parameters
    ----------
    attrs
        The attributes (of a result, or of one of its variables).
    name
        The attribute to read.
    *old_names
        Earlier names of the same attribute, read when ``name`` is absent (results written
        before a rename, e.g. invert's ``variables``, now ``inverted_variables``).

    Returns
    -------
    list
        The values: JSON text decoded, space-separated words split (CF lists such as
        ``flag_meanings``), arrays and lists as lists; ``[]`` when absent or empty.

    Examples
    --------
    >>> read_list_attribute({"variables": ["vx", "vy"]}, "inverted_variables", "variables")
    ['vx', 'vy']
    >>> read_list_attribute({"inverted_variables": '["vx", "vy"]'}, "inverted_variables")
    ['vx', 'vy']
    """
    for key in (name, *old_names):
        if key in attrs:
            value = attrs[key]
            break
    else:
        return []
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return list(json.loads(text))
        return text.split()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def _grid_mapping_attrs(crs: Any) -> dict[str, Any]:
    attrs = dict(crs.to_cf())
    attrs["crs_wkt"] = crs.to_wkt()
    # GDAL before 3 and the ITS_LIVE cubes read the WKT1 text in 'spatial_ref'
    attrs["spatial_ref"] = crs.to_wkt("WKT1_GDAL") or crs.to_wkt()
    epsg = crs.to_epsg()
    if epsg:
        attrs["spatial_epsg"] = int(epsg)
    attrs.setdefault("long_name", "coordinate reference system of the grid")
    return attrs


def _referenced(ds: xr.Dataset, key: str) -> set[str]:
    """The variables named by ``key`` (``grid_mapping``, ``bounds``) in attrs or encodings."""
    names = set()
    for var in ds.variables.values():
        for where in (var.attrs, var.encoding):
            value = where.get(key)
            if isinstance(value, str) and value:
                names.add(value.split(":")[0].strip())
    return names


def _numpy_dtype(dtype: Any) -> np.dtype:
    """``dtype`` as a numpy dtype, from any array-API namespace (array_api_strict's print as
    ``array_api_strict.float32``; CuPy's are numpy's)."""
    try:
        return np.dtype(dtype)
    except TypeError:
        return np.dtype(str(dtype).rsplit(".", 1)[-1])


def _int_dtype(var: xr.Variable) -> np.dtype | None:
    """The dtype a 64-bit integer variable is written as (CF-1.8 has no int64), or None."""
    dtype = _numpy_dtype(var.dtype)
    if dtype.kind not in "iu" or dtype.itemsize < 8:
        return None
    if isinstance(var.data, np.ndarray) and var.size:
        low, high = int(var.data.min()), int(var.data.max())
        if low < np.iinfo(np.int32).min or high > np.iinfo(np.int32).max:
            return np.dtype("float64")  # exact up to 2**53, unlike a wrapped int32
    # Lazy integers of results are counts and indices (n_obs, pair_id): far below 2**31.
    return np.dtype("int32")


def to_cf(
    ds: xr.Dataset,
    *,
    crs: Any = None,
    title: str | None = None,
    history: str | None = None,
    source: str | None = None,
) -> xr.Dataset:
    """``ds`` made CF-1.8 conformant and writable by every netCDF writer and by zarr.

    Nothing is computed: lazy variables stay lazy. Applying it twice gives the same result.

    Parameters
    ----------
    ds
        A result (``time`` × ``y`` × ``x``, or a point series along ``time``).
    crs
        The CRS of the grid (anything pyproj reads). Default: the one ``ds`` records
        (``xr_itslive.crs.cube_crs``). Without a CRS or an ``x``/``y`` grid, no grid-mapping
        variable is written.
    title
        The ``title`` attribute. Default: ``ds``'s own, or a generic one.
    history
        What made the result (e.g. ``"xr_itslive.invert"``), appended as a line of the
        ``history`` attribute (once). No time stamp and no version: the resumable stores
        compare a result's attributes with those of the run that started them, and a time
        would tell every run apart (a version, every upgrade).
    source
        The ``source`` attribute. Default: ``ds``'s own, or ITS_LIVE with the input's URL
        (``source_url``) when known.

    Returns
    -------
    xarray.Dataset
        A new Dataset; ``ds`` is not changed.

    Examples
    --------
    >>> import xr_itslive
    >>> from xr_itslive.io.cf import to_cf
    >>> cube = xr_itslive.synthetic_cube(n_pairs=100, ny=2, nx=2)
    >>> result = to_cf(xr_itslive.invert(cube, step=30))
    >>> result.attrs["Conventions"], result["vx"].attrs["grid_mapping"]
    ('CF-1.8', 'mapping')
    """
    if crs is None:
        try:
            crs = cube_crs(ds)
        except Exception:  # an unreadable CRS record: write no grid mapping rather than fail
            crs = None
    else:
        from pyproj import CRS

        crs = CRS.from_user_input(crs)
    spatial_dims = {"x", "y"} & set(ds.dims)
    point = all(n in ds.coords and ds[n].ndim == 0 for n in ("x", "y"))
    has_grid = bool(spatial_dims) or point

    # One grid-mapping variable: drop every earlier one (ITS_LIVE's mapping, rioxarray's
    # spatial_ref, whatever the variables name), then write ours. Without a CRS to write,
    # what is there stays: an unreadable record is still better than none.
    out = ds
    rewrite_mapping = has_grid and crs is not None
    if rewrite_mapping:
        old_mappings = (_referenced(ds, "grid_mapping") | {"spatial_ref", GRID_MAPPING}) & set(
            map(str, ds.variables)
        )
        mapping = xr.Variable((), np.int32(0), _grid_mapping_attrs(crs))
        out = ds.drop_vars(sorted(old_mappings)).assign_coords({GRID_MAPPING: mapping})

    bounds = _referenced(out, "bounds") & set(map(str, out.variables))
    axes = _GEOGRAPHIC_AXES if crs is not None and crs.is_geographic else _PROJECTED_AXES
    out = out.copy()
    for key, var in out.variables.items():
        name = str(key)
        attrs = dict(var.attrs)
        encoding = dict(var.encoding)
        if rewrite_mapping:  # in attrs, where every writer (and the stores) keep it
            encoding.pop("grid_mapping", None)
            attrs.pop("grid_mapping", None)
        if name == GRID_MAPPING and rewrite_mapping:
            var.attrs = _encode_attrs(attrs, "variable")
            var.encoding = {}
            continue
        is_coord = key in out.coords
        if name in ("x", "y") and is_coord:
            for k, v in axes[name].items():
                attrs.setdefault(k, v)
            if attrs.get("units") == "metre":
                attrs["units"] = "m"
        for k, v in _COORDINATES.get(name, {}).items():
            attrs.setdefault(k, v)
        if name in bounds:
            # CF-1.8 §7.1: a boundary variable takes its parent's metadata; repeating it is
            # discouraged
            for k in ("long_name", "standard_name", "units", "axis", "calendar"):
                attrs.pop(k, None)
        kind = _numpy_dtype(var.dtype).kind
        if kind == "M":
            encoding.update(units=TIME_UNITS, dtype="float64")
            encoding.setdefault("calendar", CALENDAR)
        elif kind == "m":
            encoding.update(units="days", dtype="float64")
        elif (wide := _int_dtype(var)) is not None:
            encoding["dtype"] = wide
        elif kind == "b":
            attrs.setdefault("flag_values", np.array([0, 1], dtype=np.int8))
            attrs.setdefault("flag_meanings", "false true")
        flags = "flag_values" in attrs or "flag_masks" in attrs
        if kind in "iu" and not is_coord and not flags:
            attrs.setdefault("units", "1")  # counts (n_obs): dimensionless, CF's "1"
        if is_coord or name in bounds:
            encoding["_FillValue"] = None  # CF-1.8 §2.5.1: no fill value on coordinates
        # standard names from the CF table only (see _CF_STANDARD_NAMES)
        standard = attrs.get("standard_name")
        if standard is not None:
            words = str(standard).split()
            valid = bool(words) and words[0] in _CF_STANDARD_NAMES
            valid = valid and all(w in _MODIFIERS for w in words[1:]) and len(words) <= 2
            if not valid:
                attrs.pop("standard_name")
                attrs.setdefault("long_name", str(standard).replace("_", " "))
        if name.endswith("_std") and "standard_name" not in attrs:
            parent = out.variables.get(name[: -len("_std")])
            base = parent.attrs.get("standard_name") if parent is not None else None
            if base in _CF_STANDARD_NAMES:
                attrs["standard_name"] = f"{base} standard_error"
        if "units" in attrs:
            attrs["units"] = _UNIT_FIXES.get(str(attrs["units"]).strip(), attrs["units"])
        if name not in bounds and "long_name" not in attrs and "standard_name" not in attrs:
            attrs["long_name"] = name.replace("_", " ")
        if (
            rewrite_mapping
            and not is_coord
            and name not in bounds
            and (point or set(map(str, var.dims)) & spatial_dims)
        ):
            attrs["grid_mapping"] = GRID_MAPPING
        encoded = _encode_attrs(attrs, "variable")
        on_disk = _numpy_dtype(encoding.get("dtype", var.dtype))
        if on_disk.kind == "b":
            on_disk = np.dtype(np.int8)  # xarray writes booleans as int8
        for k in _TYPED_ATTRIBUTES:
            if k in encoded and on_disk.kind in "iuf":
                encoded[k] = np.asarray(encoded[k], dtype=on_disk)
        var.attrs = encoded
        var.encoding = encoding

    attrs = dict(out.attrs)
    attrs["Conventions"] = CONVENTIONS
    attrs["title"] = title or attrs.get("title") or "ITS_LIVE velocities processed by xr_itslive"
    if source is not None:
        attrs["source"] = source
    elif not attrs.get("source"):
        where = attrs.get("source_url") or attrs.get("url")
        attrs["source"] = "ITS_LIVE image-pair velocities" + (f" from {where}" if where else "")
    if history:
        line = str(history)
        lines = [s for s in str(attrs.get("history") or "").splitlines() if s.strip()]
        if line not in lines:
            lines.append(line)
        attrs["history"] = "\n".join(lines)
    attrs.setdefault("references", REFERENCES)
    out.attrs = _encode_attrs(attrs, "global")
    out.encoding = {k: v for k, v in out.encoding.items() if k != "grid_mapping"}
    return out
