"""Argument checks every command shares, done before the heavy imports (torch, the model),
so a mistyped path is reported at once, the same way everywhere: ``error: ...`` on stderr,
exit 2."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

#: Exit status when the command cannot run as asked (bad option, missing or unreadable input).
USAGE_ERROR = 2
#: Exit status when the command ran and what it checked or produced failed.
FAILED = 1


def fail(message: str, code: int = USAGE_ERROR) -> typer.Exit:
    """Print ``error: message`` on stderr; the caller raises the returned Exit."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def ecg_path_exists(path: Path) -> bool:
    """A file, or a WFDB record named without its ``.hea``."""
    return path.is_file() or (not path.suffix and path.with_suffix(".hea").is_file())


def require_ecg_files(paths: Sequence[Path]) -> None:
    """Exit 2 naming the first path that is neither a file nor a WFDB record name."""
    for path in paths:
        if path.is_dir():
            raise fail(f"{path}: is a folder; give ECG files (ecg-cds ingest reads folders)")
        if not ecg_path_exists(path):
            raise fail(f"{path}: no such file (check the path)")


def progress_bar(items: list[Any], label: str, enabled: bool) -> Any:
    """A tqdm bar over ``items`` on stderr (stdout stays the command's output), or none."""
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="ECG", disable=not enabled or not items, file=sys.stderr)
