"""The S3 filesystem cubes are read (and output stores written) through: s3fs with its own
retry loop bounded.

Imported lazily (it imports s3fs and botocore), when an S3 URL is opened.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import s3fs

from .urls import S3FS_RETRIES, s3_storage_options


class BoundedS3FileSystem(s3fs.S3FileSystem):
    """:class:`s3fs.S3FileSystem` whose own retry loop tries once by default.

    s3fs retries timeouts 5 times around botocore's attempts, and twice nested when reading a
    file, so a frozen endpoint was asked 25 × 3 times before an error came back (15+ minutes
    with default timeouts). botocore's bounded ``standard`` retries
    (:data:`~xr_itslive.io.urls.DEFAULT_S3_CONFIG`) remain. ``retries`` is kept in the
    instance's ``storage_options``, so copies made for zarr's async store and for dask workers
    (through fsspec's JSON and pickle forms) retry the same way. Uploads go without
    ``Expect: 100-continue``, whose wait aiohttp does not time out (``_no_expect_continue``).

    Parameters
    ----------
    *args, **kwargs
        As for :class:`s3fs.S3FileSystem`.
    retries : int, optional
        Tries of s3fs's own loop (default 1, s3fs's is 5).
    """

    retries = S3FS_RETRIES

    def __init__(self, *args: Any, retries: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if retries is not None:
            self.retries = max(int(retries), 1)

    async def get_s3(self, bucket: str | None = None) -> Any:
        """s3fs's client, without ``Expect: 100-continue`` on uploads (see
        ``_no_expect_continue``)."""
        client = await super().get_s3(bucket)
        client.meta.events.register_last(
            "before-call.s3", _no_expect_continue, unique_id=_NO_EXPECT_CONTINUE
        )
        return client


_NO_EXPECT_CONTINUE = "xr-itslive-no-expect-continue"


def _no_expect_continue(params: dict[str, Any], **kwargs: Any) -> None:
    """Drop the ``Expect: 100-continue`` header botocore puts on every upload of a body.

    With it aiohttp sends the headers, then waits for the endpoint's "100 Continue" before the
    body, and botocore's ``read_timeout`` does not cover that wait: an endpoint that accepts
    connections but never answers hung every write (a chunk, a marker, the lock) for good
    (a PUT still waiting after 3 minutes with ``read_timeout=2``). Without it the body goes at
    once and the bounded read timeout applies (3 attempts, then the error); the header only
    saves sending a body the endpoint would refuse, little for chunk-sized objects.
    """
    params.get("headers", {}).pop("Expect", None)


def s3_filesystem(storage_options: Mapping[str, Any] | None = None) -> BoundedS3FileSystem:
    """A filesystem for anonymous S3 reads with bounded timeouts and retries.

    Parameters
    ----------
    storage_options : mapping, optional
        s3fs options over :func:`~xr_itslive.io.urls.s3_storage_options`'s defaults; also
        ``retries`` (tries of s3fs's own loop, default 1).

    Returns
    -------
    BoundedS3FileSystem
    """
    return BoundedS3FileSystem(**s3_storage_options(storage_options))


def s3_output_filesystem(
    storage_options: Mapping[str, Any] | None = None, *, asynchronous: bool = False
) -> BoundedS3FileSystem:
    """A filesystem for writing an output store on S3, with the readers' bounded timeouts and
    retries.

    The same options as :func:`s3_filesystem` but signed: credentials come from the
    environment (or ``storage_options``) unless ``anon=True`` is given, since a store is
    written into the user's own bucket, not read from the public one.

    Parameters
    ----------
    storage_options : mapping, optional
        s3fs options over :func:`~xr_itslive.io.urls.s3_storage_options`'s defaults
        (``anon`` defaults to False here); also ``retries`` (tries of s3fs's own loop).
    asynchronous : bool, optional
        An instance for async callers (zarr's ``FsspecStore`` needs one).

    Returns
    -------
    BoundedS3FileSystem
    """
    options = s3_storage_options({"anon": False, **dict(storage_options or {})})
    return BoundedS3FileSystem(asynchronous=asynchronous, **options)
