"""Who may do what: tokens with a name, a tenant and a role, from a tokens file.

The tokens file (TOML, ``FRAMEFLEET_TOKENS_FILE``) keeps only a salted, slow hash of each
token (scrypt), never the token: ``framefleet token add NAME --tenant T --role R`` prints a
new token once and writes its hash. A token reads ``ff_<id>_<secret>``: the id finds its
entry, so checking one costs one scrypt, and a checked token is remembered (by a SHA-256
of it, in memory) until the file changes. The file also holds the tenants' weights,
limits and media roots::

    [tenants.team-a]
    weight = 2
    max_gpus = 4
    max_queued = 500
    media_roots = ["/srv/media/team-a"]

    [tokens.alice]
    tenant = "team-a"
    role = "submitter"
    id = "3f9a0c1d2b4e"
    hash = "scrypt$16384$8$1$<salt>$<digest>"

Roles, each with what the one before it may do: ``viewer`` (its tenant's jobs, the
farm's nodes), ``submitter`` (submit, cancel, retry its tenant's jobs), ``operator``
(every tenant's jobs; drain, undrain, release nodes; the audit trail), ``admin``
(tenants and tokens). The tokens of ``FRAMEFLEET_API_TOKENS`` and the api-token file
(what ``make run`` uses) are admins of the default tenant.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import threading
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

import tomli_w

from cluster import (
    DEFAULT_TENANT,
    Caller,
    ConfigError,
    Tenant,
    Tenants,
    check_name,
    private_dir,
)

log = logging.getLogger("framefleet.api.access")
PREFIX = "ff_"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
"""scrypt's cost: ~16 MiB and tens of milliseconds a check (once per token and file)."""
HEADER = (
    "# framefleet's tokens and tenants. Only salted scrypt hashes of tokens are kept here;\n"
    "# `framefleet token add|list|revoke` edits it. Keep it private (mode 0600).\n"
)


class Role(IntEnum):
    """What a token may do; each role may do what the ones below it may."""

    VIEWER = 1
    SUBMITTER = 2
    OPERATOR = 3
    ADMIN = 4

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: str) -> Role:
        try:
            return cls[value.upper()]
        except KeyError:
            names = ", ".join(str(r) for r in cls)
            raise ValueError(f"role {value!r}: use one of {names}") from None


@dataclass(frozen=True, slots=True)
class Identity:
    """A token's holder: its name, tenant and role. ``key`` names the token itself (its
    id in the tokens file, a digest of a plain one): a session and the per-token bounds
    go by it, and a new token of the same name is another key."""

    name: str
    tenant: str = DEFAULT_TENANT
    role: Role = Role.ADMIN
    key: str = ""

    def may(self, role: Role) -> bool:
        return self.role >= role

    @property
    def caller(self) -> Caller:
        """The engine's view of this holder (operators and admins see every tenant)."""
        return Caller(self.name, self.tenant, self.role >= Role.OPERATOR, self.key)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    """One token in the file: who holds it, and a hash of it."""

    identity: Identity
    id: str
    hash: str
    created_at: str = ""

    def matches(self, token: str) -> bool:
        return verify_hash(token, self.hash)

    @property
    def holder(self) -> Identity:
        return replace(self.identity, key=self.id)


@dataclass(frozen=True, slots=True)
class TokensFile:
    """The tokens file's content."""

    tokens: tuple[TokenEntry, ...] = ()
    tenants: Tenants = field(default_factory=Tenants)

    def by_id(self, token_id: str) -> TokenEntry | None:
        for entry in self.tokens:
            if hmac.compare_digest(entry.id, token_id):
                return entry
        return None

    def named(self, name: str) -> TokenEntry | None:
        return next((e for e in self.tokens if e.identity.name == name), None)


# ---- hashing ---------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_token(token: str, salt: bytes | None = None) -> str:
    """A salted scrypt hash of ``token``: ``scrypt$N$r$p$salt$digest``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(token.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P,
                            maxmem=64 * 1024 * 1024, dklen=32)  # fmt: skip
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_hash(token: str, stored: str) -> bool:
    """Whether ``token`` hashes to ``stored`` (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(token.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=64 * 1024 * 1024, dklen=32)  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, _unb64(digest))


def new_token() -> tuple[str, str]:
    """A new token and its id: ``ff_<id>_<secret>`` (256 random bits in the secret)."""
    token_id = secrets.token_hex(6)
    return f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}", token_id


def plain_key(token: str) -> str:
    """The key of a plain token (``FRAMEFLEET_API_TOKENS``): a digest of it."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def token_id_of(token: str) -> str | None:
    """The id a token names (``None``: not one of the tokens file's form)."""
    if not token.startswith(PREFIX):
        return None
    token_id, sep, secret = token[len(PREFIX) :].partition("_")
    return token_id if sep and secret and len(token_id) == 12 else None


# ---- the file --------------------------------------------------------------------------


def read_tokens_file(path: Path) -> TokensFile:
    """The tokens file; a :class:`ConfigError` naming what is wrong in it."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"tokens file {path} does not exist; create it with `framefleet token add NAME "
            f"--file {path}`, or unset FRAMEFLEET_TOKENS_FILE"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"tokens file {path}: {exc}") from None
    try:
        tenants = Tenants(tuple(_tenant(name, body) for name, body in
                                (data.get("tenants") or {}).items()))  # fmt: skip
        tokens = tuple(_entry(name, body) for name, body in (data.get("tokens") or {}).items())
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"tokens file {path}: {exc}") from None
    ids = [e.id for e in tokens]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"tokens file {path}: two tokens share an id; revoke one")
    return TokensFile(tokens, tenants)


def _tenant(name: str, body: dict[str, Any]) -> Tenant:
    known = {"weight", "max_gpus", "max_cores", "max_running", "max_queued", "media_roots"}
    unknown = set(body) - known
    if unknown:
        raise ValueError(f"tenant {name}: unknown setting {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(sorted(known))})")  # fmt: skip
    return Tenant.from_dict({"name": name, **body})


def _entry(name: str, body: dict[str, Any]) -> TokenEntry:
    check_name(name, "token")
    tenant = check_name(str(body.get("tenant", DEFAULT_TENANT)))
    for key in ("id", "hash"):
        if not isinstance(body.get(key), str):
            raise ValueError(f"token {name}: no {key}; add tokens with `framefleet token add`")
    identity = Identity(name, tenant, Role.parse(str(body.get("role", "viewer"))))
    return TokenEntry(identity, body["id"], body["hash"], str(body.get("created_at", "")))


def write_tokens_file(path: Path, content: TokensFile) -> None:
    """Write ``content`` atomically, mode 0600 (its folder made 0700 when created)."""
    data: dict[str, Any] = {}
    if content.tenants.known:
        data["tenants"] = {
            t.name: {k: v for k, v in t.to_dict().items() if k != "name" and v not in (None, [])}
            for t in content.tenants.known
        }
    data["tokens"] = {
        e.identity.name: {"tenant": e.identity.tenant, "role": str(e.identity.role),
                          "id": e.id, "hash": e.hash, "created_at": e.created_at}
        for e in content.tokens
    }  # fmt: skip
    private_dir(path.parent, tighten=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(HEADER + tomli_w.dumps(data))
    os.replace(tmp, path)


def add_token(path: Path, name: str, tenant: str, role: Role) -> str:
    """A new token for ``name`` in the file (made if missing); returns the token (shown
    once: the file keeps its hash only)."""
    check_name(name, "token")
    check_name(tenant)
    content = read_tokens_file(path) if path.exists() else TokensFile()
    if content.named(name) is not None:
        raise ConfigError(f"a token named {name} exists; revoke it first or pick another name")
    token, token_id = new_token()
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = TokenEntry(Identity(name, tenant, role), token_id, hash_token(token), stamp)
    write_tokens_file(path, replace(content, tokens=(*content.tokens, entry)))
    return token


def revoke_token(path: Path, name: str) -> TokenEntry:
    """Remove ``name``'s token from the file; returns what it was."""
    content = read_tokens_file(path)
    entry = content.named(name)
    if entry is None:
        names = ", ".join(e.identity.name for e in content.tokens) or "none"
        raise ConfigError(f"no token named {name} in {path} (tokens: {names})")
    kept = tuple(e for e in content.tokens if e is not entry)
    write_tokens_file(path, replace(content, tokens=kept))
    return entry


# ---- checking tokens -------------------------------------------------------------------


class Keyring:
    """Every token the gateway accepts: the tokens file's (hashed) and the plain ones of
    ``FRAMEFLEET_API_TOKENS`` and the api-token file (admins of the default tenant).
    The tokens file is read again when it changes (:meth:`refresh`)."""

    def __init__(
        self,
        plain: Iterable[str] = (),
        path: Path | None = None,
        check: Callable[[Tenants], None] | None = None,
    ) -> None:
        """``check``: refuses tenants this gateway cannot confine (a :class:`ConfigError`:
        at start-up the gateway does not start; later the last good file is kept)."""
        self._check = check
        self._plain = tuple((t.encode(), Identity(f"token-{i + 1}", key=plain_key(t)))
                            for i, t in enumerate(t for t in plain if t))  # fmt: skip
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.file = TokensFile()
        self._checked: dict[bytes, TokenEntry] = {}
        """SHA-256 of a token that checked out -> its entry (until the file changes)."""
        self._lock = threading.Lock()
        self.generation = 0
        """How many times the tokens file was read (a check made before a change of the
        file does not count after it)."""
        self._keys: frozenset[str] = frozenset(i.key for _, i in self._plain)
        self.refresh()

    def __bool__(self) -> bool:
        return bool(self._plain or self.file.tokens)

    @property
    def tenants(self) -> Tenants:
        return self.file.tenants

    def refresh(self) -> bool:
        """Read the tokens file again if it changed (a revoked token stops at once).
        Whether it did; a file that no longer reads keeps the last good content."""
        if self.path is None:
            return False
        try:
            st = self.path.stat()
        except OSError:
            st = None
        stamp = (st.st_mtime_ns, st.st_size) if st else (0, 0)
        if stamp == self._stamp:
            return False
        first = self._stamp is None
        self._stamp = stamp
        try:
            content = read_tokens_file(self.path)
            if self._check is not None:
                self._check(content.tenants)
            with self._lock:
                self.file = content
                self.generation += 1
                self._checked.clear()
                self._keys = frozenset(i.key for _, i in self._plain) | {
                    e.id for e in content.tokens
                }
        except ConfigError as exc:
            if first:  # at start-up: the gateway does not start
                raise
            log.error("kept the tokens file's last good content: %s", exc)
            return False
        return True

    def holds(self, key: str) -> bool:
        """Whether the token ``key`` names is still accepted (an open stream's check)."""
        return key in self._keys

    def needs_hashing(self, token: str) -> bool:
        """Whether checking ``token`` costs a scrypt (a tokens-file token not yet seen):
        the gateway checks it in a thread."""
        token_id = token_id_of(token)
        if token_id is None or self.file.by_id(token_id) is None:
            return False
        return hashlib.sha256(token.encode()).digest() not in self._checked

    def identify(self, token: str) -> Identity | None:
        """Who holds ``token``; ``None`` if no one does."""
        raw = token.encode()
        found: Identity | None = None
        for plain, identity in self._plain:  # every one compared, equal time
            if hmac.compare_digest(raw, plain):
                found = identity
        if found is not None:
            return found
        token_id = token_id_of(token)
        if token_id is None or not self.file.tokens:
            return None
        key = hashlib.sha256(raw).digest()
        entry = self._checked.get(key)
        if entry is not None:
            return entry.holder
        generation, entry = self.generation, self.file.by_id(token_id)
        if entry is None or not entry.matches(token):  # scrypt: the file may change meanwhile
            return None
        with self._lock:  # remembered only if the file is still the one it was checked in
            if generation != self.generation or self.file.by_id(token_id) is not entry:
                return None
            self._checked[key] = entry
        return entry.holder

    def listing(self) -> list[dict[str, str]]:
        """Every accepted token by name, tenant, role and where it is configured."""
        rows = [{"name": i.name, "tenant": i.tenant, "role": str(i.role), "source": "env"}
                for _, i in self._plain]  # fmt: skip
        rows += [{"name": e.identity.name, "tenant": e.identity.tenant,
                  "role": str(e.identity.role), "source": "tokens file",
                  "created_at": e.created_at} for e in self.file.tokens]  # fmt: skip
        return rows

    def by_key(self, key: str) -> Identity | None:
        """The holder of the token ``key`` names, while that token is accepted (a page
        session names its token by key)."""
        for _, identity in self._plain:
            if hmac.compare_digest(identity.key, key):
                return identity
        entry = self.file.by_id(key)
        return entry.holder if entry else None
