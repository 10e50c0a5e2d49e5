"""Docker's human-readable sizes, durations and progress text (pure logic, stdlib only): shared by
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


def human_duration(seconds: float) -> str:
    """Docker's units.HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"
