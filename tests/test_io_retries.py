"""Transient storage failures are retried: a freeze that ends before the last attempt is survived.

Real parts only: moto's S3 server on 127.0.0.1 behind the TCP relay of ``conftest.py``, frozen
(it accepts and reads requests but never answers) and thawed again while a request is waiting
for its answer. botocore's bounded ``standard`` retries (3 attempts,
:data:`xr_itslive.io.urls.DEFAULT_S3_CONFIG`) then find the endpoint answering: the read or the
write succeeds, with the right bytes, after one timeout. The frozen-for-good case (an error in
bounded time) is in ``test_io_faults.py`` (reads) and ``test_workflows_store.py`` (writes).
"""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pytest
import xarray as xr
from conftest import make_bucket

import xr_itslive
from xr_itslive.io.cube import open_store
from xr_itslive.io.urls import S3_TIMEOUT_ENV
from xr_itslive.synthetic import synthetic_cube
from xr_itslive.workflows.store import store_status, write_resumable

#: The per-attempt timeout (XR_ITSLIVE_S3_TIMEOUT): the frozen attempt fails after 2 s.
QUICK_TIMEOUT = "2"
BUCKET = "xr-itslive-retry-tests"


def thaw_after_first_frozen_request(relay) -> threading.Thread:
    """Thaw ``relay`` as soon as one request met it frozen: that attempt times out, the next
    one (botocore's retry, well before its last attempt) is answered."""

    def watch() -> None:
        deadline = time.monotonic() + 60
        while relay.requests_frozen < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        relay.thaw()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.timeout(120)
def test_a_read_retried_after_a_freeze_succeeds(s3_small_cube, small_zarr_cube, s3_relay,
                                                monkeypatch):  # fmt: skip
    monkeypatch.setenv(S3_TIMEOUT_ENV, QUICK_TIMEOUT)
    remote = open_store(s3_small_cube, {"endpoint_url": s3_relay.url}, chunks={})
    expected = open_store(str(small_zarr_cube), None, chunks={})["vx"][:1].values
    s3_relay.freeze()
    watcher = thaw_after_first_frozen_request(s3_relay)
    start = time.monotonic()
    values = remote["vx"][:1].compute().values  # one chunk: vx/0.0.0
    elapsed = time.monotonic() - start
    watcher.join(timeout=5)
    # one attempt met the freeze and waited out its timeout; a retry read the chunk
    assert s3_relay.requests_frozen == 1
    assert elapsed >= float(QUICK_TIMEOUT)
    np.testing.assert_array_equal(values, expected)


@pytest.fixture(scope="module")
def s3_bucket(s3_server):
    make_bucket(s3_server, BUCKET)
    return BUCKET


@pytest.mark.timeout(120)
def test_a_write_retried_after_a_freeze_succeeds(s3_bucket, s3_relay, monkeypatch):
    from xr_itslive.workflows import store as store_module

    monkeypatch.setenv(S3_TIMEOUT_ENV, QUICK_TIMEOUT)
    cube = synthetic_cube(n_pairs=300, ny=4, nx=4, seed=3, chunks={"y": 2, "x": 2})
    result = xr_itslive.invert(cube, step=30.0)
    url = f"s3://{s3_bucket}/{uuid.uuid4().hex}/retried.zarr"
    options = {"endpoint_url": s3_relay.url}
    real_check = store_module._check_lock
    checks = []

    def check_then_freeze(*args):
        # The second chunk's data write is the first request to meet the frozen endpoint.
        real_check(*args)
        checks.append(args[-1])
        if len(checks) == 2:
            s3_relay.freeze()
            thaw_after_first_frozen_request(s3_relay)

    monkeypatch.setattr(store_module, "_check_lock", check_then_freeze)
    summary = write_resumable(
        result, url, storage_options=options, progress=False, scheduler="synchronous"
    )
    assert summary.complete and summary.n_written == 4
    assert s3_relay.requests_frozen == 1  # the one attempt that met the freeze, retried
    assert store_status(url, options).complete
    xr.testing.assert_identical(
        xr.open_zarr(url, storage_options=options).load().drop_attrs(),
        result.compute().drop_attrs(),
    )
