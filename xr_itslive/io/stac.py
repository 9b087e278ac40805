"""Search a STAC API for ITS_LIVE datacubes, with bounded timeouts and retries.

Today's ITS_LIVE lists its datacubes as the collection ``itslive-cubes`` of the STAC API at
https://stac.itslive.cloud (the static ``catalog_v02.json`` that it replaced still works
through :func:`~xr_itslive.load_catalog`). This module only talks to the API, through
pystac-client: it opens a client once per API root (then reuses it), runs item searches
(pystac-client follows the ``next`` links of every page) and turns every failure into a
:class:`~xr_itslive.errors.DataAccessError` that says what went wrong and names the offline
fallback. Reading the items as cubes (their zarr asset, CRS and projected box) is
:meth:`~xr_itslive.io.catalog.CubeEntry.from_stac_item`; searching with exact membership is
:class:`~xr_itslive.io.catalog.StacCatalog`.

Every request is bounded: :data:`~xr_itslive.io.download.CONNECT_TIMEOUT` seconds to connect,
``timeout`` seconds to read, and ``attempts`` tries with exponential backoff
(:func:`~xr_itslive.io.download.retry_policy`), so an API that cannot be reached fails in a few
seconds instead of hanging.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from ..errors import DataAccessError
from .download import (
    CACHE_ENV,
    CATALOG_ENV,
    CONNECT_TIMEOUT,
    DOWNLOAD_ATTEMPTS,
    DOWNLOAD_TIMEOUT,
    cache_age,
    cache_dir,
    cache_path,
    retry_policy,
)
from .urls import DEFAULT_CATALOG_URL

#: The public ITS_LIVE STAC API.
DEFAULT_STAC_URL = "https://stac.itslive.cloud"
#: The collection of ITS_LIVE datacubes in it.
DEFAULT_COLLECTION = "itslive-cubes"
#: Items per page of a search (the client follows the pages).
PAGE_LIMIT = 100

#: What to do without the network, in every "could not be reached" message (followed by
#: what :func:`offline_fallback` says of the cached copy).
OFFLINE_FALLBACK = (
    "Offline (or to pin a catalog), pass catalog= a GeoJSON catalog file, e.g. a copy of "
    f"catalog_v02.json, or set {CATALOG_ENV} to its path."
)


def offline_fallback() -> str:
    """:data:`OFFLINE_FALLBACK`, and where the cached GeoJSON catalog is, or how to get one.

    The cached copy is that of :data:`~xr_itslive.io.urls.DEFAULT_CATALOG_URL`
    (:func:`~xr_itslive.io.download.cache_path`), as ``load_catalog`` of that URL keeps it.

    Returns
    -------
    str
        With a cached copy: its path and age, ready to pass as ``catalog=``. Without one:
        the call that downloads it while online, and the folder it lands in.
    """
    cached = cache_path(DEFAULT_CATALOG_URL)
    if cached.is_file():
        days = cache_age(cached).total_seconds() / 86400
        return (
            f"{OFFLINE_FALLBACK} A cached copy (downloaded {days:.1f} days ago) is at "
            f"{str(cached)!r}: pass catalog={str(cached)!r}."
        )
    return (
        f"{OFFLINE_FALLBACK} No copy is cached in {str(cache_dir())!r} yet; while online, "
        f"xr_itslive.load_catalog({DEFAULT_CATALOG_URL!r}) downloads and caches one there "
        f"({CACHE_ENV} chooses the folder)."
    )


def is_stac_root(source: Any) -> bool:
    """Whether ``source`` names a STAC API root rather than a GeoJSON catalog.

    Parameters
    ----------
    source : str or path-like
        An ``http(s)://`` URL whose path does not end in ``.json``/``.geojson`` is a STAC API
        root; anything else (a local path, ``s3://``, a ``.json`` URL) is not.

    Returns
    -------
    bool

    Examples
    --------
    >>> is_stac_root("https://stac.itslive.cloud")
    True
    >>> is_stac_root("https://its-live-data.s3.amazonaws.com/datacubes/catalog_v02.json")
    False
    """
    text = str(source)
    if not text.startswith(("http://", "https://")):
        return False
    return not urlparse(text).path.lower().endswith((".json", ".geojson"))


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and its causes, outermost first (requests keeps urllib3's error in ``args``)."""
    chain: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and all(seen is not other for other in chain) and len(chain) < 12:
        chain.append(seen)
        following = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
        if following is None and seen.args and isinstance(seen.args[0], BaseException):
            following = seen.args[0]
        if following is None and isinstance(getattr(seen, "reason", None), BaseException):
            following = seen.reason
        seen = following
    return chain


def _reason(err: BaseException) -> str:
    """The innermost cause of a failed request, in one short line."""
    cause = _chain(err)[-1]
    return f"{type(cause).__name__}: {str(cause)[:300]}"


def _is_connection_failure(err: BaseException) -> bool:
    import requests
    import urllib3.exceptions

    network = (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError, OSError)
    return any(isinstance(e, network) for e in _chain(err))


def _access_error(root: str, err: BaseException, attempts: int, timeout: float) -> DataAccessError:
    """The error for a failed request: unreachable, or an answer that is not STAC."""
    if _is_connection_failure(err):
        return DataAccessError(
            f"the STAC API at {root!r} could not be reached ({_reason(err)}; {attempts} tries, "
            f"{CONNECT_TIMEOUT:g} s to connect, {timeout:g} s to read). Check the URL and your "
            f"network. {offline_fallback()}"
        )
    status = getattr(err, "status_code", None)
    answer = f"HTTP {status}: {str(err)[:200]!r}" if status else _reason(err)
    return DataAccessError(
        f"the server at {root!r} did not answer as a STAC API ({answer}). Expected a STAC API "
        f"root (a landing page with conformsTo and a search link), such as {DEFAULT_STAC_URL}; "
        f"check the URL, or pass catalog= a GeoJSON catalog file (catalog_v02.json) or set "
        f"{CATALOG_ENV} to one."
    )


@functools.lru_cache(maxsize=16)
def open_api(
    root: str = DEFAULT_STAC_URL,
    collection: str = DEFAULT_COLLECTION,
    timeout: float = DOWNLOAD_TIMEOUT,
    attempts: int = DOWNLOAD_ATTEMPTS,
):
    """A pystac-client ``Client`` of the STAC API at ``root``, checked to serve ``collection``.

    Reads the landing page and the collection (two requests), once per argument set: the
    client is kept and reused by later searches (a failure is not kept).

    Parameters
    ----------
    root : str, optional
        The STAC API root URL (default: the public ITS_LIVE API).
    collection : str, optional
        The collection that must exist (default ``"itslive-cubes"``).
    timeout : float, optional
        Seconds to wait for an answer (connecting takes at most ``CONNECT_TIMEOUT``).
    attempts : int, optional
        Tries per request (at least 1), with exponential backoff between them.

    Returns
    -------
    pystac_client.Client

    Raises
    ------
    DataAccessError
        The API cannot be reached (the message names the offline fallback), answers something
        that is not STAC, offers no item search, or has no such collection.
    """
    import pystac_client
    from pystac_client.stac_api_io import StacApiIO

    retries = max(int(attempts), 1) - 1
    bounds = (min(CONNECT_TIMEOUT, float(timeout)), float(timeout))
    # Searches are POSTs that change nothing: retrying them is safe.
    retry = retry_policy(retries + 1, any_method=True)
    try:
        client = pystac_client.Client.open(
            root, stac_io=StacApiIO(timeout=bounds, max_retries=retry), timeout=bounds
        )
    except Exception as err:  # pystac-client, requests, json and pystac raise many types
        raise _access_error(root, err, retries + 1, bounds[1]) from err
    if not client.conforms_to("ITEM_SEARCH"):
        raise DataAccessError(
            f"the STAC catalog at {root!r} offers no item search (its conformsTo lacks "
            "STAC API item-search): it is a static catalog or not a STAC API. Pass catalog= a "
            f"STAC API root such as {DEFAULT_STAC_URL}, or a GeoJSON catalog file "
            "(catalog_v02.json)."
        )
    try:
        found = client.get_collection(collection)
    except Exception as err:
        raise _access_error(root, err, retries + 1, bounds[1]) from err
    if found is None:
        try:
            names = sorted(c.id for c in client.get_collections())
        except Exception:  # the listing only improves the message
            names = []
        raise DataAccessError(
            f"the STAC API at {root!r} has no collection {collection!r}"
            + (f"; it has {names}" if names else "")
            + f". ITS_LIVE's datacubes are the collection {DEFAULT_COLLECTION!r} of "
            f"{DEFAULT_STAC_URL}: check catalog= (and collection=)."
        )
    return client


def search_items(
    client: Any,
    collection: str = DEFAULT_COLLECTION,
    *,
    intersects: Mapping[str, Any] | None = None,
    limit: int = PAGE_LIMIT,
    root: str | None = None,
    attempts: int = DOWNLOAD_ATTEMPTS,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> list[dict[str, Any]]:
    """Every item of ``collection`` meeting ``intersects``, all pages followed, as dicts.

    Parameters
    ----------
    client : pystac_client.Client
        An open client (:func:`open_api`).
    collection : str, optional
        The collection to search (default ``"itslive-cubes"``).
    intersects : mapping, optional
        A lon/lat GeoJSON geometry; default: the whole collection.
    limit : int, optional
        Items per page (the client asks for the next page until there is none).
    root : str, optional
        The API root, for error messages (default: the client's own URL).
    attempts, timeout : optional
        The bounds the client was opened with, for error messages.

    Returns
    -------
    list of dict
        The STAC items (GeoJSON features) as the API returned them.

    Raises
    ------
    DataAccessError
        The API stopped answering or answered something that is not a STAC item collection.
    """
    root = root or client.get_self_href() or "<STAC API>"
    try:
        search = client.search(collections=[collection], intersects=intersects, limit=int(limit))
        items = list(search.items_as_dicts())
    except Exception as err:  # requests, pystac-client and json errors alike
        raise _access_error(root, err, attempts, timeout) from err
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get("id"), str):
            shown = json.dumps(item, default=str)[:200]
            raise DataAccessError(
                f"the STAC API at {root!r} returned a search result that is not a STAC item "
                f"({shown}); check that catalog= is a STAC API serving {collection!r}"
            )
    return items
