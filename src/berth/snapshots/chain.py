"""Chain IDs, per the OCI image spec (config.md, "Layer ChainID").

    ChainID(L0)        = DiffID(L0)
    ChainID(L0|...|Ln) = sha256(ChainID(L0|...|Ln-1) + " " + DiffID(Ln))

A chain ID names the filesystem that a stack of layers makes: the key under which
an unpacked layer is committed, so that images sharing a base share its snapshots.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from berth.errors import InvalidArgument

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$|^sha512:[0-9a-f]{128}$")


def check_diff_id(diff_id: str) -> str:
    if not isinstance(diff_id, str) or not _DIGEST.match(diff_id):
        raise InvalidArgument(f"invalid diff ID {diff_id!r} (expected sha256:<64 hex digits>)")
    return diff_id


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of every prefix of ``diff_ids``: element i names layers 0..i."""
    out: list[str] = []
    for diff_id in diff_ids:
        check_diff_id(diff_id)
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def chain_id(diff_ids: Sequence[str]) -> str:
    """The chain ID of the whole stack ``diff_ids`` (bottom layer first)."""
    if not diff_ids:
        raise InvalidArgument("a chain ID needs at least one diff ID")
    return chain_ids(diff_ids)[-1]
