"""Valid Terraform state documents of any size, cheap to re-serial.

The serial sits at a fixed offset, padded with JSON whitespace, so a benchmark
can bump it in place without re-serializing a 500 MB document.
"""

from __future__ import annotations

import json
import re
import uuid

__all__ = ["SERIAL_WIDTH", "make_state", "read_serial", "set_serial"]

SERIAL_WIDTH = 12
_HEAD = '{"version":4,"terraform_version":"1.15.0","serial":'
_SERIAL_AT = len(_HEAD)
_SERIAL_RE = re.compile(rb'"serial":\s*(\d+)')

_INSTANCE = (
    '{{"mode":"managed","type":"terraform_data","name":"r{i}",'
    '"provider":"provider[\\"terraform.io/builtin/terraform\\"]",'
    '"instances":[{{"schema_version":0,"attributes":{{"id":"{id}","input":{{"value":"{pad}",'
    '"type":"string"}},"output":{{"value":"{pad}","type":"string"}},"triggers_replace":null}},'
    '"sensitive_attributes":[],"identity_schema_version":0}}]}}'
)


def make_state(size: int, serial: int = 1, lineage: str | None = None) -> bytearray:
    """A Terraform v4 state of about ``size`` bytes (at least one resource)."""
    lineage = lineage or str(uuid.uuid4())
    head = (
        _HEAD
        + str(serial).ljust(SERIAL_WIDTH)
        + f',"lineage":"{lineage}","outputs":{{"n":{{"value":"x","type":"string"}}}},'
        + '"resources":['
    )
    tail = '],"check_results":null}\n'
    pad = "p" * 300
    one = len(_INSTANCE.format(i=0, id=uuid.UUID(int=0), pad=pad)) + 1
    count = max(1, (size - len(head) - len(tail)) // one)
    body = ",".join(_INSTANCE.format(i=i, id=uuid.UUID(int=i), pad=pad) for i in range(count))
    return bytearray((head + body + tail).encode())


def set_serial(doc: bytearray, serial: int) -> None:
    """Change the serial of a document made by :func:`make_state`, in place."""
    doc[_SERIAL_AT : _SERIAL_AT + SERIAL_WIDTH] = str(serial).ljust(SERIAL_WIDTH).encode()


def read_serial(data: bytes) -> int:
    """The serial of a state whose ``serial`` key comes early in the document."""
    m = _SERIAL_RE.search(data, 0, 4096)
    if m is None:
        raise ValueError("no serial near the start of the state")
    return int(m.group(1))


if __name__ == "__main__":  # a quick self-check
    d = make_state(100_000, 7)
    set_serial(d, 12345)
    parsed = json.loads(d)
    assert parsed["serial"] == 12345 and read_serial(bytes(d)) == 12345, parsed["serial"]
    print(len(d), len(parsed["resources"]))
