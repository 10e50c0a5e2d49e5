"""Snapshots: filesystem states with parents, in containerd's model, backed by overlayfs.

    Snapshotter          the interface (prepare / view / commit / remove / mounts / stat / walk / usage)
    Info, Kind, Usage    what stat, walk and usage return
    Mount                one mount; mount_all / unmount / mounted perform and undo them
    OverlaySnapshotter   the overlayfs implementation
    chain_id, chain_ids  the OCI chain IDs under which layers are committed

Unpacking image layers into snapshots is ``berth.image.unpack``: it needs the layer
applier, and imports only point down (layer 1 may not import layer 2).

Errors (``berth.errors``): NotFound, AlreadyExists, FailedPrecondition, InvalidArgument.
"""

from berth.snapshots.base import Info, Kind, Snapshotter, Usage
from berth.snapshots.chain import chain_id, chain_ids
from berth.snapshots.mount import Mount, mount_all, mounted, unmount
from berth.snapshots.overlay import OverlaySnapshotter

__all__ = [
    "Info",
    "Kind",
    "Mount",
    "OverlaySnapshotter",
    "Snapshotter",
    "Usage",
    "chain_id",
    "chain_ids",
    "mount_all",
    "mounted",
    "unmount",
]
