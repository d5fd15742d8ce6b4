"""A write's body, read once: hashed, validated as a state, and handed to the upload."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING

from statekeeper.errors import InvalidState
from statekeeper.storage.base import Upload
from statekeeper.terraform.statedoc import StateDoc

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from statekeeper.terraform.statestream import StateDocReader

__all__ = ["intake"]


#: Chunks hashed on the request's own thread before a helper thread is worth starting.
_INLINE_CHUNKS = 3


def intake(
    chunks: Iterable[bytes], upload: Upload
) -> tuple[hashlib._Hash, hashlib._Hash, StateDoc | InvalidState]:
    """Read the body once: hash it, validate it, hand it to the upload.

    Hashing and the upload's writes release the GIL, so from the fourth chunk
    on they run on a helper thread while this one validates the same chunk (a
    state of a few MB starts no thread).

    A state found invalid part way is not uploaded further, but the body is
    still read and hashed to its end: a damaged upload (Content-MD5) is
    reported before what the damage made of the document, as when the body
    was read whole first.
    """
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    # Imported here: its patterns cost a CLI's start-up, and only a write reads a state.
    from statekeeper.terraform.statestream import StateDocReader

    reader: StateDocReader | None = StateDocReader()
    refused: InvalidState | None = None
    helper: ThreadPoolExecutor | None = None
    pending: Future[None] | None = None
    seen = 0
    try:
        for chunk in chunks:
            if pending is not None:
                pending.result()
            keep = upload if reader is not None else None
            seen += 1
            if seen <= _INLINE_CHUNKS:
                _digest(md5, sha256, keep, chunk)
            else:
                if helper is None:
                    from concurrent.futures import ThreadPoolExecutor  # only for large bodies

                    helper = ThreadPoolExecutor(1, thread_name_prefix="statekeeper-digest")
                pending = helper.submit(_digest, md5, sha256, keep, chunk)
            if reader is not None:
                try:
                    reader.feed(chunk)
                except InvalidState as exc:
                    reader, refused = None, exc
        if pending is not None:
            pending.result()
    finally:
        if helper is not None:
            helper.shutdown(wait=True)
    if reader is not None:
        try:
            return md5, sha256, reader.finish()
        except InvalidState as exc:
            refused = exc
    assert refused is not None
    return md5, sha256, refused


def _digest(md5: hashlib._Hash, sha256: hashlib._Hash, upload: Upload | None, chunk: bytes) -> None:
    md5.update(chunk)
    sha256.update(chunk)
    if upload is not None:
        upload.write(chunk)
