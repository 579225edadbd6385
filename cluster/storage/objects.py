"""Object storage over the S3 API (AWS, MinIO, Ceph, R2), with boto3.

Credentials, region and retries come from the standard AWS settings of the process
that calls (environment, shared config files, web identity on Kubernetes);
``FRAMEFLEET_S3_ENDPOINT`` (an :class:`ObjectStore`'s ``endpoint``) points it at a
store other than AWS. Every call here blocks: the coordinator and the encoders run
them in threads. boto3's errors become framefleet's here, once (:func:`mapped`), with
the URL in ``s3://`` form: a presigned URL (which carries a signature) never appears in
a message.

Large files move in parts, several at a time (boto3's transfer manager: ranged GETs
down, a multipart upload up). A multipart upload becomes visible only when it is
completed, and is aborted when it fails or is cancelled, so nothing partial ever
appears at a destination.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.errors import (
    ErrorCode,
    FramefleetError,
    InputError,
    OutputError,
    TransferError,
)
from cluster.storage.urls import ObjectURL

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client

PART_BYTES = 16 * 1024 * 1024
"""Files above this move in parts of this size (boto3 grows parts for huge files)."""
TRANSFER_THREADS = 8
PRESIGN_S = 900
"""How long a presigned GET (for ffprobe) is valid."""
CONNECT_S = 10.0
READ_S = 60.0


@dataclass(frozen=True, slots=True)
class ObjectStore:
    """Which S3 API to talk to: ``endpoint`` (``None``: AWS) and ``region`` (``None``:
    the AWS settings'). The coordinator passes its own to nodes with each work order;
    credentials never travel: each process finds its own."""

    endpoint: str | None = None
    region: str | None = None

    def client(self) -> S3Client:
        return _client(self.endpoint, self.region)


@functools.cache
def _client(endpoint: str | None, region: str | None) -> S3Client:
    # Imported here: boto3 takes ~0.3 s to import; a node that never sees an s3:// URL
    # never pays it.
    import boto3
    from botocore.config import Config

    config = Config(
        signature_version="s3v4",
        connect_timeout=CONNECT_S,
        read_timeout=READ_S,
        retries={"mode": "standard", "max_attempts": 5},
        max_pool_connections=TRANSFER_THREADS * 4,
        # MinIO, Ceph and moto are reached by address: bucket in the path, not the host.
        s3={"addressing_style": "path" if endpoint else "auto"},
    )
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint, region_name=region, config=config)


@dataclass(frozen=True, slots=True)
class ObjectHead:
    """What a HEAD says of an object."""

    size: int
    etag: str
    checksum: str | None = None
    """The store's full-object checksum (``crc32:<base64>``), when it keeps one."""


def mapped(exc: BaseException, url: ObjectURL, *, writing: bool = False) -> FramefleetError:
    """A boto3/botocore error on ``url`` as framefleet's error, in one line."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    verb = "write" if writing else "read"
    if isinstance(exc, NoCredentialsError):
        return TransferError(
            f"cannot {verb} {url}: no AWS credentials on this machine; set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or a profile, or a role)",
            code=ErrorCode.STORAGE_DENIED,
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = str(error.get("Code", status))
        if code in ("NoSuchKey", "404", "NotFound") and not writing:
            return InputError(f"{url}: no such object; check the key", code=ErrorCode.INPUT_MISSING)
        if code == "NoSuchBucket":
            cls = OutputError if writing else InputError
            return cls(f"{url}: bucket {url.bucket} does not exist", code=ErrorCode.STORAGE_DENIED)
        if code in ("AccessDenied", "403", "Forbidden", "InvalidAccessKeyId",
                    "SignatureDoesNotMatch"):  # fmt: skip
            cls = OutputError if writing else InputError
            return cls(
                f"cannot {verb} {url}: access denied ({code}); check the credentials and the "
                "bucket policy",
                code=ErrorCode.STORAGE_DENIED,
            )
        return TransferError(f"cannot {verb} {url}: the store answered {code} ({status})")
    if isinstance(exc, BotoCoreError):
        return TransferError(f"cannot {verb} {url}: {exc}")
    return TransferError(f"cannot {verb} {url}: {exc}")


def head(store: ObjectStore, url: ObjectURL) -> ObjectHead | None:
    """The object's size, ETag and checksum; ``None`` when there is no such object."""
    from botocore.exceptions import ClientError

    try:
        got = store.client().head_object(Bucket=url.bucket, Key=url.key, ChecksumMode="ENABLED")
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            return None
        raise mapped(exc, url) from exc
    except Exception as exc:
        raise mapped(exc, url) from exc
    crc = got.get("ChecksumCRC32")
    return ObjectHead(
        size=int(got.get("ContentLength", 0)),
        etag=str(got.get("ETag", "")).strip('"'),
        checksum=f"crc32:{crc}" if crc else None,
    )


def presigned_get(store: ObjectStore, url: ObjectURL, expires_s: int = PRESIGN_S) -> str:
    """A URL ffprobe can read the object through (ranged GETs), for ``expires_s``."""
    return store.client().generate_presigned_url(
        "get_object", Params={"Bucket": url.bucket, "Key": url.key}, ExpiresIn=expires_s
    )


def list_objects(
    store: ObjectStore, prefix: ObjectURL, suffixes: tuple[str, ...], limit: int
) -> list[ObjectURL]:
    """Objects under ``prefix`` whose names end in one of ``suffixes`` (any case), in
    key order, at most ``limit``."""
    found: list[ObjectURL] = []
    start = f"{prefix.key}/" if prefix.key else ""
    try:
        pages = store.client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=prefix.bucket, Prefix=start):
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.lower().endswith(suffixes) and not key.endswith("/"):
                    found.append(ObjectURL(prefix.bucket, key))
                    if len(found) >= limit:
                        return found
    except Exception as exc:
        raise mapped(exc, prefix) from exc
    return found


def delete_starting(store: ObjectStore, folder: ObjectURL, start: str) -> int:
    """Remove the objects directly under ``folder`` whose names start with ``start`` (a
    job's hidden files); how many there were."""
    key = f"{folder.key}/{start}" if folder.key else start
    gone = 0
    try:
        pages = store.client().get_paginator("list_objects_v2")
        for page in pages.paginate(Bucket=folder.bucket, Prefix=key):
            for item in page.get("Contents", []):
                if "/" not in item["Key"][len(key) :]:
                    store.client().delete_object(Bucket=folder.bucket, Key=item["Key"])
                    gone += 1
    except Exception as exc:
        raise mapped(exc, folder, writing=True) from exc
    return gone


def delete(store: ObjectStore, url: ObjectURL) -> None:
    try:
        store.client().delete_object(Bucket=url.bucket, Key=url.key)
    except Exception as exc:
        raise mapped(exc, url, writing=True) from exc


class Transfer:
    """One download or upload in parts on boto3's transfer manager; :meth:`cancel` stops
    it from any thread (an upload is aborted: nothing appears at the destination)."""

    def __init__(self, store: ObjectStore) -> None:
        from boto3.s3.transfer import TransferConfig, create_transfer_manager

        config = TransferConfig(
            multipart_threshold=PART_BYTES,
            multipart_chunksize=PART_BYTES,
            max_concurrency=TRANSFER_THREADS,
        )
        self._manager = create_transfer_manager(store.client(), config)
        self._future: Any = None
        self._cancelled = False

    def download(
        self, url: ObjectURL, path: Path, progress: Callable[[int], None] | None = None
    ) -> None:
        """Fetch ``url`` into ``path`` (blocking); :class:`TransferCancelled` if cancelled."""
        subscribers = _subscribers(progress)
        self._wait(self._manager.download(url.bucket, url.key, str(path), None, subscribers), url)

    def upload(
        self, path: Path, url: ObjectURL, progress: Callable[[int], None] | None = None
    ) -> None:
        """Put ``path`` at ``url`` (blocking): visible only once complete."""
        subscribers = _subscribers(progress)
        future = self._manager.upload(str(path), url.bucket, url.key, None, subscribers)
        self._wait(future, url, writing=True)

    def _wait(self, future: Any, url: ObjectURL, *, writing: bool = False) -> None:
        from s3transfer.exceptions import CancelledError

        self._future = future
        if self._cancelled:
            future.cancel()
        try:
            future.result()
        except CancelledError as exc:
            raise TransferCancelled(f"transfer of {url} cancelled") from exc
        except Exception as exc:
            if self._cancelled:
                raise TransferCancelled(f"transfer of {url} cancelled") from exc
            raise mapped(exc, url, writing=writing) from exc
        finally:
            self._future = None

    def cancel(self) -> None:
        self._cancelled = True
        future = self._future
        if future is not None:
            future.cancel()

    def close(self) -> None:
        self._manager.shutdown(cancel=self._cancelled)


class TransferCancelled(Exception):
    """A transfer stopped by :meth:`Transfer.cancel` (the job was cancelled)."""


def _subscribers(progress: Callable[[int], None] | None) -> list[Any]:
    if progress is None:
        return []
    from s3transfer.subscribers import BaseSubscriber

    report = progress

    class Progress(BaseSubscriber):
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            report(bytes_transferred)

    return [Progress()]
