"""Root-identity files and path maps: which roots a node sees, and where (real folders)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cluster.errors import ConfigError
from cluster.storage.roots import (
    IDENTITY_NAME,
    look,
    mark_root,
    parse_media_map,
    read_identity,
    root_of,
    to_node,
    to_root,
)


def test_a_root_is_marked_once_and_keeps_its_identity(tmp_path: Path) -> None:
    first = mark_root(tmp_path)
    assert len(first) == 32 and mark_root(tmp_path) == first == read_identity(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [IDENTITY_NAME]  # no temp file left
    assert mark_root(tmp_path / "missing") == ""  # nothing to write in: nodes judge the folder


def test_the_media_map_takes_pairs_of_absolute_paths() -> None:
    assert parse_media_map("/srv/media=/mnt/nas/media, /b/=/c") == (
        ("/srv/media", "/mnt/nas/media"),
        ("/b", "/c"),
    )
    assert parse_media_map(None) == parse_media_map("") == ()
    for bad in ("/srv/media", "srv=/mnt", "/srv=mnt", "=/mnt"):
        with pytest.raises(ConfigError, match=r"FRAMEFLEET_MEDIA_MAP\): .* is not ROOT=PATH"):
            parse_media_map(bad)


def test_paths_move_between_root_space_and_a_nodes_mounts() -> None:
    pairs = (("/srv/media", "/mnt/nas"), ("/srv/media/raw", "/fast/raw"))
    assert to_node("/srv/media/a/b.mov", pairs) == "/mnt/nas/a/b.mov"
    assert to_node("/srv/media/raw/c.mov", pairs) == "/fast/raw/c.mov"  # the innermost root
    assert to_node("/srv/mediax/c.mov", pairs) == "/srv/mediax/c.mov"  # not under it
    assert to_root("/mnt/nas/a/b.mov", pairs) == "/srv/media/a/b.mov"
    assert to_root("/fast/raw/c.mov", pairs) == "/srv/media/raw/c.mov"
    assert root_of("/srv/media/raw/x", ("/srv/media", "/srv/media/raw")) == "/srv/media/raw"
    assert root_of("/srv/mediax/x", ("/srv/media",)) is None


def test_a_node_sees_a_root_only_where_its_identity_file_is(tmp_path: Path) -> None:
    root, mounted, other, plain = (tmp_path / n for n in ("root", "mnt", "other", "plain"))
    for folder in (root, other, plain):
        folder.mkdir()
    identity = mark_root(root)
    mark_root(other)
    os.symlink(root, mounted)  # the same share, mounted elsewhere
    roots = ((str(root), identity),)

    (here,) = look(roots, ())
    assert (here.seen, here.path) == (True, str(root))
    (moved,) = look(roots, ((str(root), str(mounted)),))
    assert (moved.seen, moved.path) == (True, str(mounted))
    (wrong,) = look(roots, ((str(root), str(other)),))
    assert not wrong.seen and "holds another root's identity file; check --media-map" in wrong.why
    (empty,) = look(roots, ((str(root), str(plain)),))
    assert not empty.seen
    assert empty.why == (
        f"no {IDENTITY_NAME} in {plain} (mapped from {root}); mount the share there, or map "
        "it with --media-map ROOT=PATH"
    )
    (declared,) = look(roots, (), no_media=True)
    assert not declared.seen and declared.why == "this node declares it sees no media root"
    # A root no gateway could mark: the folder alone decides.
    assert look(((str(plain), ""),), ())[0].seen
    assert not look(((str(tmp_path / "gone"), ""),), ())[0].seen
