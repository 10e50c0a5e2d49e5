"""The daemon's services, one module each; ``build_services`` makes them in dependency order."""

from __future__ import annotations


def build_services(daemon) -> None:  # noqa: ANN001 - berth.daemon.app.Daemon
    from berth.daemon.services import containers, images, networks, volumes

    # containers use the images' snapshots, the volumes and the networks
    for name, module in (("images", images), ("volumes", volumes), ("networks", networks),
                         ("containers", containers)):
        daemon.services[name] = module.build(daemon)
