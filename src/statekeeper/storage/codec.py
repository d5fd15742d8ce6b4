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

A large state (kept in the ``object_pieces`` table, a row per piece) is one
zstd stream cut into pieces: :func:`encode_stream` compresses the written
bytes as they come and :func:`decode_stream` gives them back a piece at a time,
so neither holds the whole state. The marker is on the ``objects`` row, as for
a small state. Whether a stream is worth compressing is decided on its first
piece (ciphertext is incompressible throughout), so it is written only once.
S3 objects are never encoded: Terraform's own ``backend "s3"`` reads them.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Final, TypeVar

from statekeeper.errors import StorageError

if TYPE_CHECKING:
    # Imported where a blob is encoded or decoded: it costs a CLI's start-up.
    import zstandard

__all__ = [
    "CODECS",
    "MIN_SAVING",
    "ZSTD",
    "compressor",
    "decode",
    "decode_stream",
    "decompressor",
    "encode",
    "encode_stream",
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
    """A new compressor, for one stream of a blob (the stream keeps it busy until its end)."""
    import zstandard

    return zstandard.ZstdCompressor(level=LEVEL, write_content_size=True)


def decompressor() -> zstandard.ZstdDecompressor:
    """A new decompressor, for one stream of a blob."""
    import zstandard

    return zstandard.ZstdDecompressor()


_Context = TypeVar("_Context")

#: This thread's compressor and decompressor for whole blobs: making a context costs
#: as much as compressing a small state (~15 us), and a context serves one call at a
#: time, so each thread keeps its own.
_contexts = threading.local()


def _kept(make: Callable[[], _Context]) -> _Context:
    """This thread's context made by ``make`` (made on the thread's first call)."""
    made: _Context | None = getattr(_contexts, make.__name__, None)
    if made is None:
        made = make()
        setattr(_contexts, make.__name__, made)
    return made


def encode(data: bytes, codec: str | None) -> tuple[bytes, str | None]:
    """The blob to store for ``data`` and its row's codec marker (None: stored plain)."""
    if codec is None or not data:
        return data, None
    packed = _kept(compressor).compress(data)
    if len(packed) > len(data) * (1 - MIN_SAVING):
        return data, None
    return packed, codec


def encode_stream(
    chunks: Iterable[bytes | memoryview], codec: str | None, size: int, piece: int
) -> tuple[Iterator[bytes | memoryview], str | None]:
    """The pieces to store for ``size`` bytes arriving as ``chunks``, and the row's marker.

    Compressed, every piece but the last holds exactly ``piece`` bytes of the
    one zstd stream; plain (no codec, or a first chunk that does not shrink by
    :data:`MIN_SAVING`), the chunks themselves.
    """
    chunks = iter(chunks)
    first = next(chunks, b"")
    started = start_stream(first, codec, size)
    if started is None:
        return _chain(first, chunks), None
    stream, head = started
    return _cut(_compressed(head, stream, chunks), piece), codec


def start_stream(
    first: bytes | memoryview, codec: str | None, size: int = -1
) -> tuple[zstandard.ZstdCompressionObj, bytes] | None:
    """A stream of ``size`` bytes (-1: not known yet) begun with ``first``, and
    its output so far; None when it is to be stored plain (no codec, nothing,
    or a ``first`` that does not shrink by :data:`MIN_SAVING`)."""
    if codec is None or not first:
        return None
    import zstandard

    stream = compressor().compressobj(size=size)
    head = stream.compress(first) + stream.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    if len(head) > len(first) * (1 - MIN_SAVING):
        return None
    return stream, head


def _chain(
    first: bytes | memoryview, rest: Iterator[bytes | memoryview]
) -> Iterator[bytes | memoryview]:
    if first:
        yield first
    yield from rest


def _compressed(
    head: bytes, stream: zstandard.ZstdCompressionObj, rest: Iterator[bytes | memoryview]
) -> Iterator[bytes]:
    yield head
    for chunk in rest:
        yield stream.compress(chunk)
    yield stream.flush()


def _cut(parts: Iterator[bytes], piece: int) -> Iterator[bytes]:
    buffer = bytearray()
    for part in parts:
        buffer += part
        while len(buffer) >= piece:
            yield bytes(buffer[:piece])
            del buffer[:piece]
    if buffer:
        yield bytes(buffer)


def decode_stream(chunks: Iterable[bytes], codec: str | None, size: int) -> Iterator[bytes]:
    """The bytes as written, a piece at a time, from the stored pieces of one version.

    Each decoded piece is at most as large as the stored pieces' own reads, so
    a highly compressible state is not inflated whole in memory.
    """
    if codec is None:
        yield from chunks
        return
    _check_known(codec)
    import zstandard

    total = 0
    try:
        with decompressor().stream_reader(io.BufferedReader(_ChunkReader(chunks))) as reader:
            while out := reader.read(READ):
                total += len(out)
                if total > size:
                    break
                yield out
    except zstandard.ZstdError as exc:
        raise StorageError(f"a compressed stored version is damaged: {exc}") from exc
    if total != size:
        raise StorageError(
            f"a compressed stored version decoded to {total} bytes, not the {size} written"
        )


#: How many decoded bytes :func:`decode_stream` yields at a time.
READ: Final = 1 << 20


class _ChunkReader(io.RawIOBase):
    """An iterator of byte strings read as a file (what zstd's stream reader takes)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = memoryview(chunk)
        n = min(len(buffer), len(self._rest))
        buffer[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def _check_known(codec: str) -> None:
    if codec != ZSTD:
        raise StorageError(
            f"a stored version is encoded with {codec!r}, which this statekeeper cannot "
            "read; upgrade statekeeper"
        )


def decode(blob: bytes, codec: str | None, size: int) -> bytes:
    """The bytes as written, from a row's blob and codec marker.

    ``size`` is the row's recorded size of the written bytes: a decoded blob
    of any other length is a damaged row, reported rather than served.
    """
    if codec is None:
        return blob
    _check_known(codec)
    import zstandard

    try:
        data = _kept(decompressor).decompress(blob, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise StorageError(f"a compressed stored version is damaged: {exc}") from exc
    if len(data) != size:
        raise StorageError(
            f"a compressed stored version decoded to {len(data)} bytes, not the {size} written"
        )
    return data
