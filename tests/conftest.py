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


def make_public_bucket(endpoint: str, bucket: str):
    """Create ``bucket`` with a public-read policy (GetObject, HeadObject, ListBucket)."""
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-west-2")
    client.create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "us-west-2"}
    )
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
