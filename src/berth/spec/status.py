"""The OCI lifecycle states and what each allows (youki's style: one type answers)."""

from __future__ import annotations

CREATING = "creating"
CREATED = "created"
RUNNING = "running"
PAUSED = "paused"
STOPPED = "stopped"


def can_start(status: str) -> bool:
    return status == CREATED


def can_kill(status: str) -> bool:
    return status in (CREATED, RUNNING, PAUSED)


def can_delete(status: str) -> bool:
    return status in (CREATED, STOPPED)


def can_pause(status: str) -> bool:
    return status in (CREATED, RUNNING)


def can_resume(status: str) -> bool:
    return status == PAUSED


def can_exec(status: str) -> bool:
    return status in (CREATED, RUNNING)
