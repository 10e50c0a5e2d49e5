"""What the image tests share: a registry client that retries fast, a store root per test,
a fault proxy in front of the registry, and the reference tree ``umoci unpack`` makes.

Fixtures are used by importing them into a test module (pytest finds them there)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from berth.image.registry import RegistryClient
from berth.image.store import Stores
from berth.snapshots.base import Kind
from tests.support.fstree import Entry, umoci_tree
from tests.support.images import Layout
from tests.support.proxy import FaultProxy


def fast_client(domain: str) -> RegistryClient:
    return RegistryClient(domain, backoff=0.01, retries=3)


def committed(stores: Stores) -> list[str]:
    return [i.name for i in stores.snapshotter.walk() if i.kind is Kind.COMMITTED]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    s = Stores(tmp_path / "root")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def proxy(registry: Any) -> Iterator[FaultProxy]:
    p = FaultProxy(registry.host)
    p.start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="session")
def umoci_ref(image_layout: Layout, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Entry]:
    """``umoci unpack`` of layout tag v1, read as a tree (the reference for every kind)."""
    return umoci_tree(image_layout.path, "v1", tmp_path_factory.mktemp("umoci"))
