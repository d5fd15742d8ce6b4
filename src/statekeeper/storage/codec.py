"""Compression at rest for the embedded store: how a blob is encoded in its row.

Each ``objects`` row of the SQLite store names its codec: ``NULL`` (the bytes
as written; every row written before compression existed) or ``zstd``. A
reader decodes by the row's own marker, so compressed and plain rows live side
by side and turning compression off never strands a row. The state's bytes,
size, MD5 and SHA-256 are always those of the decoded bytes: Terraform gets
back exactly what it sent, hashed as it sent it.

A blob is kept compressed only when that saves at least :data:`MIN_SAVING`
of it: an OpenTofu-encrypted state, or a store behind statekeeper's own
encryption, is ciphertext that zstd cannot shrink, and storing it plain keeps
its read free of a pointless decode.

The functions work on whole blobs and on streams alike (:func:`compressor`,
:func:`decompressor`), so a writer that streams a large body into the row
with incremental blob I/O compresses as it goes and marks the row the same way.
S3 objects are never encoded: Terraform's own ``backend "s3"`` reads them.
"""

from __future__ import annotations

from typing import Final

import zstandard

from statekeeper.errors import StorageError

__all__ = [
    "CODECS",
    "MIN_SAVING",
    "ZSTD",
    "compressor",
    "decode",
    "decompressor",
    "encode",
    "parse_codec",
]

ZSTD: Final = "zstd"
#: The codecs a store may be told to write with; ``none`` writes plain rows.
CODECS: Final = ("zstd", "none")
#: Keep the compressed form only if it is at least this much smaller.
MIN_SAVING: Final = 0.10
#: zstd level 3 (its default): Terraform states shrink 10-20x at about 300 MB/s;
#: higher levels cost the lock cycle more time than they save space.
LEVEL: Final = 3


def parse_codec(text: str) -> str | None:
    """The store option's value as a codec name (None: write plain rows)."""
    value = text.strip().lower()
    if value not in CODECS:
        raise ValueError(f"compression is one of {', '.join(CODECS)}, not {text!r}")
    return None if value == "none" else value


def compressor() -> zstandard.ZstdCompressor:
    """A compressor for one blob (or one stream of a blob); not shared between threads."""
    return zstandard.ZstdCompressor(level=LEVEL, write_content_size=True)


def decompressor() -> zstandard.ZstdDecompressor:
    return zstandard.ZstdDecompressor()


def encode(data: bytes, codec: str | None) -> tuple[bytes, str | None]:
    """The blob to store for ``data`` and its row's codec marker (None: stored plain)."""
    if codec is None or not data:
        return data, None
    packed = compressor().compress(data)
    if len(packed) > len(data) * (1 - MIN_SAVING):
        return data, None
    return packed, codec


def decode(blob: bytes, codec: str | None, size: int) -> bytes:
    """The bytes as written, from a row's blob and codec marker.

    ``size`` is the row's recorded size of the written bytes: a decoded blob
    of any other length is a damaged row, reported rather than served.
    """
    if codec is None:
        return blob
    if codec != ZSTD:
        raise StorageError(
            f"a stored version is encoded with {codec!r}, which this statekeeper cannot "
            "read; upgrade statekeeper"
        )
    try:
        data = decompressor().decompress(blob, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise StorageError(f"a compressed stored version is damaged: {exc}") from exc
    if len(data) != size:
        raise StorageError(
            f"a compressed stored version decoded to {len(data)} bytes, not the {size} written"
        )
    return data
