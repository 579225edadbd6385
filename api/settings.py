"""Gateway settings from the environment (``FRAMEFLEET_*``), with pydantic-settings.

Lists are comma-separated (``FRAMEFLEET_API_TOKENS=a,b``; media roots also accept
``:``). Command-line options of ``framefleet serve`` override them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def default_data_dir() -> Path:
    """Where the server and the client keep state unless told otherwise: one place, so the
    client finds the API token ``serve`` made (``$XDG_DATA_HOME/framefleet``, else
    ``~/.local/share/framefleet``)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "framefleet"


DEFAULT_DATA_DIR = default_data_dir()
TOKEN_FILE_NAME = "api-token"  # noqa: S105 (a file name)


def _split(value: object, pattern: str = r"[,]") -> object:
    if isinstance(value, str):
        return [part.strip() for part in re.split(pattern, value) if part.strip()]
    return value


class WatchFolder(BaseModel):
    """One watch folder on ``serve``: a job per new video file (see cluster.watch)."""

    model_config = ConfigDict(extra="forbid")
    folder: Path
    output_dir: Path | None = None
    output_ext: str = Field(default="mp4", pattern=r"^(mp4|mov|mkv|webm)$")
    extensions: list[str] | None = None
    stable_s: float = Field(default=5.0, ge=0)
    recursive: bool = False
    kind: str = "transcode"
    codec: str = "h264"
    quality: int | None = Field(default=None, ge=0, le=51)
    speed: str = "medium"
    hardware: str = "auto"
    priority: int = 0

    def template(self) -> dict[str, Any]:
        keys = ("kind", "codec", "quality", "speed", "hardware", "priority")
        return {k: getattr(self, k) for k in keys}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAMEFLEET_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    ray_address: str | None = None
    """Join this Ray cluster; unset starts an embedded local one."""
    data_dir: Path = DEFAULT_DATA_DIR
    api_tokens: Annotated[list[str], NoDecode] = []
    """Bearer tokens accepted on /v1 (comma-separated)."""
    token_file: Path | None = None
    """A file with one token per line (added to ``api_tokens``)."""
    media_roots: Annotated[list[Path], NoDecode] = []
    """Inputs and outputs must resolve inside these folders (comma- or colon-separated)."""
    gpu_inventory: Path | None = None
    ffmpeg: str | None = None
    """The embedded node's ffmpeg (a path or a name on PATH; default ``ffmpeg``)."""
    cost_model: Path | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch: int = Field(default=1000, ge=1)
    watch_folders: list[WatchFolder] = []
    """JSON: ``[{"folder": "/media/in", "output_dir": "/media/out", "codec": "hevc"}]``."""
    metrics_public: bool = True
    """Serve /metrics without a token (Prometheus scrapes it)."""

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: object) -> object:
        return _split(value)

    @field_validator("media_roots", mode="before")
    @classmethod
    def _roots(cls, value: object) -> object:
        return _split(value, r"[,:]")

    def tokens(self) -> list[str]:
        """Every accepted token: ``api_tokens`` plus the lines of ``token_file``."""
        found = list(self.api_tokens)
        if self.token_file is not None:
            text = self.token_file.read_text()
            found += [line.strip() for line in text.splitlines() if line.strip()]
        return [t for t in found if t]
