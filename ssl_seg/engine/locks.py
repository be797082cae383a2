"""Exclusive locks on output folders: one process per run directory, visible to a second process at once.

A lock is the file `<folder>/.lock` naming its holder (pid, host, process start time). It is held with
`fcntl.flock`: the kernel releases it when the holder exits, even after kill -9, so a stale lock file never
blocks a later run. On a file system without flock (some NFS/Lustre mounts) the file is created with
O_EXCL instead, and a file left by a dead process of this host (pid gone, or reused by a process that
started later) is taken over. The file is removed on a clean release.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from ..errors import UserError

LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # lock file -> open descriptor, for locks this process holds (re-entrant)
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


def _forget_inherited() -> None:
    """In a forked child (e.g. a DataLoader worker): close the inherited lock descriptors. A lock belongs to the
    process that took it; a child holding a copy would keep an flock alive after that process died (kill -9), and a
    `--resume` would be refused for as long as the orphaned workers live."""
    for fd in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_inherited)


class Locked(UserError):
    """The folder is locked by another live process."""


def _proc_start(pid: int) -> str | None:
    """Start time of process `pid` in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _read(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text())
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def _holder(path: Path) -> str:
    """'pid 123 on host since 02:11:41 UTC' from a lock file, or 'another process' when unreadable."""
    info = _read(path)
    try:
        since = time.strftime("%H:%M:%S UTC", time.gmtime(info["started"]))
        return f"pid {info['pid']} on {info['host']} since {since}"
    except (TypeError, KeyError, ValueError, OverflowError):
        return "another process"


def _alive(info: dict | None) -> bool:
    """Whether the holder a lock file names still runs; holders on other hosts count as alive."""
    if not info or info.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, ValueError, TypeError):
        return True
    start = _proc_start(int(info["pid"]))
    return start is None or info.get("proc_start") in (None, start)  # a reused pid started at another time


def _busy(folder: Path, path: Path, what: str) -> Locked:
    return Locked(f"{folder}: this {what} is in use by {_holder(path)}; wait for it to finish or choose another --out")


def _open_existing(path: Path, flags: int = os.O_RDWR) -> int:
    """An existing lock file opened without following a symbolic link.

    A `.lock` that is a link would make this process truncate and rewrite whatever file it points to: refused.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW)
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        raise UserError(f"{path} is a symbolic link, not a lock file this package made; remove the link "
                        "(the file it points to is left untouched)") from None


def _flock(path: Path) -> int | None:
    """An open descriptor of the live lock file with an exclusive flock, None if flock is unsupported here."""
    while True:
        try:
            fd, created = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644), True
        except FileExistsError:
            try:
                fd, created = _open_existing(path), False
            except FileNotFoundError:
                continue  # removed in between: try again
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        except OSError as e:
            if created:  # leave no holderless file for the O_EXCL path to find
                path.unlink()
            os.close(fd)
            if e.errno in _NO_FLOCK:
                return None
            raise
        try:  # the holder before us may have removed the file after we opened it: lock the live file
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _exclusive(folder: Path, path: Path, what: str) -> int:
    """The lock file created with O_EXCL, taking over one whose holder on this host is dead."""
    for _ in range(2):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            os.close(_open_existing(path, os.O_RDONLY))  # refuses a symbolic link before it is read or removed
            if _alive(_read(path)):
                raise _busy(folder, path, what) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a process that died (kill -9, power loss)
    raise _busy(folder, path, what)


def acquire(folder: str | os.PathLike, what: str = "run directory") -> Path:
    """Lock `folder` (created if missing) for this process; raises Locked naming the holder if another has it."""
    folder = Path(folder)
    path = (folder / LOCK_NAME).absolute()
    if path in _held:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    try:
        fd = _flock(path)
    except BlockingIOError:
        raise _busy(folder, path, what) from None
    if fd is None:
        fd = _exclusive(folder, path, what)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                             "proc_start": _proc_start(os.getpid())}).encode())
    _held[path] = fd
    return path


def release(path: Path) -> None:
    """Remove and unlock a lock file taken by `acquire` (removal first, so nobody locks a dead file)."""
    fd = _held.pop(path, None)
    if fd is None:
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    os.close(fd)


@contextlib.contextmanager
def locked(folder: str | os.PathLike, what: str = "run directory") -> Iterator[Path]:
    """Hold the lock of `folder` for the block; re-entrant within one process. A folder the lock created is
    removed again when the block leaves it empty (a run refused at its first check leaves nothing behind)."""
    path = (Path(folder) / LOCK_NAME).absolute()
    outer = path in _held
    created = not path.parent.exists()
    acquire(folder, what)
    try:
        yield path
    finally:
        if not outer:
            release(path)
            if created:
                with contextlib.suppress(OSError):
                    path.parent.rmdir()  # fails (and is skipped) unless the folder is empty


def is_locked(folder: str | os.PathLike) -> bool:
    """Whether another live process holds the lock of `folder` (without taking it)."""
    path = Path(folder) / LOCK_NAME
    if path.absolute() in _held:
        return False
    try:
        fd = _open_existing(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError as e:
        if e.errno in _NO_FLOCK:
            return _alive(_read(path))
        raise
    finally:
        os.close(fd)
