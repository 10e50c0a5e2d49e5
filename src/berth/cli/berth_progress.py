"""Docker's JSON-message streams (pull, push, load, import) shown as the docker CLI does:
progress bars redrawn in place on a terminal, plain ``id: status`` lines otherwise
(messages that carry only a byte count are skipped there)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from typing import IO

from berth._sys.units import progress_text
from berth.cli.berth_client import APIError


def progress_string(detail: dict, width: int) -> str:
    """Docker's JSONProgress.String(): a bar when the terminal is wider than 110 columns."""
    current = int(detail.get("current") or 0)
    total = int(detail.get("total") or 0)
    if current <= 0 and total <= 0:
        return ""
    return progress_text(current, total, bar=width > 110)


def display(messages: Iterable[dict], out: IO[str], terminal: bool | None = None) -> list[dict]:
    """Show the stream; returns the ``aux`` messages; raises APIError for an error message."""
    if terminal is None:
        terminal = out.isatty()
    width = 200
    if terminal:
        try:
            width = os.get_terminal_size(out.fileno()).columns or 200
        except OSError:
            width = shutil.get_terminal_size((200, 24)).columns
    ids: dict[str, int] = {}
    aux: list[dict] = []
    for jm in messages:
        if jm.get("errorDetail") or jm.get("error"):
            detail = jm.get("errorDetail") or {}
            raise APIError(int(detail.get("code") or 500), str(detail.get("message") or jm.get("error")))
        if "aux" in jm:
            aux.append(jm["aux"])
            continue
        ident = jm.get("id") or ""
        has_progress = "progressDetail" in jm
        diff = 0
        if ident and has_progress:
            if ident not in ids:
                ids[ident] = len(ids)
                if terminal:
                    out.write("\n")
            diff = len(ids) - ids[ident]
            if terminal and diff:
                out.write(f"\x1b[{diff}A")
        else:
            ids = {}
        _show(jm, out, terminal, width)
        if ident and terminal and diff:
            out.write(f"\x1b[{diff}B")
        out.flush()
    return aux


def _show(jm: dict, out: IO[str], terminal: bool, width: int) -> None:
    detail = jm.get("progressDetail")
    progress = progress_string(detail, width) if isinstance(detail, dict) else ""
    endl = ""
    stream = jm.get("stream") or ""
    if terminal and not stream and detail is not None:
        out.write("\x1b[2K\r")
        endl = "\r"
    elif progress:  # byte counts are for terminals only
        return
    if jm.get("id"):
        out.write(f"{jm['id']}: ")
    if detail is not None and terminal:
        out.write(f"{jm.get('status', '')} {progress}{endl}")
    elif jm.get("progress") and terminal:
        out.write(f"{jm.get('status', '')} {jm['progress']}{endl}")
    elif stream:
        out.write(f"{stream}{endl}")
    else:
        out.write(f"{jm.get('status', '')}{endl}\n")
