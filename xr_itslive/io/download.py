"""Bounded downloads and the user's cache folder."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import DataAccessError
from .urls import s3_storage_options

#: Environment variable naming a catalog (local path or URL) to use instead of the default.
CATALOG_ENV = "XR_ITSLIVE_CATALOG"
#: Environment variable naming the folder where downloads are cached.
CACHE_ENV = "XR_ITSLIVE_CACHE_DIR"

#: Bounded download: seconds per try and number of tries.
DOWNLOAD_TIMEOUT = 30.0
DOWNLOAD_ATTEMPTS = 3


def cache_dir() -> Path:
    """``$XR_ITSLIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/xr_itslive`` or ``~/.cache/xr_itslive``."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "xr_itslive"


def download(url: str, timeout: float, attempts: int) -> bytes:
    """The bytes at ``url`` (http(s) or s3), with bounded tries, or a clear error."""
    if url.startswith("s3://"):
        import s3fs

        try:
            fs = s3fs.S3FileSystem(**s3_storage_options())
            with fs.open(url, "rb") as handle:
                return handle.read()
        except Exception as err:  # botocore/s3fs raise many types
            raise DataAccessError(
                f"could not read the catalog {url!r}: {type(err).__name__}: {err}. Pass "
                f"catalog= a local copy, or set {CATALOG_ENV} to one."
            ) from err
    errors = []
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
                return response.read()
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            errors.append(f"{type(err).__name__}: {getattr(err, 'reason', err)}")
            if attempt + 1 < attempts:
                time.sleep(min(2.0**attempt * 0.5, 4.0))
    raise DataAccessError(
        f"could not download the ITS_LIVE catalog from {url!r} after {attempts} tries "
        f"({'; '.join(errors)}). Check your network, or pass catalog= a local copy of "
        f"catalog_v02.json (or set {CATALOG_ENV} to its path)."
    )
