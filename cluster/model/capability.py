"""Whether a GPU can encode a codec with NVENC, and why not: the words every room uses
(the node proves it, the planner reads it, the node view shows it)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class CodecState(StrEnum):
    VERIFIED = "verified"
    """A trial encode on this GPU succeeded."""
    DECLARED = "declared"
    """A static inventory says so; trusted without a trial."""
    FAILED = "failed"
    """A trial or a real encode could not open NVENC; ``reason`` says why."""
    UNAVAILABLE = "unavailable"
    """This node's ffmpeg has no NVENC encoder for the codec, or it is not declared."""
    PENDING = "pending"
    """The trial encode has not finished yet."""

    @property
    def usable(self) -> bool:
        return self in (CodecState.VERIFIED, CodecState.DECLARED)


@dataclass(frozen=True, slots=True)
class Capability:
    state: CodecState
    reason: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"state": str(self.state), "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Capability:
        return cls(CodecState(data["state"]), data.get("reason", ""))
