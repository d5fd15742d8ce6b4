"""Doctor's view of statekeeper's encryption at rest: which states are still plaintext.

A state written through a server with a master key carries the ``sk-enc``
metadata of :mod:`statekeeper.storage.encrypting`; anything else (Terraform's
own writes, writes from before encryption was switched on) is plaintext that
anyone with ``s3:GetObject`` can read. No key is needed to tell them apart.
"""

from __future__ import annotations

from statekeeper.awssetup.checks import Finding, Status, aws_call
from statekeeper.awssetup.context import Aws, Target
from statekeeper.awssetup.inventory import Inventory
from statekeeper.storage.encrypting import META_ENC

__all__ = ["check_encryption"]

CHECK = "states.encryption"


def check_encryption(aws: Aws, target: Target, inventory: Inventory) -> list[Finding]:
    s3 = aws.s3(target.region)
    plaintext: list[str] = []
    sealed = 0
    for key in inventory.state_keys():
        if key not in inventory.objects:
            continue  # a digest or lock without a state object: the digest probe reports it
        head = aws_call(
            "s3:GetObject",
            f"s3://{target.bucket}/{key}",
            lambda key=key: s3.head_object(Bucket=target.bucket, Key=key),
        )
        if META_ENC in head.get("Metadata", {}):
            sealed += 1
        else:
            plaintext.append(key)
    if not sealed:
        return [
            Finding(
                CHECK,
                Status.SKIP,
                f"encryption at rest is not in use ({len(plaintext)} state(s) in "
                'plaintext, as Terraform\'s backend "s3" writes them)',
            )
        ]
    if not plaintext:
        return [Finding(CHECK, Status.PASS, f"all {sealed} state(s) are encrypted at rest")]
    return [
        Finding(
            CHECK,
            Status.WARN,
            "stored in plaintext while other states are encrypted",
            fix="write it once through a statekeeper server that has the master key "
            "(e.g. the next terraform apply through it) to store it encrypted",
            subject=key,
        )
        for key in plaintext
    ]
