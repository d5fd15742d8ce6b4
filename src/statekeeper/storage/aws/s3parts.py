"""Large bodies of an S3 store: up in parts, down in ranges, in parallel.

A body above :data:`PART_SIZE` is uploaded as a multipart upload whose parts
go up concurrently, and read as ranges fetched concurrently into one buffer.
The ranges are pinned to the first answer's ETag (and version), so a read
never mixes two writes.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from statekeeper.storage.aws import _boto
from statekeeper.storage.aws._boto import S3Bucket

__all__ = ["PART_SIZE", "md5_b64", "put_in_parts", "read_rest"]

#: Bodies above this go up in parts and come down in ranges.
PART_SIZE = 8 * 1024**2


def md5_b64(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def put_in_parts(
    where: S3Bucket,
    pool: ThreadPoolExecutor,
    full: str,
    data: bytes,
    metadata: Mapping[str, str],
    condition: dict[str, str],
    raced: Callable[[Exception], Any],
) -> Any:
    """Upload ``data`` to ``full`` in parts sent in parallel; ``condition`` applies on
    completion (``raced`` handles its refusal). Any error aborts the upload."""
    client = where.client
    upload = where.call(
        "s3:PutObject",
        full,
        client.create_multipart_upload,
        Key=full,
        ContentType="application/json",
        Metadata=dict(metadata),
        **where.sse_args(),
    )
    upload_id = upload["UploadId"]
    view = memoryview(data)

    def part(number: int) -> dict[str, Any]:
        chunk = view[(number - 1) * PART_SIZE : number * PART_SIZE]
        resp = where.call(
            "s3:PutObject",
            full,
            client.upload_part,
            Key=full,
            UploadId=upload_id,
            PartNumber=number,
            Body=bytes(chunk),
            ContentMD5=md5_b64(chunk),
        )
        return {"PartNumber": number, "ETag": resp["ETag"]}

    count = -(-len(data) // PART_SIZE)
    try:
        parts = list(pool.map(part, range(1, count + 1)))
        return where.call(
            "s3:PutObject",
            full,
            client.complete_multipart_upload,
            raced,
            Key=full,
            UploadId=upload_id,
            MultipartUpload={"Parts": parts},
            **condition,
        )
    except BaseException:
        # Do not leave billed parts behind; the original error is what matters.
        try:
            client.abort_multipart_upload(Bucket=where.bucket, Key=full, UploadId=upload_id)
        except _boto.AWS_ERRORS:
            pass
        raise


def read_rest(
    where: S3Bucket,
    pool: ThreadPoolExecutor,
    full: str,
    first: dict[str, Any],
    total: int,
    pin: dict[str, str],
) -> bytes | None:
    """The whole body: the first range is in hand, the others come in parallel.

    Later ranges are pinned to the first answer's ETag (and version), so
    the parts cannot mix two writes. One buffer of the final size is filled
    in place; None means the object changed under us.
    """
    head = first["Body"].read()
    if total <= len(head):
        return bytes(head)
    buffer = bytearray(total)
    buffer[: len(head)] = head
    view = memoryview(buffer)
    if first.get("VersionId") and not pin:
        pin = {"VersionId": first["VersionId"]}

    def changed(exc: Exception) -> None:
        if _boto.error_code(exc) in ("PreconditionFailed", "NoSuchKey", "InvalidRange"):
            return None
        where.translate(exc, "s3:GetObject", full)

    def fetch(start: int) -> bool:
        end = min(start + PART_SIZE, total) - 1
        resp = where.call(
            "s3:GetObject",
            full,
            where.client.get_object,
            changed,
            Key=full,
            Range=f"bytes={start}-{end}",
            IfMatch=first["ETag"],
            **pin,
        )
        if resp is None:
            return False
        offset = start
        for chunk in resp["Body"].iter_chunks(1024**2):
            view[offset : offset + len(chunk)] = chunk
            offset += len(chunk)
        return offset == end + 1

    complete = all(pool.map(fetch, range(len(head), total, PART_SIZE)))
    return bytes(buffer) if complete else None
