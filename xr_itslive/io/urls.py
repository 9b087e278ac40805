"""URL rules of the ITS_LIVE bucket: the catalog's http form, S3, and the current prefix."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameterError

#: The bucket's prefix now, when the catalog still names ``datacubes/v2/``.
CURRENT_PREFIX = "datacubes/v2-updated-october2024/"
LEGACY_PREFIX = "datacubes/v2/"

#: ITS_LIVE's annual composites of the same tiles (the 2025 release).
COMPOSITE_PREFIX = "composites/annual/v2-updated-september2025/"

_CUBE_NAME = re.compile(
    r"(?P<head>.*?)datacubes/v2(?:-updated-october2024)?/(?P<region>[^/]+)/"
    r"ITS_LIVE_vel_EPSG(?P<epsg>\d+)_G0120_X(?P<x>-?\d+)_Y(?P<y>-?\d+)\.zarr/?$"
)

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

    Parameters
    ----------
    url : str or path-like
        A catalog URL, another URL or a local path (converted with ``str``).

    Returns
    -------
    str

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
    """The S3 URLs to try for a catalog URL: as given, then under the bucket's current prefix.

    Parameters
    ----------
    url : str
        A catalog (``http(s)://``) or ``s3://`` URL; the second candidate is added only when it
        holds the legacy ``datacubes/v2/`` prefix.
    """
    s3_url = to_s3_url(url)
    urls = [s3_url]
    if LEGACY_PREFIX in s3_url:
        urls.append(s3_url.replace(LEGACY_PREFIX, CURRENT_PREFIX, 1))
    return urls


def s3_storage_options(storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Anonymous S3 options with bounded retries; user options take precedence.

    Parameters
    ----------
    storage_options : mapping, optional
        s3fs options that override the defaults (``anon=True``, :data:`DEFAULT_S3_CONFIG`,
        and ``endpoint_url`` from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` when set).
    """
    options: dict[str, Any] = {"anon": True, "config_kwargs": dict(DEFAULT_S3_CONFIG)}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    options.update(storage_options or {})
    return options


def composite_url(cube_url: str) -> str:
    """The URL of ITS_LIVE's annual composite of the same tile as a datacube.

    ``.../datacubes/v2-updated-october2024/{REGION}/ITS_LIVE_vel_EPSG{code}_G0120_X{x}_Y{y}.zarr``
    (or the legacy ``datacubes/v2/``) becomes
    ``.../composites/annual/v2-updated-september2025/{REGION}/ITS_LIVE_velocity_EPSG{code}_120m_X{x}_Y{y}.zarr``,
    same scheme, bucket, region and tile centre.

    Parameters
    ----------
    cube_url : str
        A datacube URL (``http(s)://``, ``s3://``) as the catalog gives it.

    Returns
    -------
    str

    Raises
    ------
    InvalidParameterError
        ``cube_url`` is not an ITS_LIVE datacube URL.

    Examples
    --------
    >>> composite_url(
    ...     "s3://its-live-data/datacubes/v2-updated-october2024/N30E090/"
    ...     "ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr"
    ... )
    's3://its-live-data/composites/annual/v2-updated-september2025/N30E090/ITS_LIVE_velocity_EPSG32646_120m_X750000_Y3350000.zarr'
    """
    match = _CUBE_NAME.match(str(cube_url))
    if match is None:
        raise InvalidParameterError(
            f"{cube_url!r} is not an ITS_LIVE datacube URL (expected .../datacubes/v2[-updated-"
            "october2024]/REGION/ITS_LIVE_vel_EPSG<code>_G0120_X<x>_Y<y>.zarr); pass the cube's "
            "URL from xr_itslive.find_cubes, or the composite's own URL"
        )
    m = match.groupdict()
    return (
        f"{m['head']}{COMPOSITE_PREFIX}{m['region']}/"
        f"ITS_LIVE_velocity_EPSG{m['epsg']}_120m_X{m['x']}_Y{m['y']}.zarr"
    )


def is_composite_url(url: str) -> bool:
    """Whether ``url`` names an annual composite (not a datacube).

    Parameters
    ----------
    url : str
        Any URL or path.

    Returns
    -------
    bool
    """
    return "/composites/" in str(url) or "ITS_LIVE_velocity_EPSG" in str(url)
