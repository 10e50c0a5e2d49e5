"""berth.image.compression: detection, streaming decompression, compressors for push."""

from __future__ import annotations

import gzip
import io
import os
import zlib

import pytest
import zstandard

from berth.errors import InvalidArgument
from berth.image.compression import (
    Compression,
    detect,
    from_media_type,
    gzip_module,
    open_compressor,
    open_decompressed,
)

PAYLOAD = os.urandom(300_000) + b"compressible " * 50_000


class Trickle(io.RawIOBase):
    """A non-seekable stream that hands out at most ``step`` bytes a read (like a socket)."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data = memoryview(data)
        self._step = step
        self.reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        self.reads += 1
        n = min(len(b), self._step, len(self._data))
        b[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


def read_all(stream: io.RawIOBase | io.BufferedIOBase, size: int = 65536) -> bytes:
    out = bytearray()
    while chunk := stream.read(size):
        out += chunk
    return bytes(out)


@pytest.mark.parametrize(
    ("prefix", "kind"),
    [(b"\x1f\x8b\x08\x00", Compression.GZIP), (b"\x28\xb5\x2f\xfd", Compression.ZSTD),
     (b"etc/", Compression.PLAIN), (b"", Compression.PLAIN)],
)
def test_detect_by_magic(prefix: bytes, kind: Compression) -> None:
    assert detect(prefix) is kind


@pytest.mark.parametrize(
    ("media_type", "kind"),
    [
        ("application/vnd.oci.image.layer.v1.tar", Compression.PLAIN),
        ("application/vnd.oci.image.layer.v1.tar+gzip", Compression.GZIP),
        ("application/vnd.oci.image.layer.v1.tar+zstd", Compression.ZSTD),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Compression.GZIP),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", Compression.GZIP),
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Compression.GZIP),
        ("application/vnd.docker.image.rootfs.diff.tar.zstd", Compression.ZSTD),
    ],
)
def test_media_types(media_type: str, kind: Compression) -> None:
    assert from_media_type(media_type) is kind


@pytest.mark.parametrize(
    "media_type",
    ["application/vnd.oci.image.config.v1+json", "text/html", "application/vnd.oci.image.layer.v1.tar+bzip2"],
)
def test_non_layer_media_types_are_refused(media_type: str) -> None:
    with pytest.raises(InvalidArgument):
        from_media_type(media_type)
    with pytest.raises(InvalidArgument):
        open_decompressed(io.BytesIO(gzip.compress(b"x")), media_type)


def test_gzip_zstd_and_plain_decompress_from_a_trickling_stream() -> None:
    blobs = {
        "gzip": gzip.compress(PAYLOAD),
        "zstd": zstandard.ZstdCompressor().compress(PAYLOAD),
        "plain": PAYLOAD,
    }
    for blob in blobs.values():
        assert read_all(open_decompressed(Trickle(blob, step=3))) == PAYLOAD


def test_decompression_streams_without_reading_the_whole_blob() -> None:
    src = Trickle(gzip.compress(os.urandom(8 << 20)), step=1 << 16)
    stream = open_decompressed(src)
    assert len(stream.read(1000)) == 1000
    assert src.reads < 20  # a few blocks, not the 8 MiB blob


def test_multi_member_gzip_and_multi_frame_zstd() -> None:
    parts = [b"first part ", b"second part ", os.urandom(1000)]
    assert read_all(open_decompressed(io.BytesIO(b"".join(gzip.compress(p) for p in parts)))) == b"".join(parts)
    c = zstandard.ZstdCompressor()
    assert read_all(open_decompressed(io.BytesIO(b"".join(c.compress(p) for p in parts)))) == b"".join(parts)


def test_magic_wins_over_a_wrong_compression_in_the_media_type() -> None:
    # registries serve gzip-labelled plain tars; containerd and docker go by the magic too
    out = open_decompressed(io.BytesIO(PAYLOAD), "application/vnd.oci.image.layer.v1.tar+gzip")
    assert read_all(out) == PAYLOAD


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_corrupt_data_gives_invalid_argument(kind: str) -> None:
    if kind == "gzip":
        blob = gzip.compress(PAYLOAD)
    else:  # zstd detects corruption only through a frame checksum (optional in the format)
        blob = zstandard.ZstdCompressor(write_checksum=True).compress(PAYLOAD)
    corrupt = blob[:100] + bytes(b ^ 0xFF for b in blob[100:400]) + blob[400:]
    with pytest.raises(InvalidArgument, match=f"corrupt {kind}"):
        read_all(open_decompressed(io.BytesIO(corrupt)))


def test_truncated_gzip_gives_invalid_argument() -> None:
    blob = gzip.compress(PAYLOAD)
    with pytest.raises(InvalidArgument, match="corrupt gzip"):
        read_all(open_decompressed(io.BytesIO(blob[: len(blob) // 2])))


def test_truncated_zstd_ends_short() -> None:
    # zstandard's stream reader reports no error for a frame cut short: the layer's diff
    # ID (checked by unpack_layers) and the blob digest (checked by the content store) do
    blob = zstandard.ZstdCompressor().compress(PAYLOAD)
    assert len(read_all(open_decompressed(io.BytesIO(blob[: len(blob) // 2])))) < len(PAYLOAD)


@pytest.mark.parametrize("level", [None, 1, 3, 6, 9])
def test_gzip_compressor_round_trips_with_the_stdlib(level: int | None) -> None:
    sink = io.BytesIO()
    with open_compressor(sink, Compression.GZIP, level) as w:
        for i in range(0, len(PAYLOAD), 100_000):
            w.write(PAYLOAD[i:i + 100_000])
    assert not sink.closed
    assert gzip.decompress(sink.getvalue()) == PAYLOAD


def test_zstd_and_plain_compressors_round_trip() -> None:
    sink = io.BytesIO()
    with open_compressor(sink, Compression.ZSTD) as w:
        w.write(PAYLOAD)
    assert read_all(open_decompressed(io.BytesIO(sink.getvalue()))) == PAYLOAD
    sink = io.BytesIO()
    with open_compressor(sink, Compression.PLAIN) as w:
        w.write(PAYLOAD)
    assert sink.getvalue() == PAYLOAD


def test_gzip_levels_pick_a_zlib_compatible_module() -> None:
    for level in range(10):
        mod = gzip_module(level)
        c = mod.compressobj(level, mod.DEFLATED, 31)
        assert zlib.decompress(c.compress(b"abc") + c.flush(), 31) == b"abc"
    with pytest.raises(InvalidArgument):
        gzip_module(12)
