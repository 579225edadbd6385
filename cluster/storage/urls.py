"""``s3://bucket/key`` URLs: parsed strictly and confined to the configured object roots.

Pure (no network): the coordinator checks every URL a job names here, once, the way
:mod:`cluster.media.paths` checks local paths. A key is taken literally (S3 has no
folders and no ``..``), but a key with ``.`` or ``..`` segments, empty segments or
control characters is refused: other tools that map keys to paths would read it as a
way out of the prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from cluster.errors import ErrorCode, SpecError

SCHEME = "s3"
MAX_KEY_BYTES = 1024
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(raw: str) -> bool:
    """Whether ``raw`` names a URL (``scheme://...``) rather than a local path."""
    return bool(_SCHEME.match(raw))


def is_object_url(raw: str | None) -> bool:
    return raw is not None and raw.startswith(f"{SCHEME}://")


@dataclass(frozen=True, slots=True, order=True)
class ObjectURL:
    """One object (``key``) or prefix (``key`` ending without a ``/``; empty: the bucket)."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}://{self.bucket}/{self.key}"

    @property
    def name(self) -> str:
        """The key's last segment (what a file made from it is called)."""
        return self.key.rsplit("/", 1)[-1]

    def child(self, name: str) -> ObjectURL:
        """The object ``name`` under this prefix."""
        return ObjectURL(self.bucket, f"{self.key}/{name}" if self.key else name)

    def within(self, root: ObjectURL) -> bool:
        """Whether this URL is ``root`` or lies under it (at a ``/`` boundary)."""
        if self.bucket != root.bucket:
            return False
        return not root.key or self.key == root.key or self.key.startswith(root.key + "/")


def parse_object_url(raw: str, *, what: str, prefix: bool = False) -> ObjectURL:
    """``raw`` as an :class:`ObjectURL`, or a :class:`SpecError` naming the rule it breaks.
    A ``prefix`` (an output folder, a root) may be the bucket alone and may end in ``/``."""
    if not raw.startswith(f"{SCHEME}://"):
        scheme = raw.split("://", 1)[0] if is_url(raw) else "?"
        raise SpecError(
            f"{what} {raw[:120]!r}: {scheme}:// URLs are not accepted; give an s3:// URL or "
            "a path under the media roots",
            code=ErrorCode.OUTSIDE_ROOTS,
        )
    if _CONTROL.search(raw):
        raise SpecError(f"{what} {raw[:120]!r} holds control characters; remove them")
    parts = urlsplit(raw)
    if parts.username is not None or parts.password is not None or parts.port is not None:
        raise SpecError(
            f"{what} {raw[:120]!r}: an s3:// URL names a bucket, not a user or a port; "
            "credentials come from the node's AWS settings",
            code=ErrorCode.OUTSIDE_ROOTS,
        )
    if parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise SpecError(f"{what} {raw[:120]!r}: an s3:// URL takes no ?query or #fragment")
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise SpecError(
            f"{what} {raw[:120]!r}: {bucket!r} is not a valid bucket name (3-63 of a-z 0-9 . -)"
        )
    key = raw[len(f"{SCHEME}://{bucket}") :].removeprefix("/")
    if prefix:
        key = key.removesuffix("/")
    return ObjectURL(bucket, _checked_key(key, raw, what=what, prefix=prefix))


def _checked_key(key: str, raw: str, *, what: str, prefix: bool) -> str:
    if not key and not prefix:
        raise SpecError(f"{what} {raw[:120]!r} names a bucket, not an object; add its key")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise SpecError(
            f"{what} {raw[:80]!r}…: the key is {len(key.encode())} bytes; S3 allows "
            f"{MAX_KEY_BYTES}; shorten it",
            code=ErrorCode.NAME_TOO_LONG,
        )
    if key and any(seg in ("", ".", "..") for seg in key.split("/")):
        raise SpecError(
            f"{what} {raw[:120]!r}: a key may not hold '.', '..' or empty segments ('//'); "
            "name the object itself",
            code=ErrorCode.OUTSIDE_ROOTS,
        )
    return key


def parse_object_roots(raws: tuple[str, ...]) -> tuple[ObjectURL, ...]:
    """The configured object roots (``s3://bucket`` or ``s3://bucket/prefix``)."""
    return tuple(parse_object_url(raw, what="media root", prefix=True) for raw in raws)


def confine_object(
    raw: str, roots: tuple[ObjectURL, ...], *, what: str, prefix: bool = False
) -> ObjectURL:
    """``raw`` parsed and inside one of ``roots``, or a :class:`SpecError` naming the rule."""
    url = parse_object_url(raw, what=what, prefix=prefix)
    if not roots:
        raise SpecError(
            f"{what} {raw[:120]!r}: object storage is not configured on this farm; an "
            "operator adds s3://bucket/prefix to FRAMEFLEET_MEDIA_ROOTS",
            code=ErrorCode.OUTSIDE_ROOTS,
        )
    if not any(url.within(root) for root in roots):
        raise SpecError(
            f"{what} {raw[:120]!r} is outside the media roots "
            f"({', '.join(map(str, roots))}); use a key under one of them",
            code=ErrorCode.OUTSIDE_ROOTS,
        )
    return url
