"""Shared fixtures: real data paths, a moto S3 server on 127.0.0.1, synthetic cubes."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
ITSLIVE_DATA = SHARED_DATA / "itslive"
GLACIER_CUBE = ITSLIVE_DATA / "N30E090_glacier_cube.zarr"
FIXTURE_3X3 = ITSLIVE_DATA / "N30E090_3x3_cube.zarr"

requires_shared = pytest.mark.skipif(
    not GLACIER_CUBE.exists(), reason="../shared/data (real ITS_LIVE data) not beside the checkout"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PUBLIC_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject", "s3:HeadObject", "s3:ListBucket"],
            "Resource": ["arn:aws:s3:::{bucket}", "arn:aws:s3:::{bucket}/*"],
        }
    ],
}


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 endpoint (moto) on 127.0.0.1; yields its URL with AWS_ENDPOINT_URL set."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        )
    }
    os.environ.update(
        AWS_ENDPOINT_URL=url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-west-2",
    )
    yield url
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def make_bucket(endpoint: str, bucket: str):
    """Create ``bucket`` (private) on the S3 server at ``endpoint``; returns the boto3 client."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2")
    client.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
    return client


def make_public_bucket(endpoint: str, bucket: str):
    """Create ``bucket`` with a public-read policy (GetObject, HeadObject, ListBucket)."""
    client = make_bucket(endpoint, bucket)
    policy = json.loads(json.dumps(PUBLIC_POLICY).replace("{bucket}", bucket))
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    return client


def upload_tree(client, local: Path, bucket: str, prefix: str) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            key = f"{prefix.rstrip('/')}/{path.relative_to(local).as_posix()}"
            client.upload_file(str(path), bucket, key)


@pytest.fixture(scope="session")
def s3_glacier_cube(s3_server):
    """The real glacier cube copied to s3://its-live-data/datacubes/v2-updated-october2024/...

    Only the current prefix holds it, so that the catalog's legacy ``datacubes/v2/`` URL has
    to fall back, as on the real bucket.
    """
    client = make_public_bucket(s3_server, "its-live-data")
    key = (
        "datacubes/v2-updated-october2024/N30E090/"
        "ITS_LIVE_vel_EPSG32646_G0120_X750000_Y3350000.zarr"
    )
    upload_tree(client, GLACIER_CUBE, "its-live-data", key)
    return f"s3://its-live-data/{key}"


class _ComputeForbidden:
    """A dask scheduler that raises: building a graph must not compute anything."""

    def __init__(self, max_computes: int = 0):
        self.max_computes = max_computes
        self.total_computes = 0

    def __call__(self, dsk, keys, **kwargs):
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"dask computed {self.total_computes} times, expected at most {self.max_computes}"
            )
        import dask

        return dask.get(dsk, keys, **kwargs)


def raise_if_dask_computes(max_computes: int = 0):
    """Context manager: fail if dask computes more than ``max_computes`` times."""
    import dask

    return dask.config.set(scheduler=_ComputeForbidden(max_computes))


# --- a real STAC API server (rustac serve) holding the real catalog as today's STAC items ---

STAC_COLLECTION = "itslive-cubes"
#: A second collection of items that are not usable cubes (error paths).
STAC_BROKEN_COLLECTION = "broken-cubes"
TODAY_PREFIX = "datacubes/v2-updated-october2024/"


def _stac_collection(collection_id: str, description: str) -> dict:
    return {
        "type": "Collection",
        "stac_version": "1.1.0",
        "id": collection_id,
        "description": description,
        "license": "CC-BY-4.0",
        "extent": {
            "spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
            "temporal": {"interval": [["1985-01-01T00:00:00Z", None]]},
        },
        "links": [],
    }


def stac_items_from_geojson(catalog: Path | None = None) -> list[dict]:
    """The real GeoJSON catalog's features as STAC items in today's ITS_LIVE layout.

    As the design note describes today's items: the zarr asset (role ``data``) under
    ``datacubes/v2-updated-october2024/``, the CRS as ``proj:code``, a lon/lat geometry, and no
    ``geometry_epsg``. Whether the real items carry ``proj:bbox``/``proj:geometry`` is unknown,
    so a third of the items give ``proj:bbox``, a third ``proj:geometry`` and a third neither
    (their box comes from the cube name): every way of reading the box meets the same queries.
    """
    import shapely
    from shapely.geometry import shape

    raw = json.loads(Path(catalog or ITSLIVE_DATA / "catalog_v02.json").read_text())
    items = []
    for i, feature in enumerate(raw["features"]):
        props = feature["properties"]
        href = (
            props["zarr_url"].replace("http://", "https://").replace("datacubes/v2/", TODAY_PREFIX)
        )
        name = href.rsplit("/", 1)[-1]
        properties = {
            "datetime": None,
            "start_datetime": "1984-06-01T00:00:00Z",
            "end_datetime": "2024-10-01T00:00:00Z",
            "proj:code": f"EPSG:{props['epsg']}",
            "itslive:region": props.get("FULL_NAME"),
            "itslive:rgi_code": props.get("RGI_CODE"),
        }
        if i % 3 == 1:
            properties["proj:bbox"] = list(shape(props["geometry_epsg"]).bounds)
        elif i % 3 == 2:
            properties["proj:geometry"] = props["geometry_epsg"]
        items.append(
            {
                "type": "Feature",
                "stac_version": "1.1.0",
                "stac_extensions": [
                    "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
                ],
                "id": name.removesuffix(".zarr"),
                "collection": STAC_COLLECTION,
                "geometry": feature["geometry"],
                "bbox": list(shapely.bounds(shape(feature["geometry"]))),
                "properties": properties,
                "assets": {
                    "thumbnail": {"href": href.replace(".zarr", ".png"), "roles": ["thumbnail"]},
                    "zarr": {"href": href, "type": "application/vnd+zarr", "roles": ["data"]},
                },
                "links": [],
            }
        )
    return items


def _broken_stac_items() -> list[dict]:
    """Items that are not usable cubes: one without a zarr asset, one without any box."""

    def item(item_id: str, lon: float, lat: float, assets: dict, **props) -> dict:
        ring = [[lon - 0.5, lat - 0.5], [lon + 0.5, lat - 0.5], [lon + 0.5, lat + 0.5],
                [lon - 0.5, lat + 0.5], [lon - 0.5, lat - 0.5]]  # fmt: skip
        return {
            "type": "Feature",
            "stac_version": "1.1.0",
            "id": item_id,
            "collection": STAC_BROKEN_COLLECTION,
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "bbox": [lon - 0.5, lat - 0.5, lon + 0.5, lat + 0.5],
            "properties": {"datetime": "2020-01-01T00:00:00Z", "proj:code": "EPSG:32632", **props},
            "assets": assets,
            "links": [],
        }

    return [
        item(
            "no-zarr-asset",
            10.5,
            10.5,
            {
                "preview": {"href": "https://x/p.png", "roles": ["data"]},
                "thumbnail": {"href": "https://x/t.zarr", "roles": ["thumbnail"]},
            },
        ),  # fmt: skip
        item("no-box", 20.5, 10.5, {"data": {"href": "https://x/cube.zarr", "roles": ["data"]}}),
    ]


def write_stac_files(folder: Path) -> list[Path]:
    """Collections and items (newline-delimited JSON) for ``rustac serve``, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for collection_id, items in (
        (STAC_COLLECTION, stac_items_from_geojson()),
        (STAC_BROKEN_COLLECTION, _broken_stac_items()),
    ):
        collection = folder / f"{collection_id}.json"
        collection.write_text(json.dumps(_stac_collection(collection_id, "ITS_LIVE datacubes")))
        ndjson = folder / f"{collection_id}-items.ndjson"
        ndjson.write_text("".join(json.dumps(item) + "\n" for item in items))
        out += [collection, ndjson]
    return out


def rustac_executable() -> str | None:
    """The ``rustac`` console script (the environment's own first), or None."""
    import shutil
    import sys

    beside = Path(sys.executable).with_name("rustac")
    return str(beside) if beside.exists() else shutil.which("rustac")


def start_stac_server(hrefs: list[Path], log: Path, timeout: float = 30.0):
    """Start ``rustac serve`` on a free port of 127.0.0.1; return (process, root URL).

    Waits until the landing page answers. Raises RuntimeError (with the server's log) when it
    exits or does not answer in ``timeout`` seconds, FileNotFoundError when rustac is absent.
    """
    import subprocess
    import time
    import urllib.request

    exe = rustac_executable()
    if exe is None:
        raise FileNotFoundError("rustac is not installed: pip install 'xr_itslive[test]'")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [exe, "serve", "--addr", f"127.0.0.1:{port}", *map(str, hrefs)],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    process.wait(timeout=10)
    raise RuntimeError(
        f"rustac serve did not answer at {url} (exit code {process.returncode}): "
        f"{log.read_text(errors='replace')[-2000:]}"
    )


@pytest.fixture(scope="session")
def stac_api(tmp_path_factory):
    """A real STAC API (``rustac serve``) on 127.0.0.1; yields its root URL.

    It serves the real catalog's 3,086 cubes as today's STAC items (collection
    ``itslive-cubes``, see :func:`stac_items_from_geojson`) and a collection
    ``broken-cubes`` of items that are not usable cubes. Skips only when rustac cannot start.
    """
    if not (ITSLIVE_DATA / "catalog_v02.json").exists():
        pytest.skip("../shared/data (the real ITS_LIVE catalog) not beside the checkout")
    folder = tmp_path_factory.mktemp("stac")
    hrefs = write_stac_files(folder)
    try:
        process, url = start_stac_server(hrefs, folder / "rustac.log")
    except (FileNotFoundError, PermissionError, RuntimeError) as err:
        pytest.skip(f"the STAC API server (rustac serve) cannot start here: {err}")
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except Exception:
        process.kill()
        process.wait(timeout=10)


# --- a TCP relay in front of an endpoint that can be frozen (accepts, reads, never answers) ---


class FreezableRelay:
    """A TCP relay on 127.0.0.1 in front of ``target`` (``"http://host:port"``).

    While it forwards, clients see the target. After :meth:`freeze` it behaves like a proxy
    that hangs: it still accepts connections and reads what clients send, on new and on
    already open connections, but forwards nothing and answers nothing. ``requests_frozen``
    counts the HTTP requests that arrived while frozen (each retry of a client is one), and
    ``frozen_request_times`` holds when (``time.monotonic()``).
    Threads only, so that it runs beside any event loop; :meth:`close` stops everything.
    """

    def __init__(self, target: str):
        import threading
        from urllib.parse import urlsplit

        parts = urlsplit(target)
        self._target = (parts.hostname, parts.port)
        self._frozen = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.requests_frozen = 0
        self.frozen_request_times: list[float] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        """Stop answering: keep accepting and reading, forward nothing."""
        self._frozen.set()

    def thaw(self) -> None:
        """Forward again (connections opened while frozen stay silent)."""
        self._frozen.clear()

    def close(self) -> None:
        """Stop the relay and close every connection."""
        self._closed.set()
        self._thread.join(timeout=5)
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.close()
                except OSError:
                    pass
        self._server.close()

    def _keep(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(0.1)
        with self._lock:
            self._sockets.append(sock)
        return sock

    def _accept(self) -> None:
        import threading

        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._keep(client)
            upstream = None
            if not self._frozen.is_set():
                upstream = self._keep(socket.create_connection(self._target, timeout=5))
            for src, dst in ((client, upstream), (upstream, client)):
                if src is not None:
                    threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket | None) -> None:
        import time

        while not self._closed.is_set():
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                if dst is not None and not self._frozen.is_set():
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                return
            if self._frozen.is_set() or dst is None:
                # Swallowed: the client waits for an answer that never comes.
                if data[:8].split(b" ", 1)[0] in (b"GET", b"HEAD", b"PUT", b"POST", b"DELETE"):
                    with self._lock:
                        self.requests_frozen += 1
                        self.frozen_request_times.append(time.monotonic())
                continue
            try:
                dst.sendall(data)
            except OSError:
                return


def write_small_zarr_cube(path: Path, pairs_per_chunk: int = 2000) -> Path:
    """Write the bundled real 3×3 subset (7,397 pairs) to ``path`` as a consolidated zarr v2
    store with ``pairs_per_chunk`` pairs per chunk (4 chunks per variable by default)."""
    import xarray as xr

    from xr_itslive.io.cube import demo_cube_path

    keep = ("dtype", "units", "calendar", "_FillValue", "missing_value", "scale_factor")
    with xr.open_dataset(demo_cube_path()) as ds:
        for name, var in ds.variables.items():
            var.encoding = {k: v for k, v in var.encoding.items() if k in keep}
            if "mid_date" in var.dims and name != "mid_date":
                var.encoding["chunks"] = tuple(
                    pairs_per_chunk if d == "mid_date" else ds.sizes[d] for d in var.dims
                )
        ds.to_zarr(path, mode="w", zarr_format=2, consolidated=True)
    return path


@pytest.fixture(scope="session")
def small_zarr_cube(tmp_path_factory) -> Path:
    """:func:`write_small_zarr_cube` in a session folder; copy it before damaging it."""
    folder = tmp_path_factory.mktemp("small_cube")
    return write_small_zarr_cube(folder / "N30E090_3x3_subset.zarr")


@pytest.fixture(scope="session")
def s3_small_cube(s3_server, small_zarr_cube):
    """:func:`small_zarr_cube` at s3://fault-tests/N30E090_3x3_subset.zarr (public-read)."""
    client = make_public_bucket(s3_server, "fault-tests")
    upload_tree(client, small_zarr_cube, "fault-tests", "N30E090_3x3_subset.zarr")
    return "s3://fault-tests/N30E090_3x3_subset.zarr"


@pytest.fixture
def s3_relay(s3_server):
    """A :class:`FreezableRelay` in front of the moto S3 server; closed after the test."""
    relay = FreezableRelay(s3_server)
    yield relay
    relay.close()
