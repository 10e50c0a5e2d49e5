"""Docker's human-readable sizes and progress text (pure logic, stdlib only): shared by
the daemon, which puts progress into JSON messages, and the CLI, which draws it."""

from __future__ import annotations


def human_size(size: float) -> str:
    """Docker's units.HumanSize (decimal, 4 significant digits): ``2.14MB``."""
    return _scaled(size, 1000.0, ("B", "kB", "MB", "GB", "TB", "PB"))


def bytes_size(size: float) -> str:
    """Docker's units.BytesSize (binary): ``1.5MiB``."""
    return _scaled(size, 1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB"))


def _scaled(size: float, base: float, units: tuple[str, ...]) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:.4g}{units[i]}"


def progress_text(current: int, total: int, bar: bool = True) -> str:
    """Docker's JSONProgress.String(): ``[=====>      ]   1.2MB/2.3MB`` (the bar left out
    when ``bar`` is false); just the count when the total is unknown."""
    if total <= 0:
        return f"{human_size(current):>8}"
    filled = min(50, int(current / total * 100) // 2)
    numbers = f"{human_size(current):>8}/{human_size(total)}" if current <= total else f"{human_size(current):>8}"
    return (f"[{'=' * filled}>{' ' * (50 - filled)}] " if bar else "") + numbers
