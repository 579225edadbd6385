"""Moving a job's media between a node that sees them and one that does not: the serving
agent (:class:`MediaServer`) and the fetching node's :class:`Stager`, on real files,
with the server itself as the peer (Ray carries the same calls; the farm test runs them
through it)."""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path
from typing import Any

import pytest

from cluster.errors import ErrorCode, OutputError, SpecError, TransferError
from cluster.model.jobs import JobKind, JobSpec
from cluster.nodes import stager as stager_module
from cluster.nodes.serving import CHUNK_MAX, UPLOAD_IDLE_S, MediaServer, crc32
from cluster.nodes.stager import StageCancelled, Stager
from cluster.storage.objects import ObjectStore
from cluster.storage.roots import mark_root
from cluster.storage.stage import StagePlan, localize

SIZE = 3 * 1024 * 1024 + 12345


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    (folder / "in.mov").write_bytes(os.urandom(SIZE))
    return folder


def server_for(root: Path) -> MediaServer:
    server = MediaServer()
    asyncio.run(server.look(((str(root), mark_root(root)),)))
    return server


def partials(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


def test_chunks_come_with_their_crc_and_the_files_identity(root: Path) -> None:
    server = server_for(root)
    got = asyncio.run(server.read(str(root / "in.mov"), 1000, 4096))
    data = (root / "in.mov").read_bytes()
    assert got["data"] == data[1000:5096]
    assert got["crc32"] == zlib.crc32(data[1000:5096])
    assert (got["size"], got["mtime_ns"]) == (SIZE, (root / "in.mov").stat().st_mtime_ns)
    big = asyncio.run(server.read(str(root / "in.mov"), 0, 10 * CHUNK_MAX))
    assert len(big["data"]) == min(SIZE, CHUNK_MAX)  # bounded, whatever is asked


def test_only_files_under_a_root_this_node_sees_are_served(root: Path, tmp_path: Path) -> None:
    server = server_for(root)
    (tmp_path / "secret").write_text("x")
    os.symlink(tmp_path / "secret", root / "link.mov")
    with pytest.raises(SpecError, match="not under a media root this node sees"):
        asyncio.run(server.read(str(tmp_path / "secret"), 0, 10))
    with pytest.raises(SpecError) as found:
        asyncio.run(server.read(str(root / "link.mov"), 0, 10))
    assert found.value.code is ErrorCode.OUTSIDE_ROOTS
    with pytest.raises(SpecError, match="not under a media root"):
        asyncio.run(server.open_upload(str(tmp_path / "out.mp4"), "j.1", overwrite=True))


def test_an_upload_appears_whole_or_not_at_all(root: Path) -> None:
    server = server_for(root)
    final = root / "out.mp4"

    async def main() -> None:
        up = await server.open_upload(str(final), "j1.1", overwrite=False)
        await server.write(up, 5, b"world", crc32(b"world"))
        await server.write(up, 0, b"hello", crc32(b"hello"))
        assert not final.exists() and partials(root) == [".out.mp4.j1.1.partial"]
        with pytest.raises(TransferError, match="damaged"):
            await server.write(up, 10, b"!", crc32(b"?"))
        await server.commit(up, 10)
        assert final.read_bytes() == b"helloworld" and partials(root) == []
        # Not over an existing file without overwrite: at the start, and at the commit.
        with pytest.raises(OutputError, match="already exists"):
            await server.open_upload(str(final), "j2.1", overwrite=False)
        up = await server.open_upload(str(root / "late.mp4"), "j3.1", overwrite=False)
        (root / "late.mp4").write_bytes(b"someone else's")
        await server.write(up, 0, b"mine", crc32(b"mine"))
        with pytest.raises(OutputError, match="already exists"):
            await server.commit(up, 4)
        assert (root / "late.mp4").read_bytes() == b"someone else's" and partials(root) == []
        # Short: not kept.
        up = await server.open_upload(str(root / "short.mp4"), "j4.1", overwrite=False)
        await server.write(up, 0, b"abc", crc32(b"abc"))
        with pytest.raises(TransferError, match="3 of 9 bytes"):
            await server.commit(up, 9)
        assert not (root / "short.mp4").exists() and partials(root) == []

    asyncio.run(main())


def test_an_upload_left_idle_is_removed(root: Path) -> None:
    server = server_for(root)
    asyncio.run(server.open_upload(str(root / "out.mp4"), "j1.1", overwrite=False))
    assert partials(root) and server.sweep() == []
    (gone,) = server.sweep(now=10**9 + UPLOAD_IDLE_S)
    assert gone.startswith("j1.1:") and partials(root) == []


def staged(root: Path, scratch: Path, output: str, kind: JobKind = JobKind.TRANSCODE) -> Any:
    spec = JobSpec(kind=kind, input=str(root / "in.mov"), output=str(root / output))
    return localize(spec, str(scratch / "j1.1"), ObjectStore(None, None), SIZE, peer="n1")


def test_a_blind_node_fetches_the_input_and_sends_the_output_back(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stager_module, "CHUNK", 256 * 1024)  # many chunks in the window
    server = server_for(root)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    local, plan = staged(root, scratch, "out/b.mkv")
    (root / "out").mkdir()
    moved: list[int] = []

    async def main() -> dict[str, Any]:
        stager = Stager(plan, on_moved=moved.append, peer=server)
        await stager.fetch()
        assert Path(local.input).read_bytes() == (root / "in.mov").read_bytes()
        Path(local.output).write_bytes(b"encoded" * 100_000)
        try:
            return await stager.push([local.output])
        finally:
            stager.remove()

    done = asyncio.run(main())[local.output]
    out = root / "out" / "b.mkv"
    assert out.read_bytes() == b"encoded" * 100_000
    assert done == {"url": str(out), "size_bytes": 700_000, "etag": None,
                    "checksum": f"crc32:{zlib.crc32(out.read_bytes()):08x}"}  # fmt: skip
    assert partials(root / "out") == [] and list(scratch.iterdir()) == []


def small_chunks(
    root: Path, scratch: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[MediaServer, StagePlan]:
    """A server for ``root`` and a plan that moves ``in.mov`` in 64 KiB chunks."""
    monkeypatch.setattr(stager_module, "CHUNK", 64 * 1024)
    return server_for(root), staged(root, scratch, "out.mkv")[1]


def test_a_file_that_changes_while_read_is_refused(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, plan = small_chunks(root, tmp_path, monkeypatch)
    real_read = server.read

    async def read(path: str, offset: int, size: int) -> dict[str, Any]:
        if offset > 0:
            with open(root / "in.mov", "ab") as f:
                f.write(b"more")
        return await real_read(path, offset, size)

    server.read = read  # type: ignore[method-assign]
    stager = Stager(plan, peer=server)
    with pytest.raises(TransferError, match="changed while it was read"):
        asyncio.run(stager.fetch())
    stager.remove()


def test_cancel_stops_sending_and_leaves_nothing_at_the_destination(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, plan = small_chunks(root, tmp_path, monkeypatch)
    real_write = server.write
    stager = Stager(plan, peer=server)

    async def write(upload: str, offset: int, data: bytes, crc: int) -> None:
        await real_write(upload, offset, data, crc)
        if offset >= 512 * 1024:
            stager.cancel()  # as the encoder's cancel does, mid-upload

    server.write = write  # type: ignore[method-assign]

    async def main() -> None:
        await stager.fetch()
        output = Path(plan.push[0][1])
        output.write_bytes(os.urandom(2 * 1024 * 1024))
        await stager.push([str(output)])

    with pytest.raises(StageCancelled):
        asyncio.run(main())
    stager.remove()
    assert not (root / "out.mkv").exists() and partials(root) == []
