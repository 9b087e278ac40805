"""A whole ITS_LIVE-shaped cube read through S3: wall time, requests, bytes, concurrency.

The cube (``benchmarks/make_cube.py``'s, or ``--cube``) is uploaded to a moto S3 server
started in this process on 127.0.0.1 (:class:`moto.server.ThreadedMotoServer`, its own app
wrapped in a counting WSGI middleware), in a public-read bucket, as ITS_LIVE's is. Clients are
the real ones (``xr_itslive.open_cube`` → s3fs → aiobotocore, anonymous, with
``AWS_ENDPOINT_URL`` pointing at the server); the middleware sees every HTTP request: its
method, key, status, the bytes of its answer and how many were in flight at once. Then:

1. **read and decode** vx, vy (and their errors) of the cube on the local disk (the baseline)
   and from ``s3://.../cube.zarr`` with ``open_cube``, dask's threads: with s3fs's defaults;
   with ``max_concurrency=1`` (which stops the HEAD s3fs sends before every whole-object GET,
   see below); and with larger tasks (``--task-chunks``: N×N pixels, several stored chunks per
   task);
2. **invert** with the CLI, ``xr-itslive invert s3://... --out STORE --weights error --robust
   tukey --step 12`` in a subprocess (threads), with s3fs's defaults and with
   ``FSSPEC_S3='{"max_concurrency": 1}'`` (fsspec's configuration, read by every s3fs
   instance: the CLI has no flag for the input's storage options). The two stores are
   compared (``xarray.testing.assert_identical``), and with one written from the local cube
   by ``bench_whole_cube.py --work`` (``--reference``).

For each: wall time, GET and HEAD requests (all, and on vx/vy chunks), requests per stored
vx/vy chunk, bytes answered, the most requests in flight at once, client connections, and
this process's CPU time (moto's share while the CLI runs). It also prints the concurrency
settings in effect (s3fs ``max_concurrency``, ``default_block_size``, botocore's
``max_pool_connections``, fsspec's gather batch size, zarr's ``async.concurrency``, dask's
threads).

Why a HEAD per chunk: s3fs's ``_cat_file`` (what zarr's ``FsspecStore.get`` calls for a whole
chunk) asks for the object's size first (a HEAD) whenever ``max_concurrency > 1`` (the
default is 10), to decide whether to split the download into concurrent range requests of
``default_block_size`` (50 MiB). ITS_LIVE chunks are ~100 KB, never split: the HEAD only costs
a round trip. ``--latency-ms`` adds a fixed delay to every answer (as a distant endpoint has)
so the cost shows in wall time, not only in request counts.

Run::

    python benchmarks/bench_whole_cube_s3.py --cube /tmp/c16.zarr    # the 1/16 cube
    python benchmarks/bench_whole_cube_s3.py --quick                 # tiny (used by the tests)

A ``--cube`` given is only read (uploaded from). ``--json FILE`` writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # run from a checkout
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(REPO / "tests"))  # conftest's public-bucket helpers

from bench_whole_cube import TreePeak, read_and_decode, run_cli  # noqa: E402

GiB, MiB = 2**30, 2**20
BUCKET, PREFIX = "its-live-bench", "cube.zarr"
URL = f"s3://{BUCKET}/{PREFIX}"
NO_HEAD = {"max_concurrency": 1}
_CHUNK_KEY = re.compile(r"^(vx|vy)/\d+\.\d+\.\d+$")


class CountingMiddleware:
    """Counts every request a WSGI app answers: method, key, status, bytes, overlap."""

    def __init__(self, app, latency: float = 0.0) -> None:
        self.app = app
        self.latency = latency
        self.recording = False
        self._lock = threading.Lock()
        self._records: list[tuple] = []
        self._in_flight = 0
        self._max_in_flight = 0

    def take(self) -> dict:
        """What was recorded since the last call (and start again)."""
        with self._lock:
            records, self._records = self._records, []
            peak, self._max_in_flight = self._max_in_flight, self._in_flight
        return {"records": records, "max_in_flight": peak}

    def __call__(self, environ, start_response):
        if not self.recording:
            return self.app(environ, start_response)
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        if self.latency:
            time.sleep(self.latency)
        status = []

        def recording_start(code, headers, *args):
            status.append(int(code.split()[0]))
            return start_response(code, headers, *args)

        try:
            body = self.app(environ, recording_start)
        except BaseException:
            self._finish(environ, 500, 0)
            raise
        return self._count(environ, body, status)

    def _count(self, environ, body, status):
        size = 0
        try:
            for part in body:
                size += len(part)
                yield part
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
            self._finish(environ, status[0] if status else 0, size)

    def _finish(self, environ, code: int, size: int) -> None:
        path = environ.get("PATH_INFO", "")
        key = path.split(f"/{BUCKET}/{PREFIX}/", 1)[1] if f"/{BUCKET}/{PREFIX}/" in path else path
        if environ.get("QUERY_STRING"):
            key += "?" + environ["QUERY_STRING"].split("&", 1)[0]
        record = (environ["REQUEST_METHOD"], key, code, size, environ.get("REMOTE_PORT"))
        with self._lock:
            self._in_flight -= 1
            self._records.append(record)


def start_counting_server(latency: float = 0.0):
    """A ThreadedMotoServer on 127.0.0.1 whose app is wrapped in :class:`CountingMiddleware`."""
    from conftest import _free_port
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    counter = CountingMiddleware(DomainDispatcherApplication(create_backend_app), latency)

    class CountingMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:  # moto's own, with the app wrapped
            self._server = make_server(self._ip_address, self._port, counter, True,
                                       request_handler=MotoRequestHandler)  # fmt: skip
            self._server_ready_event.set()
            self._server.serve_forever()

    server = CountingMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, counter, f"http://{host}:{port}"


def upload(cube: Path, endpoint: str) -> tuple[int, int, float]:
    """The cube's files to s3://BUCKET/PREFIX/ (public read); (files, bytes, seconds)."""
    from conftest import make_public_bucket

    started = time.perf_counter()
    client = make_public_bucket(endpoint, BUCKET)
    files = [p for p in sorted(cube.rglob("*")) if p.is_file()]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda p: client.upload_file(
            str(p), BUCKET, f"{PREFIX}/{p.relative_to(cube).as_posix()}"), files))  # fmt: skip
    return len(files), sum(p.stat().st_size for p in files), time.perf_counter() - started


def stored_chunks(cube: Path) -> tuple[int, int]:
    """Number and bytes of the stored vx, vy chunks."""
    files = [p for name in ("vx", "vy") for p in (cube / name).iterdir()
             if not p.name.startswith(".")]  # fmt: skip
    return len(files), sum(p.stat().st_size for p in files)


def kind(key: str) -> str:
    """What a request asked for: a vx/vy chunk, metadata, a 1-D (per-pair, coordinate) chunk."""
    if _CHUNK_KEY.match(key):
        return "vx/vy chunk"
    name = key.rsplit("/", 1)[-1]
    if name.startswith("."):
        return "metadata"
    return "1-D chunk" if re.fullmatch(r"\d+(\.\d+)*", name) else "other"


def summarise(taken: dict, seconds: float, n_chunks: int, cpu: float) -> dict:
    records = taken["records"]
    by_kind = Counter(f"{kind(r[1])} {r[0]}" for r in records)
    methods = Counter(r[0] for r in records)
    on_chunks = Counter(r[0] for r in records if _CHUNK_KEY.match(r[1]))
    bad = [r for r in records if r[2] >= 400]
    gets_per_key = Counter(r[1] for r in records if r[0] == "GET" and _CHUNK_KEY.match(r[1]))
    return {
        "seconds": seconds,
        "requests": len(records),
        "GET": methods.get("GET", 0),
        "HEAD": methods.get("HEAD", 0),
        "other": len(records) - methods.get("GET", 0) - methods.get("HEAD", 0),
        "chunk_GET": on_chunks.get("GET", 0),
        "chunk_HEAD": on_chunks.get("HEAD", 0),
        "chunk_keys_read": len(gets_per_key),
        "most_GETs_of_one_chunk": max(gets_per_key.values(), default=0),
        "GET_per_chunk": on_chunks.get("GET", 0) / n_chunks,
        "HEAD_per_chunk": on_chunks.get("HEAD", 0) / n_chunks,
        "bytes": sum(r[3] for r in records),
        "chunk_bytes": sum(r[3] for r in records if _CHUNK_KEY.match(r[1])),
        "errors": len(bad),
        "error_examples": [f"{r[0]} {r[1]} {r[2]}" for r in bad[:3]],
        "max_in_flight": taken["max_in_flight"],
        "connections": len({r[4] for r in records}),  # werkzeug closes each one
        "by_kind": dict(sorted(by_kind.items())),
        "server_process_cpu": cpu,
    }


def line(label: str, s: dict, cpu: str) -> str:
    rate = s["bytes"] / MiB / s["seconds"] if s["seconds"] else float("nan")
    text = (
        f"{label}: {s['seconds']:.1f} s; {s['requests']:,} requests ({s['GET']:,} GET, "
        f"{s['HEAD']:,} HEAD, {s['other']} other); on vx/vy chunks {s['chunk_GET']:,} GET + "
        f"{s['chunk_HEAD']:,} HEAD = {s['GET_per_chunk']:.2f} GET + {s['HEAD_per_chunk']:.2f} "
        f"HEAD per stored chunk; {s['bytes'] / MiB:,.1f} MiB answered ({rate:,.1f} MiB/s); "
        f"at most {s['max_in_flight']} requests in flight; "
        f"{cpu} {s['server_process_cpu']:.1f} CPU s"
    )
    others = ", ".join(f"{k} {n}" for k, n in s["by_kind"].items() if "vx/vy" not in k)
    text += f" (the other requests: {others})"
    if s["errors"]:
        text += f"; {s['errors']} answers >= 400 (e.g. {', '.join(s['error_examples'])})"
    return text


def concurrency_settings(storage_options: dict | None) -> dict:
    """The settings that bound how many requests run at once, as the real objects hold them."""
    import botocore.config
    import dask
    import fsspec.asyn
    import zarr

    from xr_itslive.io.s3 import s3_filesystem

    fs = s3_filesystem(storage_options)
    config = botocore.config.Config(**fs.config_kwargs)
    return {
        "s3fs.max_concurrency": fs.max_concurrency,
        "s3fs.default_block_size": fs.default_block_size,
        "s3fs.retries (own loop)": fs.retries,
        "botocore.max_pool_connections": config.max_pool_connections,
        "botocore retries": config.retries,
        "botocore connect/read timeout": (config.connect_timeout, config.read_timeout),
        "fsspec gather batch size": fsspec.asyn._get_batch_size(),
        "zarr async.concurrency": zarr.config.get("async.concurrency"),
        "dask threads": dask.config.get("num_workers", None) or os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cube", type=Path, default=None, help="the cube to upload (read only)")
    parser.add_argument("--task-chunks", type=int, nargs="*", default=[20],
                        help="also read with tasks of N x N pixels (default 20)")  # fmt: skip
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay every S3 answer by this much (0)")  # fmt: skip
    parser.add_argument("--no-cli", action="store_true", help="only read and decode")
    parser.add_argument("--reference", type=Path, default=None,
                        help="a store of the command on the local cube, to compare")  # fmt: skip
    parser.add_argument("--work", type=Path, default=None, help="keep the stores here")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument("--quick", action="store_true", help="a tiny run (for the tests)")
    args = parser.parse_args(argv)

    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="whole_cube_s3_"))
    cube = args.cube
    # The client side: anonymous reads of the public bucket, endpoint from the environment (as
    # the tests set it); the dummy keys are for the upload only.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-west-2")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server, counter, endpoint = start_counting_server(args.latency_ms / 1000)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    figures: dict = {"cores": os.cpu_count(), "latency_ms": args.latency_ms, "runs": {}}
    try:
        if cube is None:
            from make_cube import make_cube

            cube = work / "cube.zarr"
            ny, pairs = (20, 2_500) if args.quick else (208, 25_000)
            made = make_cube(cube, ny, ny, pairs, chunk_pairs=2_000 if args.quick else 20_000)
            print(f"made the cube in {made['seconds']:.0f} s: {made['bytes'] / GiB:.2f} GiB")
        import xarray as xr

        sizes = xr.open_zarr(cube, consolidated=True).sizes
        n_chunks, chunk_bytes = stored_chunks(cube)
        files, nbytes, up_s = upload(cube, endpoint)
        figures.update(cube=str(cube), sizes=dict(sizes), stored_chunks=n_chunks,
                       stored_chunk_bytes=chunk_bytes)  # fmt: skip
        print(
            f"machine: {os.cpu_count()} cores; cube {sizes['mid_date']:,} pairs x "
            f"{sizes['y']} x {sizes['x']}; {n_chunks:,} stored vx/vy chunks, "
            f"{chunk_bytes / MiB:,.1f} MiB (mean {chunk_bytes / n_chunks / 1024:,.0f} KiB)"
        )
        print(f"uploaded {files:,} files ({nbytes / MiB:,.1f} MiB) to moto at {endpoint} in "
              f"{up_s:.1f} s; every answer delayed {args.latency_ms:g} ms")  # fmt: skip
        for label, options in (("defaults", None), ("max_concurrency=1", NO_HEAD)):
            settings = concurrency_settings(options)
            figures[f"settings ({label})"] = settings
            print(f"s3fs settings in effect ({label}): "
                  + "; ".join(f"{k} {v}" for k, v in settings.items()))  # fmt: skip

        seconds, n_valid, _ = read_and_decode(cube)
        figures["runs"]["local read + decode"] = {"seconds": seconds}
        print(f"read + decode from the local disk: {seconds:.1f} s ({n_valid:,} valid values)")

        reads = [("defaults", None, None), ("max_concurrency=1", NO_HEAD, None)]
        reads += [(f"max_concurrency=1, {n}x{n}-pixel tasks", NO_HEAD,
                   {"mid_date": -1, "y": n, "x": n}) for n in args.task_chunks]  # fmt: skip
        for label, options, chunks in reads:
            counter.recording = True
            counter.take()
            cpu0 = time.process_time()
            with TreePeak(os.getpid()) as peak:
                seconds, found, _ = read_and_decode(URL, storage_options=options, chunks=chunks)
            counter.recording = False
            summary = summarise(counter.take(), seconds, n_chunks, time.process_time() - cpu0)
            summary["peak_rss"] = peak.peak_total
            summary["same_values"] = found == n_valid
            figures["runs"][f"S3 read + decode ({label})"] = summary
            print(
                line(f"S3 read + decode ({label})", summary, "client and moto")
                + ("" if found == n_valid else "; VALID COUNT DIFFERS FROM THE LOCAL READ")
            )

        stores = {}
        if not args.no_cli:
            no_head = {"FSSPEC_S3": json.dumps(NO_HEAD)}
            for label, env in (("defaults", {}), ("max_concurrency=1", no_head)):
                store = work / f"out_s3_{'default' if not env else 'no_head'}.zarr"
                shutil.rmtree(store, ignore_errors=True)
                counter.recording = True
                counter.take()
                cpu0 = time.process_time()
                seconds, peak, output, _ = run_cli(URL, store, [], env=env)
                counter.recording = False
                summary = summarise(counter.take(), seconds, n_chunks, time.process_time() - cpu0)
                summary |= {"peak_rss_cli": peak.peak_total, "output": output.splitlines()[-1]}
                stores[label] = store
                name = f"CLI invert from S3, threads ({label})"
                figures["runs"][name] = summary
                print(
                    line(name, summary, "moto") + f"; CLI peak RSS {peak.peak_total / GiB:.2f} GiB"
                )
            from bench_whole_cube import compare_stores

            verdict = compare_stores(stores["defaults"], stores["max_concurrency=1"])
            figures["compare defaults / max_concurrency=1"] = verdict
            print(f"compare the two S3 runs: {verdict}")
            if args.reference is not None:
                verdict = compare_stores(args.reference, stores["defaults"])
                figures["compare with reference"] = verdict
                print(f"compare the S3 run with {args.reference}: {verdict}")
    finally:
        counter.recording = False
        server.stop()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1, default=str))
    return figures


if __name__ == "__main__":
    main()
