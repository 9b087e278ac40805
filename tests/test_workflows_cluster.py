"""invert and the resumable writer on threads, a LocalCluster, a remote scheduler and Gateway.

Every scheduler, worker and gateway process is started here on 127.0.0.1 and killed in the
fixtures' finalizers (whole process groups), with timeouts everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
import xarray as xr
from conftest import REPO, _free_port

import xr_itslive
from xr_itslive.errors import ClusterConnectionError, InvalidParameterError
from xr_itslive.synthetic import synthetic_cube
from xr_itslive.workflows.cluster import get_client, scheduler_context
from xr_itslive.workflows.invert_to_zarr import invert_to_zarr
from xr_itslive.workflows.store import MARKER_GROUP, store_status

distributed = pytest.importorskip("distributed")

DASK = str(Path(sys.executable).with_name("dask"))
TESTS = str(Path(__file__).resolve().parent)
STEP = 30.0


def cube():
    return synthetic_cube(n_pairs=300, ny=4, nx=8, seed=5, chunks={"y": 2, "x": 2})


def threaded_result():
    return xr_itslive.invert(cube(), step=STEP).compute(scheduler="threads")


def worker_env() -> dict[str, str]:
    # workers unpickle xr_itslive (not installed here) and this test module's helpers
    path = os.pathsep.join(p for p in (str(REPO), TESTS, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, DASK_DISTRIBUTED__WORKER__DAEMON="False")


@pytest.fixture
def spawn(tmp_path):
    """Start a command in its own process group; every group is killed at teardown."""
    procs: list[subprocess.Popen] = []

    def start(args: list[str], name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            args, env=worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        proc.log = log
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            with _suppress():
                os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with _suppress():
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.log.close()


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        return kind is not None and issubclass(kind, ProcessLookupError | PermissionError)


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture
def dask_cluster(spawn):
    """`dask scheduler` and two `dask worker` processes (1 thread each) on 127.0.0.1."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    spawn(
        [DASK, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        "scheduler",
    )
    wait_for_port(port)
    workers = [
        spawn(
            [
                DASK,
                "worker",
                address,
                "--nthreads",
                "1",
                "--no-dashboard",
                "--no-nanny",
                "--host",
                "127.0.0.1",
                "--name",
                f"w{i}",
            ],
            f"worker{i}",
        )  # fmt: skip
        for i in range(2)
    ]
    client = distributed.Client(address, timeout=20)
    try:
        client.wait_for_workers(2, timeout=30)
        yield types.SimpleNamespace(address=address, workers=workers, client=client)
    finally:
        try:
            client.shutdown()  # scheduler and workers exit; `spawn` kills what is left
        except Exception:
            client.close(timeout=10)


def marker_pids(store) -> set[int]:
    import json

    folder = Path(store) / MARKER_GROUP / "done"
    return {json.loads(p.read_text())["pid"] for p in folder.glob("*.json")}


def test_remote_scheduler_gives_the_threaded_result(dask_cluster, tmp_path):
    expected = threaded_result()
    assert get_client(dask_cluster.client) is dask_cluster.client
    with scheduler_context(dask_cluster.address) as client:
        assert client is not dask_cluster.client
        assert distributed.default_client() is client
        on_cluster = xr_itslive.invert(cube(), step=STEP).compute()
    assert client.status == "closed"  # the context closes the Client it opened
    xr.testing.assert_identical(on_cluster, expected)

    store = tmp_path / "remote.zarr"
    summary = invert_to_zarr(
        cube(), store, step=STEP, scheduler=dask_cluster.address, progress=False
    )
    assert summary.n_written == 8
    xr.testing.assert_identical(xr.open_zarr(store).load().drop_attrs(), expected.drop_attrs())
    worker_pids = {proc.pid for proc in dask_cluster.workers}
    assert marker_pids(store) <= worker_pids and os.getpid() not in marker_pids(store)


def _slow_down_solver(pause: float) -> None:
    """Run on the workers: make every chunk take ``pause`` seconds longer."""
    import importlib

    inversion = importlib.import_module("xr_itslive.workflows.invert")
    original = getattr(inversion, "_unhurried_solve_block", inversion.solve_block)

    def slow(*args, **kwargs):
        time.sleep(pause)
        return original(*args, **kwargs)

    inversion._unhurried_solve_block = original
    inversion.solve_block = slow


def test_killing_a_worker_mid_run_changes_nothing(dask_cluster, tmp_path):
    expected = threaded_result()
    client = dask_cluster.client
    client.run(_slow_down_solver, 0.3)
    store = tmp_path / "killed.zarr"
    victim = dask_cluster.workers[1]
    killed = threading.Event()

    def kill_when_half_way():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = store_status(store)
            if status is not None and status.n_done >= 2:
                victim.send_signal(signal.SIGKILL)
                killed.set()
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_half_way, daemon=True)
    killer.start()
    summary = invert_to_zarr(cube(), store, step=STEP, scheduler=client, progress=False)
    killer.join(timeout=10)

    assert killed.is_set() and victim.wait(timeout=10) == -signal.SIGKILL
    assert summary.complete and store_status(store).n_done == 8
    assert len(client.scheduler_info()["workers"]) == 1  # the rest ran on the survivor
    xr.testing.assert_identical(xr.open_zarr(store).load().drop_attrs(), expected.drop_attrs())


def test_local_cluster_gives_the_threaded_result(tmp_path):
    expected = threaded_result()
    with scheduler_context("local", n_workers=2, threads_per_worker=1) as client:
        cluster = client.cluster
        summary = invert_to_zarr(cube(), tmp_path / "local.zarr", step=STEP, scheduler=client)
        assert summary.n_written == 8
    assert client.status == "closed" and cluster.status.name == "closed"
    xr.testing.assert_identical(
        xr.open_zarr(tmp_path / "local.zarr").load().drop_attrs(), expected.drop_attrs()
    )


def test_get_client_choices():
    assert get_client("threads") is None and get_client("synchronous") is None
    with distributed.Client(processes=False, n_workers=1, dashboard_address=None) as client:
        assert get_client(None) is client  # a running Client is used, as dask.compute would

    class FakeGatewayCluster:
        def get_client(self):
            return "client of the cluster"

    assert get_client(FakeGatewayCluster()) == "client of the cluster"
    with pytest.raises(InvalidParameterError, match=r"scheduler='nonsense'.*'local'"):
        get_client("nonsense")
    with pytest.raises(InvalidParameterError, match=r"scheduler of type int"):
        get_client(8786)
    port = _free_port()
    with pytest.raises(ClusterConnectionError, match=rf"127.0.0.1:{port}.*dask scheduler"):
        get_client(f"tcp://127.0.0.1:{port}", timeout=1)


GATEWAY_CONFIG = """
c.DaskGateway.address = "127.0.0.1:{api_port}"
c.Proxy.address = "127.0.0.1:{proxy_port}"
c.DaskGateway.backend_class = "dask_gateway_server.backends.local.UnsafeLocalBackend"
c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"
c.LocalBackend.clusters_directory = {clusters!r}
c.ClusterConfig.scheduler_cmd = [{dask!r}, "scheduler"]
c.ClusterConfig.worker_cmd = [{dask!r}, "worker"]
c.ClusterConfig.environment = {{"PYTHONPATH": {pythonpath!r}}}
c.ClusterConfig.worker_cores = 1
c.ClusterConfig.worker_memory = "1 G"
c.ClusterConfig.idle_timeout = 120
"""


@pytest.mark.skipif(
    importlib.util.find_spec("dask_gateway_server") is None
    or importlib.util.find_spec("dask_gateway") is None,
    reason="dask-gateway-server[local] and dask-gateway are not installed",
)
def test_dask_gateway_cluster(spawn, tmp_path):
    from dask_gateway import Gateway
    from dask_gateway.auth import BasicAuth

    api_port, proxy_port = _free_port(), _free_port()
    config = tmp_path / "gateway_config.py"
    config.write_text(
        GATEWAY_CONFIG.format(
            api_port=api_port,
            proxy_port=proxy_port,
            clusters=str(tmp_path / "clusters"),
            dask=DASK,
            pythonpath=worker_env()["PYTHONPATH"],
        )
    )
    server = Path(sys.executable).with_name("dask-gateway-server")
    spawn([str(server), "-f", str(config)], "gateway")
    wait_for_port(proxy_port)
    wait_for_port(api_port)
    gateway = Gateway(f"http://127.0.0.1:{proxy_port}", auth=BasicAuth("tester", None))
    deadline = time.monotonic() + 30
    while True:  # the proxy answers 404 until it has the API's routing table
        try:
            gateway.list_clusters()
            break
        except ValueError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    cluster = gateway.new_cluster()
    client = None
    try:
        cluster.scale(1)
        client = cluster.get_client()
        client.wait_for_workers(1, timeout=30)
        store = tmp_path / "gateway.zarr"
        invert_to_zarr(cube(), store, step=STEP, scheduler=cluster, progress=False)
        expected = threaded_result()
        xr.testing.assert_identical(xr.open_zarr(store).load().drop_attrs(), expected.drop_attrs())
        worker_pids = set(client.run(os.getpid).values())
        assert marker_pids(store) <= worker_pids
    finally:
        if client is not None:
            # A Client left open stays dask's default scheduler: later tests would compute on
            # a cluster that is gone ("Requested dask.distributed scheduler but no Client").
            client.close()
        cluster.shutdown()
        gateway.close()


def test_memory_benchmark_runs(tmp_path):
    script = REPO / "benchmarks" / "bench_memory.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--workdir", str(tmp_path)],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.strip().startswith(("1x", "4x"))]
    assert len(rows) == 2, done.stdout


def test_a_cluster_object_leaves_no_default_client_behind():
    """The Client a cluster object hands out is closed: later computes use threads again."""
    import dask
    import dask.array as da

    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with scheduler_context(cluster) as client:
            assert client is not None and client.status == "running"
        assert client.status == "closed"
        with pytest.raises(ValueError):
            distributed.default_client()
        assert dask.compute(da.ones(4, chunks=2).sum())[0] == 4
