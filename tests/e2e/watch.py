"""Looking at a running server and Terraform from the side: its lock table, state, processes."""

from __future__ import annotations

import os
import pwd
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from statekeeper.app import Services
from statekeeper.settings import load_settings
from statekeeper.terraform.lockinfo import LockInfo
from statekeeper.terraform.names import StateName
from statekeeper.testing.processes import StatekeeperServer

T = TypeVar("T")


def terraform_who() -> str:
    """What Terraform puts in LockInfo.Who: ``<os user>@<hostname>``."""
    return f"{pwd.getpwuid(os.getuid()).pw_name}@{socket.gethostname()}"


@contextmanager
def services_of(server: StatekeeperServer) -> Iterator[Services]:
    """The server's own embedded store, opened alongside it (SQLite allows that)."""
    services = Services.build(load_settings({"data_dir": server.workdir / ".statekeeper"}, env={}))
    try:
        yield services
    finally:
        services.close()


def lock_of(server: StatekeeperServer, name: str) -> LockInfo | None:
    with services_of(server) as services:
        return services.locks.read(StateName(name))


def get_state(server: StatekeeperServer, name: str) -> bytes | None:
    """The server's answer to Terraform's GET: the bytes, or None for 404."""
    try:
        with urllib.request.urlopen(server.state_url(name), timeout=30) as response:
            data: bytes = response.read()
            return data
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """Poll ``probe`` until it returns something (not a timing assertion: a guard)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what} after {timeout}s")


def running_in_group(proc: subprocess.Popen[str], command: str) -> bool:
    """Whether a process named ``command`` runs in ``proc``'s process group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # it ended while we looked
        comm = text[text.index("(") + 1 : text.rindex(")")]
        pgrp = int(text[text.rindex(")") + 2 :].split()[2])
        if comm == command and pgrp == proc.pid:
            return True
    return False
