"""Bounded downloads and the user's cache folder.

Two maintained tools do the work: **pooch** keeps cached files (a download lands in a
temporary file in the cache folder and is moved into place only when complete; a cached file
is reused as is, without asking the server again) and **requests/urllib3** bound every try
(``CONNECT_TIMEOUT`` to connect, ``timeout`` to read) and retry with exponential backoff.
``s3://`` URLs are read with s3fs, whose botocore client has bounded retries of its own.

A cached file is never refreshed by itself, however old: :func:`cache_age` says how old it is
(:attr:`~xr_itslive.io.catalog.Catalog.retrieved` and ``repr`` show it for a catalog), and
deleting the file or passing ``cache=False`` fetches a fresh copy.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse

from ..errors import DataAccessError

#: Environment variable naming a catalog (STAC API root, local path or URL) to use by default.
CATALOG_ENV = "XR_ITSLIVE_CATALOG"
#: Environment variable naming the folder where downloads are cached.
CACHE_ENV = "XR_ITSLIVE_CACHE_DIR"

#: Bounded download: seconds to wait for an answer per try, and number of tries.
DOWNLOAD_TIMEOUT = 30.0
DOWNLOAD_ATTEMPTS = 3
#: Seconds to wait for a connection (requests' advice: a little over a multiple of 3).
CONNECT_TIMEOUT = 3.05

# Seconds between retries: 0, 2 × this, 4 × this... (urllib3's exponential backoff).
_BACKOFF = 0.5
_RETRY_STATUS = (429, 500, 502, 503, 504)


def cache_dir() -> Path:
    """``$XR_ITSLIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/xr_itslive`` or ``~/.cache/xr_itslive``."""
    base = os.environ.get(CACHE_ENV)
    if base:
        return Path(base)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "xr_itslive"


def cache_path(url: str) -> Path:
    """Where :func:`cached_download` keeps (or will keep) its copy of ``url``.

    The file is named after the URL's last path segment, prefixed by the first 8 hex digits
    of the URL's SHA-256: two URLs with the same file name (a catalog_v02.json from two
    servers) get two copies instead of one overwriting the other, and the name still says
    what the file is.

    Parameters
    ----------
    url : str
        An ``http(s)://`` or ``s3://`` URL.

    Returns
    -------
    pathlib.Path
        ``cache_dir() / "<hash>-<name>"``; the file may not exist.

    Examples
    --------
    >>> cache_path("https://example.org/a/catalog_v02.json").name
    '87d4b5cf-catalog_v02.json'
    """
    name = urlparse(url).path.rstrip("/").rsplit("/", 1)[-1] or "download"
    digest = hashlib.sha256(url.encode()).hexdigest()[:8]
    return cache_dir() / f"{digest}-{name}"


def cache_age(path: str | os.PathLike) -> dt.timedelta:
    """How long ago a cached file was downloaded (its modification time).

    Parameters
    ----------
    path : str or path-like
        A file of the cache folder (or any file).

    Returns
    -------
    datetime.timedelta
    """
    written = dt.datetime.fromtimestamp(Path(path).stat().st_mtime, tz=dt.UTC)
    return dt.datetime.now(dt.UTC) - written


def retry_policy(attempts: int, *, any_method: bool = False):
    """urllib3's ``Retry`` for ``attempts`` tries: failed connections, reads and gateway errors.

    Parameters
    ----------
    attempts : int
        Tries in all (at least 1); between them urllib3 waits 0, 1, 2, 4... seconds.
    any_method : bool, optional
        Retry every method, POST included (STAC searches are POSTs that change nothing);
        default: only the idempotent ones (GET, HEAD...).

    Returns
    -------
    urllib3.util.retry.Retry
    """
    from urllib3.util.retry import Retry

    retries = max(int(attempts), 1) - 1
    extra = {"allowed_methods": None} if any_method else {}
    return Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        backoff_factor=_BACKOFF,
        status_forcelist=_RETRY_STATUS,
        raise_on_status=False,  # the last answer comes back, and raise_for_status names it
        **extra,
    )


def _session(attempts: int):
    import requests
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    for scheme in ("http://", "https://"):
        session.mount(scheme, HTTPAdapter(max_retries=retry_policy(attempts)))
    return session


def _failure(url: str, attempts: int, err: BaseException, what: str, fix: str) -> DataAccessError:
    reason = f"{type(err).__name__}: {str(err)[:300]}"
    return DataAccessError(
        f"could not download {what} from {url!r} after {attempts} tries ({reason}). {fix}".strip()
    )


def download(
    url: str,
    timeout: float = DOWNLOAD_TIMEOUT,
    attempts: int = DOWNLOAD_ATTEMPTS,
    *,
    what: str = "the file",
    fix: str = "Check the URL and your network.",
) -> bytes:
    """The bytes at ``url`` (http(s) or s3), with bounded tries, or a clear error. Not cached.

    Parameters
    ----------
    url : str
        An ``http(s)://`` or ``s3://`` URL.
    timeout : float, optional
        Seconds to wait for an answer per try (connecting takes at most ``CONNECT_TIMEOUT``).
    attempts : int, optional
        Tries (at least 1), with exponential backoff between them.
    what, fix : str, optional
        What is downloaded and how to do without it, for the error message.

    Returns
    -------
    bytes

    Raises
    ------
    DataAccessError
        Every try failed; the requests (or s3fs) error is the cause.
    """
    attempts = max(int(attempts), 1)
    if url.startswith("s3://"):
        from .s3 import s3_filesystem

        try:
            # bounded: botocore's 3 attempts, not s3fs's nested 5 x 5 loop around them
            fs = s3_filesystem()
            with fs.open(url, "rb") as handle:
                return handle.read()
        except Exception as err:  # botocore/s3fs raise many types
            raise DataAccessError(
                f"could not read {what} {url!r}: {type(err).__name__}: {err}. {fix}"
            ) from err
    import requests

    try:
        with _session(attempts) as session:
            response = session.get(url, timeout=(min(CONNECT_TIMEOUT, timeout), timeout))
            response.raise_for_status()
            return response.content
    except requests.RequestException as err:
        raise _failure(url, attempts, err, what, fix) from err


def cached_download(
    url: str,
    *,
    timeout: float = DOWNLOAD_TIMEOUT,
    attempts: int = DOWNLOAD_ATTEMPTS,
    what: str = "the file",
    fix: str = "Check the URL and your network.",
) -> Path:
    """The path of a cached copy of ``url`` in :func:`cache_dir`, downloaded (by pooch) if absent.

    The copy is :func:`cache_path` (the URL's file name after a short hash of the URL). An
    existing copy is returned as is, whatever its age (see :func:`cache_age`); delete it to
    download a fresh one.

    Parameters
    ----------
    url : str
        An ``http(s)://`` or ``s3://`` URL.
    timeout : float, optional
        Seconds to wait for an answer per try.
    attempts : int, optional
        Tries (at least 1); pooch waits 1, 2, ... seconds between them.
    what, fix : str, optional
        What is downloaded and how to do without it, for the error message.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    DataAccessError
        Every try failed; the requests (or s3fs) error is the cause.
    """
    import pooch
    import requests

    attempts = max(int(attempts), 1)
    target = cache_path(url)
    name = target.name
    if url.startswith("s3://"):

        def downloader(source: str, output_file: str, _pooch: object) -> None:
            Path(output_file).write_bytes(download(source, timeout, 1, what=what, fix=fix))

    else:
        downloader = pooch.HTTPDownloader(timeout=(min(CONNECT_TIMEOUT, timeout), timeout))
    store = pooch.create(
        path=target.parent,
        base_url="",
        registry={name: None},  # no known hash: ITS_LIVE updates its files in place
        urls={name: url},
        retry_if_failed=attempts - 1,
    )
    try:
        return Path(store.fetch(name, downloader=downloader))
    except requests.RequestException as err:
        raise _failure(url, attempts, err, what, fix) from err
