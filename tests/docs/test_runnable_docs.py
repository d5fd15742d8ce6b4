"""The commands README.md and docs/*.md tell a user to run, run against the real thing.

Each document's runnable blocks (docs/contributing.md#runnable-docs) run in
order in their own directory: a real ``statekeeper serve`` started by the
document itself, real Terraform, and the session's moto server for documents
flagged ``aws``. A block marked ``pending=BRANCH`` must still fail; when it
passes, the mark is stale and the test says so.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from statekeeper.testing.docs import (
    S3_BACKEND_CONFIG,
    SYSTEM_TOOLS,
    BlockFailure,
    DocRun,
    doc_flags,
    runnable_blocks,
)
from statekeeper.testing.processes import MotoServer

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = [doc for doc in DOCS if runnable_blocks(doc)]


def test_the_tools_the_docs_use_are_installed() -> None:
    """A missing system tool fails here, by name, rather than as a doc divergence."""
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join([venv_bin, os.environ.get("PATH", "")])
    missing = [tool for tool in (*SYSTEM_TOOLS, "aws") if shutil.which(tool, path=path) is None]
    assert not missing, f"install {missing} (apt-get install curl jq openssl; aws: pip)"


def test_the_docs_have_runnable_blocks() -> None:
    """The harness is not vacuous: the README's tour and the AWS pages are in it."""
    names = {doc.name for doc in RUNNABLE}
    assert {"README.md", "operations.md", "cli.md"} <= names


@pytest.mark.terraform
@pytest.mark.parametrize("doc", RUNNABLE, ids=lambda d: d.name)
def test_documented_commands_do_what_the_docs_show(
    doc: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    markdown = doc.read_text()
    env: dict[str, str] = {}
    if "aws" in doc_flags(markdown):
        moto: MotoServer = request.getfixturevalue("moto_server")
        moto.reset()
        env = {**moto.env(), S3_BACKEND_CONFIG: _s3_backend_flags()}
    run = DocRun(tmp_path / "work", env)
    failures: list[str] = []
    try:
        for block in runnable_blocks(doc, markdown):
            try:
                run.run(block)
                error = None
            except BlockFailure as exc:
                error = str(exc)
            if error is not None and block.pending is None:
                pytest.fail(error, pytrace=False)
            if error is None and block.pending is not None:
                failures.append(
                    f"{block.where} passes now: remove pending={block.pending} from its marker"
                )
    finally:
        run.close()
    assert not failures, "\n".join(failures)


def _s3_backend_flags() -> str:
    """What a backend "s3" block needs to reach moto instead of AWS; the endpoints
    come from AWS_ENDPOINT_URL."""
    settings = [
        "use_path_style=true",
        "skip_credentials_validation=true",
        "skip_requesting_account_id=true",
        "skip_metadata_api_check=true",
    ]
    return " ".join(f"-backend-config={s}" for s in settings)
