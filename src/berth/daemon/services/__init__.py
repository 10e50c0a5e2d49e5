"""The daemon's services, one module each; ``build_services`` makes them in dependency order."""

from __future__ import annotations


def build_services(daemon) -> None:  # noqa: ANN001 - berth.daemon.app.Daemon
    """Each service module that exists is built; missing ones (work in progress) are skipped."""
    import importlib

    for name in ("images", "volumes", "networks", "containers"):  # containers use volumes and networks
        try:
            module = importlib.import_module(f"berth.daemon.services.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"berth.daemon.services.{name}":
                continue
            raise
        daemon.services[name] = module.build(daemon)
