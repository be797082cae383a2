"""Library messages go through logging; the command lines show INFO on stdout and warnings on stderr."""

from __future__ import annotations

import logging

from ssl_seg.logs import ConsoleHandler, configure_logging


def test_console_shows_info_on_stdout_and_warnings_on_stderr_once(capsys):
    configure_logging()
    configure_logging()  # idempotent: one handler, each line shown once
    for name in ("ssl_seg", "gan_aug"):
        assert sum(isinstance(h, ConsoleHandler) for h in logging.getLogger(name).handlers) == 1
    logging.getLogger("ssl_seg.experiments.grid").info("grid: 3 runs")
    logging.getLogger("gan_aug.synthesize").warning("removed x")
    logging.getLogger("ssl_seg.engine.runner").debug("not shown")
    out, err = capsys.readouterr()
    assert out == "grid: 3 runs\n" and err == "removed x\n"


def test_library_modules_log_instead_of_printing():
    """Only the command-line entry points print; every other module of ssl_seg and gan_aug logs."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    printing = [f"{path.relative_to(root)}:{node.lineno}" for package in ("ssl_seg", "gan_aug")
                for path in sorted((root / package).rglob("*.py")) if path.name != "cli.py"
                for node in ast.walk(ast.parse(path.read_text()))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"]
    assert printing == []
