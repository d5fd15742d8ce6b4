"""The ``backend "s3"`` block bootstrap prints, fitted to the Terraform that will read it.

How Terraform's s3 backend locks changed between releases:

- before 1.10 it locks with the DynamoDB table only (``dynamodb_table``), and
  keeps the state's MD5 digest in the same table;
- 1.10 adds S3 lock files (``use_lockfile``, conditional writes); with both
  set it takes both locks;
- from 1.11 ``dynamodb_table`` is deprecated: ``terraform init`` warns
  ``Deprecated Parameter`` for every block that sets it.

So the block for 1.11 and later locks with the lock file only, 1.10 takes both,
and older clients use the table. Clients of different kinds sharing one state
must all take one common lock, so a mixed fleet that includes clients older
than 1.10 must set ``dynamodb_table`` everywhere; the comment printed inside
the block says so.
"""

from __future__ import annotations

import re
import textwrap

from statekeeper.awssetup.context import Target
from statekeeper.errors import BadRequest
from statekeeper.terraform.layout import LOCK_FILE_SUFFIX

__all__ = [
    "CURRENT_TERRAFORM",
    "KEY_PLACEHOLDER",
    "backend_block",
    "parse_terraform_version",
]

#: The state key the printed backend block names; one key per state.
KEY_PLACEHOLDER = "project/terraform.tfstate"
#: The Terraform release the block is written for unless told otherwise.
CURRENT_TERRAFORM = "1.15"
LOCKFILE_SINCE = (1, 10)
DYNAMODB_DEPRECATED_SINCE = (1, 11)

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+][0-9A-Za-z.-]+)?")


def parse_terraform_version(text: str) -> tuple[int, int]:
    """``1.9``, ``1.10.5`` or ``v1.15.0`` as (major, minor)."""
    m = _VERSION.fullmatch(text.strip())
    if m is None:
        raise BadRequest(
            f"--terraform-version {text!r} is not a Terraform version; write it like 1.9, "
            f"1.10.5 or {CURRENT_TERRAFORM}"
        )
    return int(m.group(1)), int(m.group(2))


def _comment(target: Target, version: tuple[int, int]) -> str:
    table = target.table
    shown = f"Terraform {version[0]}.{version[1]}"
    if table is None:
        return f"{shown} locks with a lock file next to the state (<key>{LOCK_FILE_SUFFIX})."
    if version >= DYNAMODB_DEPRECATED_SINCE:
        return (
            f"{shown} locks with a lock file next to the state (<key>{LOCK_FILE_SUFFIX}); "
            "it deprecates DynamoDB locking, so dynamodb_table is left out. "
            f"The table {table} is kept for "
            "clients older than 1.10: if any share this state, every client must also set "
            f'dynamodb_table = "{table}", to take one common lock and keep the digest '
            "current (print that block with --terraform-version 1.10)."
        )
    if version >= LOCKFILE_SINCE:
        return (
            f"{shown} takes both locks: the lock file (<key>{LOCK_FILE_SUFFIX}) and the "
            f"DynamoDB item in {table} with the state's digest, so it shares this state "
            "safely with clients older than 1.10, which lock with the table only. "
            "Terraform 1.11 and later warn that dynamodb_table is deprecated."
        )
    return (
        f"{shown} locks with the DynamoDB table only (lock files came in 1.10). Newer "
        f'clients sharing this state must set dynamodb_table = "{table}" too.'
    )


def backend_block(target: Target, terraform_version: str = CURRENT_TERRAFORM) -> str:
    """The ``terraform { backend "s3" { … } }`` block for this bucket and table,
    free of warnings for ``terraform_version``."""
    version = parse_terraform_version(terraform_version)
    if target.table is None and version < LOCKFILE_SINCE:
        raise BadRequest(
            f"Terraform {terraform_version} cannot lock with S3 lock files (they came in "
            "1.10): bootstrap with a DynamoDB table (--table) instead of --lockfile"
        )
    rows: list[tuple[str, str]] = [
        ("bucket", f'"{target.bucket}"'),
        ("key", f'"{KEY_PLACEHOLDER}"'),
        ("region", f'"{target.region}"'),
        ("encrypt", "true"),
    ]
    if target.kms_key:
        rows.append(("kms_key_id", f'"{target.kms_key}"'))
    if version >= LOCKFILE_SINCE:
        rows.append(("use_lockfile", "true"))
    if target.table is not None and version < DYNAMODB_DEPRECATED_SINCE:
        rows.append(("dynamodb_table", f'"{target.table}"'))
    width = max(len(name) for name, _ in rows)
    lines = [f"    {name.ljust(width)} = {value}" for name, value in rows]
    comment = textwrap.wrap(
        _comment(target, version),
        width=80,
        initial_indent="    # ",
        subsequent_indent="    # ",
        break_long_words=False,
        break_on_hyphens=False,
    )
    return 'terraform {\n  backend "s3" {\n' + "\n".join(comment + lines) + "\n  }\n}\n"
