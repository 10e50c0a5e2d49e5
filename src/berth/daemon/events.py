"""The events service: what happened (container create/start/die…, image pull/tag…), kept
in a bounded ring for ``--since`` and streamed live to subscribers, in Docker's shape."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator

RING_SIZE = 2048


class EventBus:
    def __init__(self) -> None:
        self._ring: deque[dict] = deque(maxlen=RING_SIZE)
        self._subscribers: set[asyncio.Queue[dict]] = set()

    def publish(self, kind: str, action: str, actor_id: str, attributes: dict[str, str] | None = None) -> dict:
        now = time.time_ns()
        event = {
            "Type": kind, "Action": action,
            "Actor": {"ID": actor_id, "Attributes": dict(attributes or {})},
            "scope": "local", "time": now // 1_000_000_000, "timeNano": now,
        }
        if kind == "container":  # the pre-1.22 fields that docker's CLI still prints
            event.update(status=action, id=actor_id, **({"from": attributes["image"]} if attributes and "image" in attributes else {}))
        self._ring.append(event)
        for queue in list(self._subscribers):
            queue.put_nowait(event)
        return event

    async def stream(self, since: float | None = None, until: float | None = None,
                     filters: dict[str, list[str]] | None = None) -> AsyncIterator[dict]:
        """Past events from ``since`` (seconds), then live ones until ``until``."""
        queue: asyncio.Queue[dict] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            if since is not None:
                for event in list(self._ring):
                    if event["timeNano"] >= since * 1e9 and (until is None or event["timeNano"] <= until * 1e9):
                        if matches(event, filters):
                            yield event
            if until is not None and until <= time.time():
                return
            while True:
                timeout = None if until is None else max(0.0, until - time.time())
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:
                    return
                if matches(event, filters):
                    yield event
        finally:
            self._subscribers.discard(queue)


def matches(event: dict, filters: dict[str, list[str]] | None) -> bool:
    """Docker's event filters: type, event/action, container/image (id or name), label."""
    if not filters:
        return True
    attrs = event["Actor"]["Attributes"]
    for key, wanted in filters.items():
        if not wanted:
            continue
        if key == "type" and event["Type"] not in wanted:
            return False
        if key in ("event", "action") and event["Action"].split(":")[0] not in wanted and event["Action"] not in wanted:
            return False
        if key in ("container", "image", "network", "volume"):
            if event["Type"] != key:
                return False
            names = {event["Actor"]["ID"], event["Actor"]["ID"][:12], attrs.get("name", ""), attrs.get("image", "")}
            if not any(w in names or event["Actor"]["ID"].startswith(w) for w in wanted):
                return False
        if key == "label":
            for item in wanted:
                k, eq, v = item.partition("=")
                if k not in attrs or (eq and attrs[k] != v):
                    return False
    return True
