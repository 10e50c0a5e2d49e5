"""Layer tars built in tests with tarfile: ``make_tar([d("etc/"), entry("etc/f", data=b"x"), ...])``.

    entry(name, kind=REGTYPE, data=b"", **TarInfo attributes)   one member
    d(name, **attrs), sym(name, target, **attrs), hard(name, target)
    make_tar(entries, fmt=PAX_FORMAT) -> bytes                  the uncompressed tar
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable

MTIME = 1_600_000_000


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> tuple:
    return (name, kind, data, attrs)


def make_tar(entries: Iterable[tuple], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for name, kind, data, attrs in entries:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            ti.mtime = attrs.pop("mtime", MTIME)
            ti.mode = attrs.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
            for key, value in attrs.items():
                setattr(ti, key, value)
            if kind == tarfile.REGTYPE:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


def d(name: str, **attrs: object) -> tuple:
    return entry(name, tarfile.DIRTYPE, **attrs)


def sym(name: str, target: str, **attrs: object) -> tuple:
    return entry(name, tarfile.SYMTYPE, linkname=target, **attrs)


def hard(name: str, target: str) -> tuple:
    return entry(name, tarfile.LNKTYPE, linkname=target)
