"""Which media roots a node can see, and where: root-identity files and path maps.

Farms rarely mount the media share at one path on every machine, or on every machine
at all. The gateway writes a small identity file, :data:`IDENTITY_NAME`, in each local
media root (:func:`mark_root`); each node agent looks for that file where the node
would find the root (:func:`look`): at the root's own path, or where the node's path
map puts it (``framefleet node start --media-map /srv/media=/mnt/nas/media``). Only a
file with the same identity proves the node sees the same share: a folder of the same
name that happens to exist there does not.

Paths in jobs are always the roots' own ("root space"); :func:`to_node` and
:func:`to_root` translate them for a node whose map moves a root.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.errors import ConfigError

IDENTITY_NAME = ".framefleet-root"
MEDIA_MAP_ENV = "FRAMEFLEET_MEDIA_MAP"
"""``ROOT=PATH`` pairs separated by ``,``: where this node mounts each root."""
NO_MEDIA_ENV = "FRAMEFLEET_NO_MEDIA"
"""``1``: this node declares it sees no media root (its media move through Ray)."""

Pairs = tuple[tuple[str, str], ...]
"""``((root, path on the node), ...)``."""


@dataclass(frozen=True, slots=True)
class Sight:
    """Whether one node sees one media root, and at which path."""

    root: str
    path: str
    """Where the node would find the root (the root itself unless mapped)."""
    seen: bool
    why: str = ""
    """Why not, in words (empty when seen)."""

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "path": self.path, "seen": self.seen, "why": self.why}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sight:
        return cls(str(d["root"]), str(d["path"]), bool(d["seen"]), str(d.get("why", "")))


def mark_root(root: Path) -> str:
    """The identity in ``root``'s identity file, made (atomically, never replaced) when
    missing; ``""`` when there is none and none can be written (a read-only share: nodes
    then judge by the folder alone)."""
    found = read_identity(root)
    if found is not None:
        return found
    identity = secrets.token_hex(16)
    body = json.dumps({"id": identity, "root": str(root)}) + "\n"
    try:
        fd, temp = tempfile.mkstemp(prefix=".framefleet-root.", dir=root)
    except OSError:
        return ""
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body)
        os.chmod(temp, 0o644)
        os.link(temp, root / IDENTITY_NAME)  # fails if another gateway wrote one first
    except FileExistsError:
        pass
    except OSError:
        return ""
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp)
    return read_identity(root) or ""


def read_identity(folder: Path) -> str | None:
    """The identity in ``folder``'s identity file (``None``: no readable file there)."""
    try:
        data = json.loads((folder / IDENTITY_NAME).read_text())
    except (OSError, ValueError):
        return None
    identity = data.get("id") if isinstance(data, dict) else None
    return identity if isinstance(identity, str) and identity else None


def parse_media_map(raw: str | None) -> Pairs:
    """``/srv/media=/mnt/nas/media,/b=/c`` as pairs; a :class:`ConfigError` naming the
    variable when an entry is not two absolute paths."""
    pairs: list[tuple[str, str]] = []
    for entry in (raw or "").split(","):
        if not entry.strip():
            continue
        root, sep, path = entry.strip().partition("=")
        if not sep or not posixpath.isabs(root) or not posixpath.isabs(path):
            raise ConfigError(
                f"media map (--media-map, {MEDIA_MAP_ENV}): {entry.strip()!r} is not "
                "ROOT=PATH with two absolute paths (for example /srv/media=/mnt/nas/media)"
            )
        pairs.append((posixpath.normpath(root), posixpath.normpath(path)))
    return tuple(pairs)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _move(path: str, source: str, target: str) -> str:
    return target + path[len(source.rstrip("/")) :] if source != "/" else target + path


def to_node(path: str, pairs: Pairs) -> str:
    """``path`` (root space) where a node with these ``(root, node path)`` pairs finds it."""
    for root, there in sorted(pairs, key=lambda p: -len(p[0])):
        if _under(path, root):
            return _move(path, root, there)
    return path


def to_root(path: str, pairs: Pairs) -> str:
    """The inverse of :func:`to_node`: a node's path in root space."""
    for root, there in sorted(pairs, key=lambda p: -len(p[1])):
        if _under(path, there):
            return _move(path, there, root)
    return path


def root_of(path: str, roots: tuple[str, ...]) -> str | None:
    """The (innermost) root ``path`` lies under, if any."""
    inside = [r for r in roots if _under(path, r)]
    return max(inside, key=len) if inside else None


def look(roots: Pairs, media_map: Pairs, *, no_media: bool = False) -> tuple[Sight, ...]:
    """Whether this node sees each of ``roots`` (``(root, identity)`` pairs; an empty
    identity: none could be written, the folder alone decides), through ``media_map``."""
    sights = []
    for root, identity in roots:
        path = to_node(root, media_map)
        moved = f" (mapped from {root})" if path != root else ""
        if no_media:
            sights.append(Sight(root, path, False, "this node declares it sees no media root"))
            continue
        found = read_identity(Path(path))
        if identity and found == identity:
            sights.append(Sight(root, path, True))
        elif found is not None and identity:
            why = f"{path}{moved} holds another root's identity file; check --media-map"
            sights.append(Sight(root, path, False, why))
        elif not identity and os.path.isdir(path):
            sights.append(Sight(root, path, True))
        else:
            hint = "mount the share there, or map it with --media-map ROOT=PATH"
            what = f"no {IDENTITY_NAME} in {path}{moved}" if identity else f"no folder {path}"
            sights.append(Sight(root, path, False, f"{what}; {hint}"))
    return tuple(sights)
