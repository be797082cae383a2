"""The README's test command is exactly what CI runs, and its main command names real subcommands."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_lines = [l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.startswith("python3.11 -m venv")]
    assert len(ci_lines) == 1
    assert ci_lines[0] in readme


def test_main_command_uses_existing_subcommand():
    from ssl_seg.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    main_line = next(l for l in readme.splitlines() if l.startswith("python3.11") and "ssl-seg" in l)
    sub = main_line.split("ssl-seg ")[1].split()[0]
    actions = [a for a in build_parser()._subparsers._group_actions][0].choices
    assert sub in actions
