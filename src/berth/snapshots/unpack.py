"""Unpack an image's layers into committed snapshots named by chain ID.

    unpack_layers(snapshotter, layers, diff_ids, *, on_progress=None) -> chain_id

Each layer is applied into an active snapshot keyed ``extract-<random>-<chainid>``
on top of the previous layer's snapshot, its diff ID checked, and committed under
its chain ID. A layer whose chain ID is already committed is skipped without being
read: a base shared by two images is unpacked once. Two unpacks of the same image
may race: the one that commits second drops its copy (``AlreadyExists``) and goes on.

A layer is a path to a blob, an open binary stream, or a callable that opens one
(called only if the layer must be unpacked); gzip, zstd or plain, as the magic bytes
say. Overlay snapshots are filled directly in their upper directory (overlayfs' own
whiteout form); any other snapshotter through its mounts, with whiteouts applied as
deletions.

This module sits above ``berth.image.layers`` (the tar applier) and so is not part of
``berth.snapshots``' own surface: import it by its full name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from typing import IO, Union

from berth.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from berth.image.compression import open_decompressed
from berth.image.layers import AppliedLayer, apply_layer, apply_layer_plain
from berth.snapshots.base import Kind, Snapshotter
from berth.snapshots.chain import chain_ids
from berth.snapshots.mount import Mount, mounted

LayerSource = Union[str, "os.PathLike[str]", IO[bytes], Callable[[], IO[bytes]]]
ProgressFn = Callable[[str, int], None]  # (diff_id, uncompressed bytes applied so far)

DIFF_ID_LABEL = "berth.io/diff-id"


def unpack_layers(
    snapshotter: Snapshotter,
    layers: Sequence[LayerSource],
    diff_ids: Sequence[str],
    *,
    on_progress: ProgressFn | None = None,
) -> str:
    """Unpack ``layers`` (bottom first) whose uncompressed digests are ``diff_ids``; the top chain ID."""
    if len(layers) != len(diff_ids):
        raise InvalidArgument(f"{len(layers)} layers but {len(diff_ids)} diff IDs")
    if not layers:
        raise InvalidArgument("an image needs at least one layer to unpack")
    chains = chain_ids(diff_ids)
    parent: str | None = None
    for source, diff_id, chain in zip(layers, diff_ids, chains):
        if not _committed(snapshotter, chain):
            _unpack_one(snapshotter, source, diff_id, chain, parent, on_progress)
        parent = chain
    return chains[-1]


def _committed(snapshotter: Snapshotter, name: str) -> bool:
    try:
        info = snapshotter.stat(name)
    except NotFound:
        return False
    if info.kind is not Kind.COMMITTED:
        raise FailedPrecondition(f"snapshot {name} exists but is {info.kind.value}, not committed")
    return True


def _unpack_one(
    snapshotter: Snapshotter,
    source: LayerSource,
    diff_id: str,
    chain: str,
    parent: str | None,
    on_progress: ProgressFn | None,
) -> None:
    key = f"extract-{secrets.token_hex(6)}-{chain}"
    mounts = snapshotter.prepare(key, parent, labels={DIFF_ID_LABEL: diff_id})
    try:
        progress = (lambda done: on_progress(diff_id, done)) if on_progress is not None else None
        stream, owned = _open(source)
        try:
            applied = _apply(mounts, open_decompressed(stream), progress)
        finally:
            if owned:
                stream.close()
        if applied.diff_id != diff_id:
            raise InvalidArgument(f"layer content has diff ID {applied.diff_id}, the image says {diff_id}")
        try:
            snapshotter.commit(chain, key, labels={DIFF_ID_LABEL: diff_id})
        except AlreadyExists:
            snapshotter.remove(key)  # another unpack committed the same layer first: keep theirs
        key = ""
    finally:
        if key:
            snapshotter.remove(key)


def _open(source: LayerSource) -> tuple[IO[bytes], bool]:
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb", buffering=0), True  # noqa: SIM115 - closed by the caller
    if callable(source) and not hasattr(source, "read"):
        return source(), True
    return source, False  # type: ignore[return-value]


def _apply(mounts: list[Mount], stream: IO[bytes], progress: Callable[[int], None] | None) -> AppliedLayer:
    """Into the upper dir when the mounts name one; otherwise through a temporary mount."""
    if len(mounts) == 1:
        m = mounts[0]
        if m.type == "bind" and not m.readonly:
            return apply_layer(stream, m.source, on_progress=progress)
        upper, lower = m.option("upperdir"), m.option("lowerdir")
        if m.type == "overlay" and upper:
            return apply_layer(stream, upper, parents=lower.split(":") if lower else (), on_progress=progress)
    with mounted(mounts) as target:
        return apply_layer_plain(stream, target, on_progress=progress)
