"""Lost updates: two writers without locks (``-lock=false``) racing on one state.

Each round both read the current state, then write serial+1 with different
content at the same moment. The serial guard must accept exactly one and
refuse the stale one with 409 every time; the refused bytes must never
become a version, and the winner's must be what a reader gets.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from reliability_support import md5_header, record_figures, size, state_doc

from statekeeper.testing.processes import StatekeeperServer

ROUNDS = size(20, 300)


@pytest.mark.timeout(3600)
@pytest.mark.parametrize("servers", [1, 2], ids=["one-server", "two-servers-one-sqlite-file"])
def test_the_stale_writer_is_refused_every_time(
    servers: int, serve: Callable[..., StatekeeperServer], tmp_path: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    started = [serve("--store", db, workdir=tmp_path / f"s{i}") for i in range(servers)]
    urls = [s.state_url("reliability/race.tfstate") for s in started]
    url = urls[0]
    lineage = str(uuid.uuid4())
    first = state_doc(1, lineage, 0)
    with httpx.Client(timeout=60) as setup:
        assert setup.post(url, content=first).status_code == 200

    refused = accepted = 0
    lost: list[int] = []
    barrier = threading.Barrier(2)
    for round_ in range(ROUNDS):
        answers: dict[int, tuple[int, bytes]] = {}

        def writer(
            n: int, round_: int = round_, answers: dict[int, tuple[int, bytes]] = answers
        ) -> None:
            mine = urls[n % len(urls)]
            with httpx.Client(timeout=60) as http:
                doc = json.loads(http.get(mine).content)  # both read before either writes
                barrier.wait()
                data = state_doc(doc["serial"] + 1, lineage, n * 1_000_000 + round_)
                r = http.post(mine, content=data, headers={"Content-MD5": md5_header(data)})
                answers[n] = (r.status_code, data)

        threads = [threading.Thread(target=writer, args=(n,)) for n in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(status for status, _ in answers.values())
        current = httpx.get(url, timeout=60).content
        winners = [data for status, data in answers.values() if status == 200]
        if statuses == [200, 409] and current == winners[0]:
            accepted += 1
            refused += 1
        elif statuses == [200, 200]:
            lost.append(round_)  # the second overwrote the first's serial: a lost update
        else:
            raise AssertionError(f"round {round_}: answers {statuses}, current {current[:200]!r}")

    final = json.loads(httpx.get(url, timeout=60).content)
    record_figures(
        "lost updates (-lock=false race)",
        "sqlite" if servers == 1 else "sqlite, one file",
        len(lost),
        servers=servers,
        clients=2,
        rounds=ROUNDS,
        faults=0,
        notes=f"{refused} stale writes refused with 409, {accepted} accepted, "
        f"final serial {final['serial']}",
    )
    assert not lost, f"rounds where both writes were accepted: {lost}"
    assert final["serial"] == 1 + ROUNDS
