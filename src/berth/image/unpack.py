"""Unpack an image's layers into committed snapshots named by chain ID.

    unpack_layers(snapshotter, layers, diff_ids, *, on_progress=None, workers=2) -> chain_id

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

With the overlay snapshotter and ``workers`` > 1, layers are applied in parallel,
each into a staging directory on the snapshots' filesystem (a layer's files do not
depend on the layers below it); then, bottom up, each is adopted by its prepared
snapshot, given the attributes of directories it did not list from its lowers, and
committed. Unpacking is mostly kernel time (inode creation), which threads overlap.
``on_progress(diff_id, bytes)`` may then be called from several threads.

It joins ``berth.image.layers`` (the tar applier) to ``berth.snapshots``, which is why it
lives in ``berth.image`` (layer 2) and not in ``berth.snapshots`` (layer 1).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Union

from berth.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from berth.image.compression import open_decompressed
from berth.image.layers import AppliedLayer, apply_layer, apply_layer_plain, inherit_from_lowers
from berth.snapshots.base import Kind, Snapshotter
from berth.snapshots.chain import chain_ids
from berth.snapshots.mount import Mount, mounted
from berth.snapshots.overlay import OverlaySnapshotter

LayerSource = Union[str, "os.PathLike[str]", IO[bytes], Callable[[], IO[bytes]]]
ProgressFn = Callable[[str, int], None]  # (diff_id, uncompressed bytes applied so far)

DIFF_ID_LABEL = "berth.io/diff-id"


def unpack_layers(
    snapshotter: Snapshotter,
    layers: Sequence[LayerSource],
    diff_ids: Sequence[str],
    *,
    on_progress: ProgressFn | None = None,
    workers: int = 2,
) -> str:
    """Unpack ``layers`` (bottom first) whose uncompressed digests are ``diff_ids``; the top chain ID."""
    if len(layers) != len(diff_ids):
        raise InvalidArgument(f"{len(layers)} layers but {len(diff_ids)} diff IDs")
    if not layers:
        raise InvalidArgument("an image needs at least one layer to unpack")
    chains = chain_ids(diff_ids)
    todo = [i for i, chain in enumerate(chains) if not _committed(snapshotter, chain)]
    if workers > 1 and len(todo) > 1 and isinstance(snapshotter, OverlaySnapshotter):
        _unpack_staged(snapshotter, layers, diff_ids, chains, todo, on_progress, workers)
    else:
        for i in todo:
            _unpack_one(snapshotter, layers[i], diff_ids[i], chains[i], chains[i - 1] if i else None, on_progress)
    return chains[-1]


def _committed(snapshotter: Snapshotter, name: str) -> bool:
    try:
        info = snapshotter.stat(name)
    except NotFound:
        return False
    if info.kind is not Kind.COMMITTED:
        raise FailedPrecondition(f"snapshot {name} exists but is {info.kind.value}, not committed")
    return True


def _progress_for(diff_id: str, on_progress: ProgressFn | None) -> Callable[[int], None] | None:
    if on_progress is None:
        return None
    return lambda done: on_progress(diff_id, done)


def _read_layer(source: LayerSource, apply: Callable[[IO[bytes]], AppliedLayer], diff_id: str) -> AppliedLayer:
    """Open ``source``, apply its decompressed tar with ``apply``, check the diff ID."""
    stream, owned = _open(source)
    try:
        applied = apply(open_decompressed(stream))
    finally:
        if owned:
            stream.close()
    if applied.diff_id != diff_id:
        raise InvalidArgument(f"layer content has diff ID {applied.diff_id}, the image says {diff_id}")
    return applied


def _commit(snapshotter: Snapshotter, chain: str, key: str, diff_id: str) -> None:
    try:
        snapshotter.commit(chain, key, labels={DIFF_ID_LABEL: diff_id})
    except AlreadyExists:
        snapshotter.remove(key)  # another unpack committed the same layer first: keep theirs


def _new_key(chain: str) -> str:
    return f"extract-{secrets.token_hex(6)}-{chain}"


# --- one layer at a time (any snapshotter) -----------------------------------------------


def _unpack_one(
    snapshotter: Snapshotter,
    source: LayerSource,
    diff_id: str,
    chain: str,
    parent: str | None,
    on_progress: ProgressFn | None,
) -> None:
    key = _new_key(chain)
    mounts = snapshotter.prepare(key, parent, labels={DIFF_ID_LABEL: diff_id})
    try:
        progress = _progress_for(diff_id, on_progress)
        _read_layer(source, lambda stream: _apply(mounts, stream, progress), diff_id)
        _commit(snapshotter, chain, key, diff_id)
        key = ""
    finally:
        if key:
            snapshotter.remove(key)


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


# --- layers in parallel (overlay) --------------------------------------------------------


def _unpack_staged(
    snapshotter: OverlaySnapshotter,
    layers: Sequence[LayerSource],
    diff_ids: Sequence[str],
    chains: list[str],
    todo: list[int],
    on_progress: ProgressFn | None,
    workers: int,
) -> None:
    def work(i: int, staged: str) -> AppliedLayer:
        progress = _progress_for(diff_ids[i], on_progress)
        return _read_layer(layers[i], lambda s: apply_layer(s, staged, on_progress=progress), diff_ids[i])

    staged = {i: snapshotter.staging_dir() for i in todo}
    pool = ThreadPoolExecutor(max_workers=min(workers, len(todo)), thread_name_prefix="berth-unpack")
    futures: dict[int, Future[AppliedLayer]] = {i: pool.submit(work, i, staged[i]) for i in todo}
    try:
        for i in todo:
            applied = futures[i].result()
            key = _new_key(chains[i])
            snapshotter.prepare(key, chains[i - 1] if i else None, labels={DIFF_ID_LABEL: diff_ids[i]})
            try:
                snapshotter.adopt(key, staged[i])
                del staged[i]
                upper, lowers = snapshotter.upper_and_lowers(key)
                inherit_from_lowers(upper, lowers, applied)
                _commit(snapshotter, chains[i], key, diff_ids[i])
                key = ""
            finally:
                if key:
                    snapshotter.remove(key)
    finally:
        for f in futures.values():
            f.cancel()
        pool.shutdown(wait=True)
        for path in staged.values():
            snapshotter.discard_staging(path)


def _open(source: LayerSource) -> tuple[IO[bytes], bool]:
    if isinstance(source, (str, os.PathLike)):
        return open(source, "rb", buffering=0), True  # noqa: SIM115 - closed by the caller
    if callable(source) and not hasattr(source, "read"):
        return source(), True
    return source, False  # type: ignore[return-value]
