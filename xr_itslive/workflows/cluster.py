"""Where the work runs: dask's threads, a ``LocalCluster``, a remote scheduler or Dask Gateway.

Nothing in xr_itslive is tied to one scheduler: :func:`xr_itslive.invert` builds a lazy graph
and the writers in :mod:`xr_itslive.workflows.store` compute it on whatever :func:`get_client`
returns. ``distributed`` is imported only when a cluster is asked for.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import ClusterConnectionError, InvalidParameterError

#: Names of dask's single-machine schedulers, passed to ``dask.compute(scheduler=...)``.
LOCAL_SCHEDULERS: tuple[str, ...] = ("threads", "synchronous", "sync", "processes")

SCHEDULER_CHOICES = (
    "None (a running distributed Client if there is one, else dask's threads), "
    f"one of {list(LOCAL_SCHEDULERS)}, 'local' (start a distributed.LocalCluster), "
    "a scheduler address such as 'tcp://10.0.0.5:8786', a distributed.Client, or a cluster "
    "object with .get_client() (dask_gateway.GatewayCluster, LocalCluster, ...)"
)


def _default_client() -> Any | None:
    """The current distributed Client, or None (without importing distributed needlessly)."""
    import sys

    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def _is_address(text: str) -> bool:
    if "://" in text:
        return True
    host, sep, port = text.rpartition(":")
    return bool(sep and host and port.isdigit())


def get_client(
    scheduler: Any = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    dashboard: bool = False,
    timeout: float = 30.0,
) -> Any | None:
    """A ``distributed.Client`` for ``scheduler``, or None for dask's local schedulers.

    Parameters
    ----------
    scheduler
        ``None``: the running Client if there is one (as ``dask.compute`` would use it),
        otherwise None (dask's default threads). ``"threads"``, ``"synchronous"`` or
        ``"processes"``: None (the caller passes the name to ``dask.compute``). ``"local"``:
        a new ``distributed.LocalCluster`` and a Client on it. An address
        (``"tcp://host:8786"`` or ``"host:8786"``): a Client connected to that scheduler. A
        ``distributed.Client``: returned as is. Any object with ``get_client()`` (a
        ``dask_gateway.GatewayCluster``, a ``LocalCluster``, ...): its client.
    n_workers, threads_per_worker
        Size of a ``"local"`` cluster (distributed's defaults when None).
    dashboard
        Start the dashboard of a ``"local"`` cluster (needs bokeh) on a free port.
    timeout
        Seconds to wait for a remote scheduler.

    Returns
    -------
    distributed.Client or None
        A Client started here for ``"local"`` or an address is the caller's to close; prefer
        :func:`scheduler_context`, which does it.

    Examples
    --------
    >>> get_client("threads") is None
    True
    """
    if scheduler is None:
        return _default_client()
    if isinstance(scheduler, str):
        name = scheduler.strip()
        if name in LOCAL_SCHEDULERS:
            return None
        if name == "local":
            return _local_client(n_workers, threads_per_worker, dashboard)
        if _is_address(name):
            return _remote_client(name, timeout)
        raise InvalidParameterError(
            f"scheduler={scheduler!r} is neither a scheduler name nor an address; "
            f"expected {SCHEDULER_CHOICES}"
        )
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        Client = ()  # noqa: N806
    if isinstance(scheduler, Client):
        return scheduler
    if callable(getattr(scheduler, "get_client", None)):
        return scheduler.get_client()
    raise InvalidParameterError(
        f"scheduler of type {type(scheduler).__name__} is not understood; expected "
        f"{SCHEDULER_CHOICES}"
    )


def _local_client(n_workers: int | None, threads_per_worker: int | None, dashboard: bool) -> Any:
    from distributed import Client, LocalCluster

    kwargs: dict[str, Any] = {"dashboard_address": ":0" if dashboard else None}
    if n_workers is not None:
        kwargs["n_workers"] = n_workers
    if threads_per_worker is not None:
        kwargs["threads_per_worker"] = threads_per_worker
    cluster = LocalCluster(**kwargs)
    client = Client(cluster)
    client._xr_itslive_owned_cluster = cluster  # closed with the client in scheduler_context
    return client


def _remote_client(address: str, timeout: float) -> Any:
    from distributed import Client

    try:
        return Client(address, timeout=timeout)
    except (OSError, TimeoutError) as err:
        raise ClusterConnectionError(
            f"could not reach a Dask scheduler at {address!r} within {timeout:g} s ({err}); "
            "check that `dask scheduler` runs there and the port is open, or pass "
            "scheduler='local' to start a cluster on this machine"
        ) from err


def close_client(client: Any) -> None:
    """Close a Client from :func:`get_client` and the LocalCluster it started, if any.

    Parameters
    ----------
    client : distributed.Client
        The client to close (one started for ``"local"`` closes its cluster too).
    """
    cluster = getattr(client, "_xr_itslive_owned_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


@contextlib.contextmanager
def scheduler_context(scheduler: Any = None, **kwargs: Any) -> Iterator[Any | None]:
    """:func:`get_client` as a context manager that closes only what it started.

    A Client passed in, a cluster passed in, and a running default Client stay open; a Client
    started for ``"local"``, an address, or handed out by a cluster object is closed.

    Parameters
    ----------
    scheduler : optional
        What :func:`get_client` accepts: None, a local scheduler name (``"threads"``...),
        ``"local"``, a scheduler address, a ``distributed.Client`` or a cluster object.
    **kwargs
        Passed to :func:`get_client` (``n_workers``, ``threads_per_worker``, ``dashboard``,
        ``timeout``).

    Yields
    ------
    distributed.Client or None
        As :func:`get_client` returns it: None means dask's local schedulers.

    Examples
    --------
    >>> with scheduler_context("threads") as client:
    ...     print(client)
    None
    """
    before = _default_client()
    client = get_client(scheduler, **kwargs)
    if isinstance(scheduler, str):
        started = client is not None  # 'local' or an address
    else:
        # A cluster object (Gateway, LocalCluster) hands out a new Client unless its Client is
        # already the default one: a new one is ours to close, or it would stay dask's default
        # scheduler after the cluster is gone.
        started = (
            client is not None
            and client is not scheduler
            and client is not before
            and callable(getattr(scheduler, "get_client", None))
        )
    try:
        yield client
    finally:
        if started:
            close_client(client)


def local_scheduler_name(scheduler: Any) -> str | None:
    """The ``dask.compute(scheduler=...)`` name for a local scheduler choice, else None.

    Parameters
    ----------
    scheduler
        A ``scheduler=`` value as :func:`get_client` takes it; only the names of
        :data:`LOCAL_SCHEDULERS` give a name back.
    """
    if isinstance(scheduler, str) and scheduler.strip() in LOCAL_SCHEDULERS:
        return scheduler.strip()
    return None
