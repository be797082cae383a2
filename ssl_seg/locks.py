"""Exclusive locks on output folders: one process per run directory, visible to a second process at once.

A lock is the file `<folder>/.lock` held with `fcntl.flock`: the kernel releases it when the holder exits,
even after kill -9, so a stale lock file never blocks a later run. The file names its holder
(pid, host, start time) for the message a second process prints; it is removed on a clean release.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from .errors import UserError

LOCK_NAME = ".lock"
_held: dict[Path, int] = {}  # lock file -> open descriptor, for locks this process holds (re-entrant)


class Locked(UserError):
    """The folder is locked by another live process."""


def _holder(path: Path) -> str:
    """'pid 123 on host since 02:11:41 UTC' from a lock file, or 'another process' when unreadable."""
    try:
        info = json.loads(path.read_text())
        since = time.strftime("%H:%M:%S UTC", time.gmtime(info["started"]))
        return f"pid {info['pid']} on {info['host']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def acquire(folder: str | os.PathLike, what: str = "run directory") -> Path:
    """Lock `folder` (created if missing) for this process; raises Locked naming the holder if another has it."""
    folder = Path(folder)
    path = (folder / LOCK_NAME).absolute()
    if path in _held:
        return path
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Locked(f"{folder}: this {what} is in use by {_holder(path)}; wait for it to finish "
                         "or choose another --out") from None
        try:  # the holder before us may have removed the file after we opened it: lock the live file
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode())
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
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
