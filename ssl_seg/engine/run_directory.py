"""A run's folder, for segmentation and GAN runs alike: locked while in use, started only where nothing would be
overwritten, resumed only from its checkpoint, and written in a fixed order (marker, config, split, ..., result)."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Protocol

from . import locks
from ..errors import UserError
from ..io_utils import atomic_write_json

RUN_MARKER = ".medseg_run"  # written first into every run folder this package starts


class Saveable(Protocol):
    def save(self, path: str | Path) -> None: ...


class RunDirectory:
    """The folder `path` of one run whose resumable state is the file `checkpoint` in it; `what` names the run in
    messages ('run', 'GAN run')."""

    def __init__(self, path: str | Path, checkpoint: str, what: str = "run") -> None:
        self.path, self.checkpoint, self.what = Path(path), Path(path) / checkpoint, what

    @contextlib.contextmanager
    def locked(self) -> Iterator["RunDirectory"]:
        """Hold the folder's lock (a second process on it stops at once); a file in its place is refused."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file; give a folder for the {self.what} (a new name, or an "
                            "existing run with --resume)")
        with locks.locked(self.path, f"{self.what} directory"):
            yield self

    def check(self, resume: bool, fresh: bool = True) -> None:
        """A new run needs a folder without a checkpoint (and, with `fresh`, `check_fresh`: data-parallel ranks other
        than 0 skip it), a resumed one its checkpoint."""
        if not resume and self.checkpoint.exists():
            raise UserError(f"{self.path} already holds a {self.what}; add --resume to continue it or choose another "
                            "--out")
        if resume and not self.checkpoint.exists():
            raise UserError(f"{self.checkpoint} not found: nothing to resume; drop --resume to start this run")
        if not resume and fresh:
            self.check_fresh()

    def check_fresh(self) -> None:
        """A new run starts only in a missing or empty folder, or in one an unfinished run of this package made (its
        RUN_MARKER, no result.json): never over a finished run's or a user's files."""
        if not self.path.is_dir():
            return
        found = sorted(p.name for p in self.path.iterdir() if p.name != locks.LOCK_NAME)
        marked = (self.path / RUN_MARKER).is_file()
        if not found or (marked and not (self.path / "result.json").exists()):
            return
        what = "a finished run (result.json)" if marked else \
            f"files this package did not start as a run ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''})"
        raise UserError(f"--out {self.path} holds {what}; choose another --out (nothing there was changed)")

    def start(self, config: Saveable, split: Saveable, resume: bool) -> None:
        """Create the folder (its marker first, for a new run), then write config.json and split.json."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            atomic_write_json(self.path / RUN_MARKER,
                              {"created": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        config.save(self.path / "config.json")
        split.save(self.path / "split.json")

    def finish(self, result: dict[str, Any]) -> None:
        """Write result.json, last (its presence marks the run finished)."""
        atomic_write_json(self.path / "result.json", result)
