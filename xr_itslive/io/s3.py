"""The S3 filesystem cubes are read through: s3fs with its own retry loop bounded.

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
    (through fsspec's JSON and pickle forms) retry the same way.

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
