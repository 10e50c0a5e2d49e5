"""The Docker Engine API, one module per area; each has ``register(router, daemon)``."""

from __future__ import annotations


def build_router(daemon) -> None:  # noqa: ANN001 - berth.daemon.app.Daemon
    from berth.daemon.api import containers, exec as exec_api, images, networks, system, volumes

    for module in (system, images, containers, exec_api, networks, volumes):
        module.register(daemon.router, daemon)
