"""Joining a farm: its Ray token (where Ray looks for it, made once by the head, copied to
workers) and a quick check that the head answers at all.

Ray's token authentication reads the token from ``RAY_AUTH_TOKEN`` (the token itself),
else the file named by ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``. A head
(``framefleet node start --head``) makes the file when none of them holds a token; a
worker must be given the same token before it joins. An embedded Ray (``encode``,
``serve`` without ``--address``) is private to its process: when no token is found, it
gets one in its data dir, so a fresh machine needs nothing in the home directory.

No Ray import here: only files and the environment mapping the caller passes in.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cluster.errors import ClusterUnavailable, ConfigError
from cluster.storage.private import private_dir

# Names of variables and files, not secrets.
TOKEN_ENV = "RAY_AUTH_TOKEN"  # noqa: S105
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"  # noqa: S105
EMBEDDED_TOKEN_FILE = "ray-token"  # noqa: S105


@dataclass(frozen=True, slots=True)
class FoundToken:
    value: str
    where: str
    """``RAY_AUTH_TOKEN`` or the file it was read from."""


def token_path(environ: Mapping[str, str]) -> Path:
    """The file Ray reads the token from when ``RAY_AUTH_TOKEN`` is not set."""
    named = environ.get(TOKEN_PATH_ENV)
    if named:
        return Path(named).expanduser()
    home = environ.get("HOME") or str(Path.home())
    return Path(home) / ".ray" / "auth_token"


def find_token(environ: Mapping[str, str]) -> FoundToken | None:
    """The token Ray would use in ``environ``, or ``None`` when there is none."""
    value = environ.get(TOKEN_ENV, "").strip()
    if value:
        return FoundToken(value, TOKEN_ENV)
    path = token_path(environ)
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"the Ray token file {path} cannot be read ({exc.strerror})") from exc
    return FoundToken(value, str(path)) if value else None


def create_token(path: Path) -> FoundToken:
    """A new random token (256 bits, as Ray makes them) in ``path``, mode 0600."""
    try:
        private_dir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        found = find_token({TOKEN_PATH_ENV: str(path)})
        if found is None:
            raise ConfigError(f"the Ray token file {path} is empty; remove it") from None
        return found
    except OSError as exc:
        raise ConfigError(f"cannot create the Ray token file {path} ({exc.strerror})") from exc
    value = secrets.token_hex(32)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return FoundToken(value, str(path))


def ensure_token(environ: Mapping[str, str]) -> tuple[FoundToken, bool]:
    """The token Ray would use, made where Ray looks when there is none.
    Returns it and whether it was made now."""
    found = find_token(environ)
    if found is not None:
        return found, False
    return create_token(token_path(environ)), True


def embedded_token_env(environ: Mapping[str, str], data_dir: Path) -> dict[str, str]:
    """What to add to the environment so an embedded Ray finds a token: nothing when
    one is found already, else ``RAY_AUTH_TOKEN_PATH`` to a token in ``data_dir``."""
    if find_token(environ) is not None:
        return {}
    found = create_token(data_dir / EMBEDDED_TOKEN_FILE)
    return {TOKEN_PATH_ENV: found.where}


HEAD_CONNECT_TIMEOUT_S = 5.0


def check_reachable(address: str) -> None:
    """Fail fast when nothing listens at ``HOST:PORT``: Ray itself retries forever."""
    host, _, port = address.rpartition(":")
    if address.startswith(("ray://", "auto")) or not port.isdigit():
        return  # Ray's other address forms: let Ray judge them
    try:
        with socket.create_connection((host.strip("[]"), int(port)), HEAD_CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise ClusterUnavailable(
            f"cannot reach the Ray cluster at {address} ({why}); is its head started "
            "(framefleet node start --head)? Or leave out --address to run a local one"
        ) from exc


def missing_token_message(head: str) -> str:
    """What a worker says when it has no token for the farm at ``head``."""
    return (
        f"no Ray token to join the farm at {head}: on the head run `framefleet node token`, "
        f"then here either set {TOKEN_ENV}=<token> or save it to ~/.ray/auth_token (mode 600)"
    )
