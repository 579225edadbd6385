"""The files one ffmpeg run touches, pinned on the node that runs it.

Paths are checked against the media roots when a job is submitted, but a file or folder
can be swapped for a symlink while the job waits. So, immediately before ffmpeg starts,
the node opens the input and each output folder itself (no link in the last part, and
what was opened must lie inside the roots), and ffmpeg gets ``/proc/self/fd/N`` paths
to those descriptors: a later swap cannot redirect a read or a write. Outputs are
renamed into place through the folder's descriptor after the folder is checked again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from cluster.errors import EncodeError, OutputError
from cluster.media.argv import Command
from cluster.media.paths import OVERWRITE_HINT, check_opened, open_folder, open_input


@dataclass(slots=True)
class PinnedOutput:
    folder_fd: int
    folder: str
    partial: str
    """A name inside the folder."""
    final: str


@dataclass(slots=True)
class Pinned:
    """A :class:`Command` whose files are open descriptors (see the module docstring)."""

    command: Command
    pass_fds: tuple[int, ...]
    outputs: list[PinnedOutput]
    roots: tuple[Path, ...]
    _fds: list[int] = field(default_factory=list)
    _files: dict[str, int] = field(default_factory=dict)
    """Each input (the input, a reference) by its absolute path: its descriptor."""
    _folders: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        command: Command,
        *,
        input_path: str,
        roots: tuple[Path, ...],
        create_folders: bool = False,
        reference: str | None = None,
    ) -> Pinned:
        """``command`` with its input (and ``reference``, a second input) and output
        folders opened and checked, its arguments naming the descriptors."""
        fds: list[int] = []
        files: dict[str, int] = {}
        try:
            source = open_input(input_path, roots)
            fds.append(source)
            files[os.path.abspath(input_path)] = source
            if reference is not None:
                fds.append(open_input(reference, roots))
                files[os.path.abspath(reference)] = fds[-1]
            folders: dict[str, int] = {}
            outputs = []
            for partial, final in command.outputs:
                folder = os.path.dirname(final)
                if folder not in folders:
                    folders[folder] = open_folder(folder, roots, create=create_folders)
                    fds.append(folders[folder])
                outputs.append(
                    PinnedOutput(
                        folders[folder], folder, os.path.basename(partial), os.path.basename(final)
                    )
                )
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        argv = [_pin_arg(arg, files, folders) for arg in command.argv]
        return cls(replace(command, argv=argv), tuple(fds), outputs, roots, fds, files, folders)

    def pin(self, command: Command) -> Command:
        """Another command on the same files (a score of what the first wrote), its
        arguments naming the same descriptors."""
        argv = [_pin_arg(a, self._files, self._folders) for a in command.argv]
        return replace(command, argv=argv)

    def size(self, index: int = 0) -> int:
        out = self.outputs[index]
        return os.stat(out.partial, dir_fd=out.folder_fd).st_size

    def check_folders(self) -> None:
        """Each output folder, checked again: still inside the roots."""
        for out in self.outputs:
            check_opened(out.folder_fd, self.roots, what="output folder", shown=out.folder)

    def commit(self, *, overwrite: bool) -> None:
        """Rename every partial file onto its name (atomic per file), in the folders that
        were opened, once each is checked again; else remove the partial files."""
        try:
            for out in self.outputs:
                check_opened(out.folder_fd, self.roots, what="output folder", shown=out.folder)
                if not overwrite and exists_in(out.final, out.folder_fd):
                    raise OutputError(f"{out.folder}/{out.final} already exists; {OVERWRITE_HINT}")
                if not exists_in(out.partial, out.folder_fd):
                    raise EncodeError(f"ffmpeg finished but wrote no {out.final}")
        except BaseException:
            self.remove_partials()
            raise
        for out in self.outputs:
            os.replace(out.partial, out.final, src_dir_fd=out.folder_fd, dst_dir_fd=out.folder_fd)

    def remove_partials(self) -> None:
        """Each partial output (a package's staging folder with all it holds)."""
        for out in self.outputs:
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.stat(out.partial, dir_fd=out.folder_fd,
                                        follow_symlinks=False).st_mode):  # fmt: skip
                    shutil.rmtree(out.partial, dir_fd=out.folder_fd)
                else:
                    os.unlink(out.partial, dir_fd=out.folder_fd)

    def close(self) -> None:
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.pop())


def exists_in(name: str, folder_fd: int) -> bool:
    """Whether ``name`` exists (a link counts) in the folder open as ``folder_fd``."""
    try:
        os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _pin_arg(arg: str, files: dict[str, int], folders: dict[str, int]) -> str:
    if arg.startswith("file:") and (fd := files.get(arg[5:])) is not None:
        return f"file:/proc/self/fd/{fd}"
    for folder, fd in folders.items():
        if arg.startswith(f"file:{folder}/"):
            return f"file:/proc/self/fd/{fd}/{arg[len(folder) + 6 :]}"
    return arg
