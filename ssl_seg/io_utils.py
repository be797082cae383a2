"""Atomic file writes: a temporary file in the same folder, renamed into place on success."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions a plain open() would
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def jsonable(obj: Any) -> Any:
    """`obj` as strict JSON values: NaN and infinities -> None, numpy scalars -> Python numbers, keys -> str."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to `path` atomically (a killed run never leaves a half-written checkpoint)."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch reports a failed write (full disk, size limit) as a RuntimeError
            raise UserError(f"{path}: writing failed ({str(e).splitlines()[0]}); the disk may be full; files "
                            f"finished before are intact (every write is atomic), the previous {Path(path).name} "
                            "too; free space, then rerun (train: add --resume)") from None


def read_json(path: str | os.PathLike, fix: str) -> Any:
    """A JSON file's value; one UserError naming the file and `fix` when it is not readable JSON."""
    from .errors import UserError

    try:
        return json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not readable JSON ({type(e).__name__}: {e}); {fix}") from None


def inside(root: str | os.PathLike, name: str, source: str) -> Path:
    """root / name, refused in one line naming `source` when the name leads out of root (absolute, or through '..').

    The check is on the written path, not on symlink targets: a dataset whose folders are links to another disk
    stays readable, while a listed name cannot reach files the dataset does not hold.
    """
    from .errors import UserError

    base = os.path.normpath(os.path.abspath(root))
    path = os.path.normpath(os.path.join(base, str(name)))
    if os.path.isabs(str(name)) or os.path.commonpath([base, path]) != base:
        raise UserError(f"{source}: names {name!r}, which is outside {root}; list files inside the folder "
                        "(relative paths without '..')")
    return Path(path)

