"""Folders that hold secrets (API tokens, the session key, the tokens file, Ray's token):
mode 0700, with the secrets in them 0600.

:func:`private_dir` makes a missing folder 0700; a data dir this user owns that others
could read into is tightened to 0700 (it holds the API token and the session key), with
a line in the log. A folder someone else owns (a volume, ``/etc``) is left as it is.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("framefleet.storage")


def private_dir(folder: Path, *, tighten: bool = True) -> Path:
    """``folder``, made 0700 if missing; with ``tighten``, an existing one this user owns
    loses its group and other bits."""
    if not folder.exists():
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        return folder
    if not tighten:
        return folder
    st = folder.stat()
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        folder.chmod(stat.S_IMODE(st.st_mode) & 0o700)
        log.info("%s holds secrets: made it private to its owner (mode 0700)", folder)
    return folder


def write_secret(path: Path, content: bytes) -> None:
    """Write ``content`` to a new file ``path``, mode 0600, in a private folder; a
    FileExistsError if it exists (never overwritten)."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
