"""Writing files so that a reader never sees half of one: :func:`atomic_write`; one writer per run folder:
:func:`claim_folder`."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "claim_folder"]


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see a half-written file.

    The temporary file sits next to ``path`` (``.NAME.tmp-PID-THREAD``, so processes and threads writing at
    once never share one) and is removed when ``write`` fails; ``path``'s folder is made when missing.
    Returns ``path``. Bytes: ``atomic_write(p, lambda tmp: tmp.write_bytes(data))``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_HELD: dict[Path, int] = {}  # lock files this process holds → how many claims (the CLI's and fit's nest)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


@contextlib.contextmanager
def claim_folder(folder, what: str = "run"):
    """Hold ``folder/.lock`` (``PID HOST``) while the block runs: one writer per run folder.

    The file is created atomically (``O_CREAT | O_EXCL``) and removed on the way out, however the block ends.
    A folder another live process holds raises ``CxrError`` in one line naming the folder and that pid; a lock
    whose pid is no longer alive on this host (a crashed or killed run) is taken over with a one-line notice on
    stderr. Claims nest within one process. A lock from another host is never taken over (its pid cannot be
    checked from here): remove the file when that run is gone. Folders the claim created and the block left empty
    are removed on the way out."""
    from cxrlib.errors import CxrError

    folder = Path(folder)
    lock = (folder / ".lock").absolute()
    if lock in _HELD:
        _HELD[lock] += 1
        try:
            yield lock
        finally:
            _HELD[lock] -= 1
        return
    made = [d for d in (folder, *folder.parents) if not d.exists()]  # what this claim creates, deepest first
    folder.mkdir(parents=True, exist_ok=True)
    host, mine = socket.gethostname(), f"{os.getpid()} {socket.gethostname()}\n"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                text = lock.read_text()
            except FileNotFoundError:
                continue  # its holder just left: try again
            pid_s, _, their_host = text.strip().partition(" ")
            pid = int(pid_s) if pid_s.isdigit() else -1
            if their_host != host:
                raise CxrError(f"'{folder}' is in use by {what} pid {pid_s} on host {their_host} (its {lock.name}); "
                               f"delete '{lock}' if that {what} is gone") from None
            if pid == os.getpid() or (pid > 0 and _alive(pid)):
                raise CxrError(f"'{folder}' is in use by {what} pid {pid} on this host; wait for it to end or "
                               "choose another --out") from None
            # stale: move it aside, and take it over only if what moved is still the stale one
            aside = lock.with_name(f".lock.stale-{os.getpid()}")
            try:
                os.replace(lock, aside)
            except FileNotFoundError:
                continue
            if aside.read_text() != text:  # another process took it over in between: give theirs back
                os.replace(aside, lock)
                continue
            aside.unlink(missing_ok=True)
            print(f"notice: taking over '{folder}' from {what} pid {pid}, which is no longer running", file=sys.stderr,
                  flush=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(mine)
        break
    else:
        raise CxrError(f"could not claim '{folder}' ({lock} keeps changing): another {what} is starting there")
    _HELD[lock] = 1
    try:
        yield lock
    finally:
        del _HELD[lock]
        try:
            if lock.read_text() == mine:
                lock.unlink()
        except FileNotFoundError:
            pass
        for d in made:  # a block that wrote nothing (e.g. a refused config) leaves no empty folder behind
            try:
                d.rmdir()
            except OSError:
                break
