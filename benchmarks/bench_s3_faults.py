"""How long a read from a frozen S3 endpoint takes to fail, and how many attempts it makes.

A real S3 endpoint (moto, on 127.0.0.1) holds the bundled 3×3 cube subset as zarr; a TCP relay
in front of it is frozen (it accepts connections and reads requests but never answers), then
one chunk is read, and separately a cube is opened through a relay frozen from the start. For
each ``XR_ITSLIVE_S3_TIMEOUT`` setting it prints the seconds until the DataAccessError, the
requests the relay swallowed (attempts), and the bound :func:`s3_request_budget` promises.

    python benchmarks/bench_s3_faults.py                 # the default setting, then 5 s
    python benchmarks/bench_s3_faults.py --timeouts 1    # quick (what the test suite runs)
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))  # the relay and the moto helpers of the tests

from conftest import (  # noqa: E402
    FreezableRelay,
    _free_port,
    make_public_bucket,
    upload_tree,
    write_small_zarr_cube,
)

from xr_itslive.errors import DataAccessError  # noqa: E402
from xr_itslive.io.cube import open_store  # noqa: E402
from xr_itslive.io.urls import S3_TIMEOUT_ENV, s3_request_budget  # noqa: E402

BUCKET, KEY = "fault-bench", "N30E090_3x3_subset.zarr"


def _time_to_error(action) -> tuple[float, str]:
    start = time.monotonic()
    try:
        action()
    except DataAccessError as err:
        return time.monotonic() - start, f"{type(err.__cause__).__name__}: {str(err)[:90]}"
    raise RuntimeError("the frozen endpoint was read without an error")


def measure(endpoint: str, setting: str | None) -> dict:
    """Time to DataAccessError for one chunk read and for one open, with ``setting``.

    Parameters
    ----------
    endpoint : str
        The moto server's URL.
    setting : str or None
        ``XR_ITSLIVE_S3_TIMEOUT`` (None: unset, the default).

    Returns
    -------
    dict
    """
    if setting is None:
        os.environ.pop(S3_TIMEOUT_ENV, None)
    else:
        os.environ[S3_TIMEOUT_ENV] = setting
    url = f"s3://{BUCKET}/{KEY}"
    row = {"setting": setting or "default", "budget_s": s3_request_budget()}

    relay = FreezableRelay(endpoint)
    try:
        ds = open_store(url, {"endpoint_url": relay.url}, chunks={})
        relay.freeze()
        row["read_s"], row["read_error"] = _time_to_error(lambda: ds["vx"][:1].compute())
        row["read_attempts"] = relay.requests_frozen
    finally:
        relay.close()

    relay = FreezableRelay(endpoint)
    relay.freeze()
    try:
        row["open_s"], row["open_error"] = _time_to_error(
            lambda: open_store(url, {"endpoint_url": relay.url}, chunks={})
        )
        row["open_attempts"] = relay.requests_frozen
    finally:
        relay.close()
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the measurements and print one line per setting.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (``--timeouts default 5``).

    Returns
    -------
    list of dict
        One row per setting.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--timeouts",
        nargs="+",
        default=["default", "5"],
        help="XR_ITSLIVE_S3_TIMEOUT settings to measure ('default' leaves it unset)",
    )
    args = parser.parse_args(argv)

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's access log, one line a request
    saved = os.environ.get(S3_TIMEOUT_ENV)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cube = write_small_zarr_cube(Path(tmp) / KEY)
            upload_tree(make_public_bucket(endpoint, BUCKET), cube, BUCKET, KEY)
        print(f"python {platform.python_version()}, {os.cpu_count()} CPUs; frozen relay -> moto")
        print(
            f"{'setting':>8} {'budget s':>9} {'read s':>7} {'attempts':>8} {'open s':>7} "
            f"{'attempts':>8}  error"
        )
        for setting in args.timeouts:
            row = measure(endpoint, None if setting == "default" else setting)
            rows.append(row)
            print(
                f"{row['setting']:>8} {row['budget_s']:>9.1f} {row['read_s']:>7.1f} "
                f"{row['read_attempts']:>8} {row['open_s']:>7.1f} {row['open_attempts']:>8}  "
                f"{row['read_error']}",
                flush=True,
            )
    finally:
        server.stop()
        if saved is None:
            os.environ.pop(S3_TIMEOUT_ENV, None)
        else:
            os.environ[S3_TIMEOUT_ENV] = saved
    return rows


if __name__ == "__main__":
    main()
