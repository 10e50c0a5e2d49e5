"""The Docker Engine API, one module per area; each has ``register(router, daemon)``."""

from __future__ import annotations


def build_router(daemon) -> None:  # noqa: ANN001 - berth.daemon.app.Daemon
    import importlib

    for name in ("system", "images", "containers", "exec", "networks", "volumes"):
        try:
            module = importlib.import_module(f"berth.daemon.api.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"berth.daemon.api.{name}":
                continue
            raise
        module.register(daemon.router, daemon)
