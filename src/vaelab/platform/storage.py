"""File safety: every file vaelab writes is written whole or not at all.

`atomic_write_bytes` writes a temporary file in the target's folder, fsyncs it, renames it over
the target and fsyncs the folder, so a crash (or a full disk) leaves the previous version or the
new one, never a mix. Run folders (checkpoint.py), the MNIST cache (data) and every picture and
array the CLI writes go through it; `atomic_write_with` is the one way to write what a writer such as
np.save or Figure.savefig puts into a file object.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from vaelab.errors import StorageError

# Test hook (tests/test_crash.py): "NAME:N" makes the N-th atomic write of a file called NAME in
# this process SIGKILL itself after the temporary file is written and fsynced, before the rename:
# the worst moment for a crash. Unset in normal use.
CRASH_HOOK_ENV = "VAELAB_TEST_CRASH_BEFORE_RENAME"
_crash_hook_counts: dict[str, int] = {}


def _crash_hook(name: str) -> None:
    spec = os.environ.get(CRASH_HOOK_ENV)
    if not spec:
        return
    target, _, nth = spec.rpartition(":")
    if target != name:
        return
    _crash_hook_counts[name] = _crash_hook_counts.get(name, 0) + 1
    if _crash_hook_counts[name] == int(nth):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def _file_mode() -> int:
    """0o666 less the umask: what open() would give (mkstemp's temporary files are 0o600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename: never a half-written file.

    Raises StorageError (an OSError) naming the file when it cannot be written (disk full, a
    read-only or missing folder); the previous version of `path`, if any, is then left untouched.
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        _crash_hook(path.name)
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(path.parent)  # make the rename itself durable
    except OSError as e:
        if isinstance(e, StorageError):
            raise
        err = StorageError(
            f"cannot write {path} ({e.strerror or e}); nothing was changed there: free disk "
            f"space or choose a writable folder"
        )
        err.errno = e.errno
        raise err from e
    finally:
        if tmp is not None:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                pass


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode())


def atomic_write_with(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """`atomic_write_bytes` of what `write(f)` writes into an in-memory binary file `f`, e.g.
    ``atomic_write_with(path, lambda f: np.save(f, a))`` or ``lambda f: fig.savefig(f, format="png")``."""
    buf = io.BytesIO()
    write(buf)
    atomic_write_bytes(path, buf.getvalue())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
