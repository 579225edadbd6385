"""s3:// URLs: parsed strictly and confined to the object roots (pure, no network)."""

from __future__ import annotations

import pytest

from cluster.errors import ErrorCode, SpecError
from cluster.storage.urls import (
    ObjectURL,
    confine_object,
    is_object_url,
    is_url,
    parse_object_roots,
    parse_object_url,
)

ROOTS = parse_object_roots(("s3://media/farm/", "s3://renders"))


def test_roots_are_normalized() -> None:
    assert (ObjectURL("media", "farm"), ObjectURL("renders", "")) == ROOTS
    assert [str(r) for r in ROOTS] == ["s3://media/farm", "s3://renders/"]


@pytest.mark.parametrize(
    ("raw", "bucket", "key"),
    [
        ("s3://media/farm/in/a.mp4", "media", "farm/in/a.mp4"),
        ("s3://media/farm/a b (1).mov", "media", "farm/a b (1).mov"),
        ("s3://renders/x.mkv", "renders", "x.mkv"),
        ("s3://media/farm/%2e%2e/a.mp4", "media", "farm/%2e%2e/a.mp4"),  # literal, inside
    ],
)
def test_urls_inside_the_roots(raw: str, bucket: str, key: str) -> None:
    url = confine_object(raw, ROOTS, what="input")
    assert (url.bucket, url.key) == (bucket, key)
    assert str(url) == raw


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("s3://other/a.mp4", "is outside the media roots (s3://media/farm, s3://renders/)"),
        ("s3://media/farmhouse/a.mp4", "is outside the media roots"),
        ("s3://media/a.mp4", "is outside the media roots"),
        ("s3://media/farm/../x.mp4", "may not hold '.', '..' or empty segments"),
        ("s3://media/farm/./x.mp4", "may not hold '.', '..' or empty segments"),
        ("s3://media/farm//x.mp4", "may not hold '.', '..' or empty segments"),
        ("s3://user:pw@media/farm/x.mp4", "names a bucket, not a user or a port"),
        ("s3://media:9000/farm/x.mp4", "names a bucket, not a user or a port"),
        ("s3://media/farm/x.mp4?versionId=3", "takes no ?query or #fragment"),
        ("s3://media/farm/x.mp4#t=3", "takes no ?query or #fragment"),
        ("s3://Media/farm/x.mp4", "is not a valid bucket name"),
        ("s3://m/farm/x.mp4", "is not a valid bucket name"),
        ("s3://media", "names a bucket, not an object"),
        ("s3://media/farm/x\n.mp4", "holds control characters"),
        ("https://media.s3.amazonaws.com/farm/x.mp4", "https:// URLs are not accepted"),
        ("file:///etc/passwd", "file:// URLs are not accepted"),
    ],
)
def test_urls_refused_with_the_rule(raw: str, says: str) -> None:
    with pytest.raises(SpecError) as refused:
        confine_object(raw, ROOTS, what="input")
    assert says in str(refused.value)


def test_a_key_too_long_for_s3() -> None:
    with pytest.raises(SpecError) as refused:
        confine_object("s3://renders/" + "k" * 1025, ROOTS, what="output")
    assert refused.value.code is ErrorCode.NAME_TOO_LONG


def test_without_object_roots_no_url_is_accepted() -> None:
    with pytest.raises(SpecError) as refused:
        confine_object("s3://media/farm/a.mp4", (), what="input")
    assert "object storage is not configured on this farm" in str(refused.value)
    assert "FRAMEFLEET_MEDIA_ROOTS" in str(refused.value)


def test_prefixes() -> None:
    out = confine_object("s3://media/farm/thumbs/", ROOTS, what="output", prefix=True)
    assert out == ObjectURL("media", "farm/thumbs")
    assert out.child("a_001.jpg") == ObjectURL("media", "farm/thumbs/a_001.jpg")
    assert parse_object_url("s3://renders", what="root", prefix=True).child("x") == ObjectURL(
        "renders", "x"
    )


def test_what_counts_as_a_url() -> None:
    assert is_url("s3://a/b") and is_url("http://x") and not is_url("/srv/media/a.mp4")
    assert not is_url("./s3:/weird") and is_object_url("s3://a/b") and not is_object_url(None)
