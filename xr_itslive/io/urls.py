"""URL rules of the ITS_LIVE bucket: the catalog's http form, S3, and the current prefix."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidParameterError

#: The static GeoJSON catalog of ITS_LIVE v2 datacubes (2023; replaced by the STAC API
#: :data:`~xr_itslive.io.stac.DEFAULT_STAC_URL`).
DEFAULT_CATALOG_URL = "https://its-live-data.s3.amazonaws.com/datacubes/catalog_v02.json"

#: The bucket's prefix now, when the catalog still names ``datacubes/v2/``.
CURRENT_PREFIX = "datacubes/v2-updated-october2024/"
LEGACY_PREFIX = "datacubes/v2/"

#: ITS_LIVE's annual composites of the same tiles (the 2025 release).
COMPOSITE_PREFIX = "composites/annual/v2-updated-september2025/"

_CUBE_NAME = re.compile(
    r"(?P<head>.*?)datacubes/v2(?:-updated-october2024)?/(?P<region>[^/]+)/"
    r"ITS_LIVE_vel_EPSG(?P<epsg>\d+)_G0120_X(?P<x>-?\d+)_Y(?P<y>-?\d+)\.zarr/?$"
)

#: Environment variable: the seconds one S3 attempt may wait for the endpoint to answer.
S3_TIMEOUT_ENV = "XR_ITSLIVE_S3_TIMEOUT"
#: Default of :data:`S3_TIMEOUT_ENV` (s3fs's own default read timeout).
DEFAULT_S3_TIMEOUT = 15.0
#: Attempts of one S3 request (the first and its retries).
S3_ATTEMPTS = 3
#: Tries of s3fs's own retry loop around botocore's (s3fs's default 5, nested twice on reads).
S3FS_RETRIES = 1

#: Bounded timeouts and retries, so that unreachable or frozen S3 fails with a clear error, not a
#: hang: at most 3 attempts of (3 s to connect + 15 s of silence), about 57 s in the worst case.
#: botocore's "standard" mode retries timeouts, dropped connections, throttling and 5xx.
DEFAULT_S3_CONFIG = {
    "connect_timeout": 3,
    "read_timeout": DEFAULT_S3_TIMEOUT,
    "retries": {"total_max_attempts": S3_ATTEMPTS, "mode": "standard"},
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


def s3_timeout() -> float:
    """The seconds one S3 attempt may wait for the endpoint: ``XR_ITSLIVE_S3_TIMEOUT`` or 15.

    Returns
    -------
    float

    Raises
    ------
    InvalidParameterError
        ``XR_ITSLIVE_S3_TIMEOUT`` is set but is not a positive number of seconds.
    """
    raw = os.environ.get(S3_TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_S3_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise InvalidParameterError(
            f"{S3_TIMEOUT_ENV}={raw!r} is not a positive number of seconds; set it to e.g. 15 "
            f"(the default), or unset it"
        )
    return seconds


def s3_storage_options(storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Anonymous S3 options with bounded timeouts and retries; user options take precedence.

    By default one request (a chunk, a metadata file) fails after at most 3 attempts of 3 s to
    connect and ``XR_ITSLIVE_S3_TIMEOUT`` seconds (default 15) of silence from the endpoint:
    about 57 s in the worst case (:func:`s3_request_budget`), instead of hanging. Cubes are
    opened through :class:`xr_itslive.io.s3.BoundedS3FileSystem`, which also keeps s3fs's
    own retry loop (5 tries, nested around botocore's) to one try.

    Parameters
    ----------
    storage_options : mapping, optional
        s3fs options that override the defaults: ``anon=True``; ``endpoint_url`` from
        ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` when set; and ``config_kwargs``
        (:data:`DEFAULT_S3_CONFIG`, ``read_timeout`` from ``XR_ITSLIVE_S3_TIMEOUT``, and a
        connect timeout of at most 3 s). A ``config_kwargs`` given here is merged key by key
        into the default one, so ``{"config_kwargs": {"read_timeout": 5}}`` keeps the bounded
        retries; a ``retries`` dict given there replaces the default one.

    Returns
    -------
    dict
        Keyword arguments for :class:`s3fs.S3FileSystem`.

    Raises
    ------
    InvalidParameterError
        ``XR_ITSLIVE_S3_TIMEOUT`` is not a positive number.

    Examples
    --------
    >>> s3_storage_options({"config_kwargs": {"read_timeout": 5}})["config_kwargs"]["retries"]
    {'total_max_attempts': 3, 'mode': 'standard'}
    """
    timeout = s3_timeout()
    config: dict[str, Any] = {
        **DEFAULT_S3_CONFIG,
        "connect_timeout": min(DEFAULT_S3_CONFIG["connect_timeout"], timeout),
        "read_timeout": timeout,
        "retries": dict(DEFAULT_S3_CONFIG["retries"]),
    }
    options: dict[str, Any] = {"anon": True}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    user = dict(storage_options or {})
    options.update(user)
    options["config_kwargs"] = {**config, **(user.get("config_kwargs") or {})}
    return options


def s3_request_budget(storage_options: Mapping[str, Any] | None = None) -> float:
    """The most seconds one S3 request can take to fail with these options, retries included.

    Attempts × (connect timeout + read timeout) + botocore's longest backoffs between attempts
    (``min(2**i, 20)`` s after attempt ``i``), times s3fs's nested retry loops.

    Parameters
    ----------
    storage_options : mapping, optional
        As for :func:`s3_storage_options` (defaults and ``XR_ITSLIVE_S3_TIMEOUT`` applied),
        and ``retries`` as :class:`xr_itslive.io.s3.BoundedS3FileSystem` takes it.

    Returns
    -------
    float
        Seconds; about 57 with the defaults.
    """
    options = s3_storage_options(storage_options)
    config = options["config_kwargs"]
    retries = config.get("retries") or {}
    if "total_max_attempts" in retries:
        attempts = int(retries["total_max_attempts"])
    elif "max_attempts" in retries:  # botocore counts these as retries after the first try
        attempts = int(retries["max_attempts"]) + 1
    else:  # botocore's defaults: 3 attempts in "standard" mode, 5 in "legacy"
        attempts = 3 if retries.get("mode") in ("standard", "adaptive") else 5
    attempts = max(attempts, 1)
    per_attempt = float(config.get("connect_timeout", 60)) + float(config.get("read_timeout", 60))
    backoff = sum(min(2.0**i, 20.0) for i in range(attempts - 1))
    # s3fs wraps a chunk read in two nested retry loops of `retries` tries each.
    nested = max(int(options.get("retries", S3FS_RETRIES)), 1) ** 2
    return nested * (attempts * per_attempt + backoff)


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
