"""Layer compression: detect it, stream-decompress it, compress for push.

    Compression                      PLAIN | GZIP | ZSTD
    detect(prefix) -> Compression    by magic bytes (gzip 1f 8b, zstd 28 b5 2f fd, else tar)
    from_media_type(mt) -> Compression
    open_decompressed(fileobj, media_type=None) -> BinaryIO   streaming, nothing buffered whole
    open_compressor(fileobj, compression, level=None) -> BinaryIO   for push

The magic bytes decide, as containerd's ``DecompressStream`` does: registries and
tools do serve layers whose media type says gzip for a plain tar. A media type that
names no layer compression at all (a config, a manifest, ``text/html``) is refused.

Implementations, chosen by measurement on a 167 MB tar (see benchmarks/README.md):
gzip through python-isal (``isal.igzip``, ~2x stdlib zlib), falling back to the
standard library's ``gzip`` when isal is missing; zstd through ``zstandard``'s
streaming reader, across frames. Compression at gzip level 6 (the default, what
Docker writes) uses zlib-ng (~1.8x stdlib zlib; isal offers levels 0-3 only), at
levels 0-3 isal, and stdlib zlib when neither is installed.
"""

from __future__ import annotations

import enum
import gzip as _stdlib_gzip
import io
from typing import IO, Any, BinaryIO

from berth.errors import FailedPrecondition, InvalidArgument

try:  # python-isal: the fastest inflate available from PyPI here
    from isal import igzip as _igzip
    from isal import isal_zlib as _isal_zlib
except ImportError:  # pragma: no cover - exercised only without isal
    _igzip = None
    _isal_zlib = None

try:
    from zlib_ng import zlib_ng as _zlib_ng
except ImportError:  # pragma: no cover
    _zlib_ng = None

try:
    import zstandard as _zstd
except ImportError:  # pragma: no cover
    _zstd = None

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
READ_SIZE = 1 << 20
DEFAULT_GZIP_LEVEL = 6
DEFAULT_ZSTD_LEVEL = 3


class Compression(enum.Enum):
    PLAIN = "tar"
    GZIP = "gzip"
    ZSTD = "zstd"


def detect(prefix: bytes) -> Compression:
    """The compression that the first bytes of a blob announce (plain tar otherwise)."""
    if prefix.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if prefix.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.PLAIN


_LAYER_TYPE_HINTS = ("layer", "rootfs.diff", "foreign.diff")


def from_media_type(media_type: str) -> Compression:
    """The compression a layer media type names; InvalidArgument if it is no layer type.

    OCI: ``application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]`` (and nondistributable);
    Docker: ``application/vnd.docker.image.rootfs.diff.tar[.gzip|.zstd]`` (and foreign).
    """
    mt = media_type.strip().lower()
    if not any(hint in mt for hint in _LAYER_TYPE_HINTS) or "tar" not in mt:
        raise InvalidArgument(f"not a layer media type: {media_type!r}")
    if mt.endswith(("+gzip", ".gzip")):
        return Compression.GZIP
    if mt.endswith(("+zstd", ".zstd")):
        return Compression.ZSTD
    if mt.endswith("tar"):
        return Compression.PLAIN
    raise InvalidArgument(f"unsupported layer compression in media type {media_type!r}")


class _Prefixed(io.RawIOBase):
    """A read-only stream that yields ``prefix`` and then the rest of ``raw``."""

    def __init__(self, prefix: bytes, raw: IO[bytes]) -> None:
        self._prefix = memoryview(prefix)
        self._raw = raw

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        readinto = getattr(self._raw, "readinto", None)
        if readinto is not None:
            return readinto(b) or 0
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size is None or size < 0:
                out = bytes(self._prefix) + self._raw.read()
                self._prefix = memoryview(b"")
                return out
            n = min(size, len(self._prefix))
            out = bytes(self._prefix[:n])
            self._prefix = self._prefix[n:]
            return out
        return self._raw.read(size)


def _read_prefix(fileobj: IO[bytes], n: int = 4) -> bytes:
    """Read up to n bytes, retrying short reads (a socket may hand out 1 byte)."""
    chunks = []
    got = 0
    while got < n:
        data = fileobj.read(n - got)
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def open_decompressed(fileobj: IO[bytes], media_type: str | None = None) -> BinaryIO:
    """A readable stream of the uncompressed bytes of the layer blob that ``fileobj`` reads.

    Reads ``fileobj`` forward only, a block at a time: it need not be seekable (a socket
    or an HTTP body). The stream does not own ``fileobj``: closing it closes nothing
    underneath. Corrupt compressed data raises ``InvalidArgument`` on read; so does
    truncated gzip. A zstd frame cut short just ends the stream early (zstandard's
    reader does not tell), and corruption inside a zstd frame without a checksum goes
    unnoticed here: the diff ID that ``unpack_layers`` checks catches both.
    """
    if media_type is not None:
        from_media_type(media_type)  # refuses what is no layer at all
    prefix = _read_prefix(fileobj)
    kind = detect(prefix)
    source = _Prefixed(prefix, fileobj)
    if kind is Compression.GZIP:
        if _igzip is not None:
            return _Checked(_igzip.IGzipFile(fileobj=source, mode="rb"), "gzip")
        return _Checked(_stdlib_gzip.GzipFile(fileobj=source, mode="rb"), "gzip")  # pragma: no cover
    if kind is Compression.ZSTD:
        if _zstd is None:  # pragma: no cover
            raise FailedPrecondition("zstd layer but the 'zstandard' package is not installed")
        reader = _zstd.ZstdDecompressor().stream_reader(
            source, read_size=READ_SIZE, read_across_frames=True, closefd=False
        )
        return _Checked(reader, "zstd")
    return _Checked(io.BufferedReader(source, READ_SIZE), "tar")  # type: ignore[arg-type]


class _Checked(io.RawIOBase):
    """Turns a decompressor's own errors into one clear InvalidArgument line."""

    def __init__(self, inner: Any, what: str) -> None:
        self._inner = inner
        self._what = what

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._inner.read(size)
        except (OSError, EOFError, ValueError) as e:
            raise InvalidArgument(f"corrupt {self._what} layer data: {e}") from None
        except Exception as e:  # zstandard.ZstdError, zlib.error, isal_zlib.error
            if type(e).__name__ in ("ZstdError", "error", "IsalError"):
                raise InvalidArgument(f"corrupt {self._what} layer data: {e}") from None
            raise

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._inner.close()
            finally:
                super().close()


# --- compressors (push) -------------------------------------------------------------


class _CompressWriter(io.RawIOBase):
    """Bytes written through a compressobj (``compress``/``flush``) into ``raw``;
    ``as_bytes``: hand it ``bytes``, not the memoryview BufferedWriter passes."""

    def __init__(self, raw: IO[bytes], compressobj: Any, as_bytes: bool = False) -> None:
        self._raw = raw
        self._c = compressobj
        self._as_bytes = as_bytes

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        out = self._c.compress(bytes(b) if self._as_bytes else b)
        if out:
            self._raw.write(out)
        return len(b)

    def close(self) -> None:
        if not self.closed:
            self._raw.write(self._c.flush())
            super().close()


def gzip_module(level: int) -> Any:
    """The zlib-compatible module that compresses at ``level`` fastest here."""
    import zlib

    if not 0 <= level <= 9:
        raise InvalidArgument(f"gzip level must be 0-9, not {level}")
    if level <= 3 and _isal_zlib is not None:
        return _isal_zlib
    if _zlib_ng is not None:
        return _zlib_ng
    return zlib  # pragma: no cover


def open_compressor(fileobj: IO[bytes], compression: Compression, level: int | None = None) -> BinaryIO:
    """A writable stream that compresses into ``fileobj``; ``close()`` it to finish.

    Closing the returned stream writes the trailer but leaves ``fileobj`` open.
    """
    if compression is Compression.GZIP:
        lvl = DEFAULT_GZIP_LEVEL if level is None else level
        module = gzip_module(lvl)
        deflate = module.compressobj(lvl, module.DEFLATED, 31)  # 31: a gzip header and trailer
        return io.BufferedWriter(_CompressWriter(fileobj, deflate), READ_SIZE)  # type: ignore[return-value]
    if compression is Compression.ZSTD:
        if _zstd is None:  # pragma: no cover
            raise FailedPrecondition("zstd compression needs the 'zstandard' package")
        lvl = DEFAULT_ZSTD_LEVEL if level is None else level
        zstd = _zstd.ZstdCompressor(level=lvl).compressobj()
        return io.BufferedWriter(_CompressWriter(fileobj, zstd, as_bytes=True), READ_SIZE)  # type: ignore[return-value]
    return io.BufferedWriter(_Passthrough(fileobj), READ_SIZE)  # type: ignore[return-value]


class _Passthrough(io.RawIOBase):
    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._raw.write(b)
        return len(b)


def media_type_suffix(compression: Compression) -> str:
    """The OCI media type suffix for ``compression``: '', '+gzip' or '+zstd'."""
    return {Compression.PLAIN: "", Compression.GZIP: "+gzip", Compression.ZSTD: "+zstd"}[compression]
