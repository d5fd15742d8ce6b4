"""The processes benchmarks talk to: statekeeper on SQLite or AWS, the HTTP floor, moto."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness import BENCH, SRC  # noqa: F401 - puts src/ on sys.path

from statekeeper.testing.processes import (
    MotoServer,
    StatekeeperServer,
    _Process,
    free_port,
    wait_for_http,
)

__all__ = [
    "FloorServer",
    "aws_backend",
    "moto_server",
    "serve_tree",
    "statekeeper_on_aws",
    "statekeeper_server",
]

_SERVE = ("-m", "statekeeper", "serve", "--port")


class FloorServer(_Process):
    """``bench/floor_app.py`` under uvicorn: the protocol with no storage behind it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"floor-{self.port}.log"

    def start(self) -> FloorServer:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "floor_app.py"), str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for_http(self.url + "/healthz", self.proc)
        return self


@contextmanager
def statekeeper_server(
    workdir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[StatekeeperServer]:
    """A real ``statekeeper serve`` (SQLite in ``workdir`` unless ``args`` name a store)."""
    server = StatekeeperServer(workdir, *args, env=env).start()
    try:
        yield server
    finally:
        server.stop()


def serve_tree(
    tree: str, workdir: Path, *argv: str, timeout: float = 60
) -> tuple[subprocess.Popen[bytes], int]:
    """``statekeeper serve`` from a source tree, for the A/B tools: ``tree`` is
    ``SRC_DIR[;VAR=VALUE...]`` (``PYTHONPATH=SRC_DIR``, each ``VAR=VALUE`` added to its
    environment); ``argv`` replaces ``-m statekeeper serve`` (e.g. a floor app's
    script). Returns the process, answering ``/healthz``, and its port."""
    port = free_port()
    src, *settings = tree.split(";")
    env = {**os.environ, "STATEKEEPER_LOG_FORMAT": "text", "PYTHONPATH": src}
    env.update(setting.partition("=")[::2] for setting in settings)
    command = [*(argv or _SERVE), str(port)]
    with (workdir / "server.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, *command], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", proc, timeout)
    except RuntimeError as exc:  # it died, or did not answer in time
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{exc}\n{(workdir / 'server.log').read_text()}") from None
    return proc, port


@contextmanager
def floor_server(workdir: Path) -> Iterator[FloorServer]:
    server = FloorServer(workdir).start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def moto_server(workdir: Path) -> Iterator[MotoServer]:
    server = MotoServer(workdir).start()
    try:
        yield server
    finally:
        server.stop()


def aws_backend(moto: MotoServer, bucket: str, table: str) -> None:
    """A versioned bucket and a Terraform-style lock table on ``moto``."""
    moto.versioned_bucket(bucket)
    moto.lock_table(table)


@contextmanager
def statekeeper_on_aws(
    workdir: Path, moto: MotoServer, bucket: str, table: str, prefix: str = ""
) -> Iterator[StatekeeperServer]:
    """A real ``statekeeper serve`` keeping states in ``bucket`` (under ``prefix``) and
    locks in ``table``, both on ``moto`` and made by the caller (:func:`aws_backend`)."""
    store = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    args = ("--store", store, "--locks", f"dynamodb://{table}")
    with statekeeper_server(workdir, *args, env=moto.env()) as server:
        yield server
