"""Large states: push and pull throughput, and the server's peak memory.

Each size is pushed (POST with Content-MD5, serial+1) and pulled (GET) on
``statekeeper serve`` (SQLite) and on the HTTP floor app, which keeps the last
body in memory and returns it: the loopback copy of the same bytes. The two
servers run side by side and each repeat pushes and pulls on both in turn,
so a change in the machine's load touches both figures of a ratio alike.
Then eight clients push a 100 MB state each at once to a fresh server, and
the server's peak RSS (VmHWM) is read from /proc.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from harness import OUT, env_int, env_list, fresh, log, median, vm_hwm_kib, vm_rss_kib
from rawhttp import Connection, content_md5
from servers import floor_server, statekeeper_server
from statedocs import make_state, set_serial

MB = 1024 * 1024


async def _push(port: int, name: str, doc: bytearray) -> float:
    conn = Connection("127.0.0.1", port)
    headers = {"Content-Type": "application/json", "Content-MD5": content_md5(doc)}
    start = time.perf_counter()
    r = await conn.request("POST", f"/state/{name}", doc, headers)
    elapsed = time.perf_counter() - start
    await conn.close()
    if r.status != 200:
        raise RuntimeError(f"push of {len(doc)} bytes: HTTP {r.status} {r.body[:300]!r}")
    return elapsed


async def _pull(port: int, name: str, size: int) -> float:
    conn = Connection("127.0.0.1", port)
    start = time.perf_counter()
    r = await conn.request("GET", f"/state/{name}")
    elapsed = time.perf_counter() - start
    await conn.close()
    if r.status != 200 or len(r.body) != size:
        raise RuntimeError(f"pull: HTTP {r.status}, {len(r.body)} bytes instead of {size}")
    return elapsed


def _throughput(ports: list[int], doc: bytearray, repeats: int) -> list[tuple[float, float]]:
    """Median push and pull MB/s of ``doc`` (its serial bumped per push) on each
    server, the servers taking turns within each repeat."""
    name = f"large/{uuid.uuid4().hex[:8]}"
    push: list[list[float]] = [[] for _ in ports]
    pull: list[list[float]] = [[] for _ in ports]
    for i in range(repeats):
        set_serial(doc, i + 1)
        for at, port in enumerate(ports):
            push[at].append(len(doc) / MB / asyncio.run(_push(port, name, doc)))
            pull[at].append(len(doc) / MB / asyncio.run(_pull(port, name, len(doc))))
    return [(median(a), median(b)) for a, b in zip(push, pull, strict=True)]


def _concurrent_push(port: int, pid: int, clients: int, size_mb: int) -> dict[str, Any]:
    docs = [make_state(size_mb * MB, 1) for _ in range(clients)]
    before = vm_rss_kib(pid)

    async def main() -> list[float]:
        return await asyncio.gather(*(_push(port, f"rss/{i}", doc) for i, doc in enumerate(docs)))

    start = time.perf_counter()
    times = asyncio.run(main())
    wall = time.perf_counter() - start
    peak = vm_hwm_kib(pid)
    return {
        "clients": clients,
        "state_mb": round(len(docs[0]) / MB, 1),
        "rss_before_mib": round(before / 1024, 1),
        "peak_rss_mib": round(peak / 1024, 1),
        "peak_over_total_bytes": round((peak - before) * 1024 / sum(len(d) for d in docs), 2),
        "wall_s": round(wall, 2),
        "slowest_push_s": round(max(times), 2),
    }


def run() -> dict[str, Any]:
    sizes = env_list("BENCH_LARGE_MB", [1, 10, 100, 500], [1, 10])
    repeats = env_int("BENCH_REPEATS", 3, 1)
    rss_clients = env_int("BENCH_RSS_CLIENTS", 8, 2)
    rss_mb = env_int("BENCH_RSS_MB", 100, 10)
    work = OUT / "large"
    rows = []
    for size in sizes:
        doc = make_state(size * MB, 1)
        with (
            floor_server(work / "floor") as floor,
            statekeeper_server(fresh(work / f"sk-{size}")) as server,
        ):
            (f_push, f_pull), (s_push, s_pull) = _throughput(
                [floor.port, server.port], doc, repeats
            )
            peak = vm_hwm_kib(server.proc.pid)
        row = {
            "size_mb": size,
            "bytes": len(doc),
            "floor_push_mb_s": round(f_push, 1),
            "floor_pull_mb_s": round(f_pull, 1),
            "push_mb_s": round(s_push, 1),
            "pull_mb_s": round(s_pull, 1),
            "push_vs_floor": round(s_push / f_push, 3),
            "pull_vs_floor": round(s_pull / f_pull, 3),
            "server_peak_rss_mib": round(peak / 1024, 1),
            "peak_rss_over_size": round(peak * 1024 / len(doc), 2),
        }
        log(f"large {size} MB: {row}")
        rows.append(row)
        del doc
    with statekeeper_server(fresh(work / "rss")) as server:
        rss = _concurrent_push(server.port, server.proc.pid, rss_clients, rss_mb)
    log(f"large concurrent push: {rss}")
    return {
        "params": {
            "sizes_mb": sizes,
            "repeats": repeats,
            "rss_clients": rss_clients,
            "rss_state_mb": rss_mb,
        },
        "rows": rows,
        "concurrent": rss,
    }


if __name__ == "__main__":
    from harness import save

    save("large", run())
