"""Profile ``statekeeper serve`` under the lock cycle (the tool behind findings.md's "Lock cycle").

    python bench/profile_locks.py [CLIENTS] [SECONDS] [--contended] [--wall] [--aws]

Runs ``serve`` on a fresh SQLite store (``--aws``: on S3 + DynamoDB in a moto
server process) in this process under yappi (every
thread: the event loop and the thread pool), drives it from a child process
with ``bench_locks.run_http`` for SECONDS, then prints the cycle rate and the
top functions by CPU time (``--wall``: wall-clock time). py-spy is not
installed on the shared machine; yappi is (``pip install yappi``).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from harness import BENCH

from statekeeper.testing.processes import free_port


def main() -> None:
    import yappi

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    clients = int(args[0]) if args else 1
    seconds = float(args[1]) if len(args) > 1 else 5.0
    contended = "--contended" in sys.argv
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="sk-profile-")
    os.chdir(workdir)
    os.environ.setdefault("STATEKEEPER_LOG_FORMAT", "text")
    client = (
        "import json, sys; sys.path.insert(0, sys.argv[1]);"
        "from bench_locks import run_http;"
        "print(json.dumps(run_http(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == '1',"
        " float(sys.argv[5]), 'profile')))"
    )

    def drive() -> None:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yappi.clear_stats()
        out = subprocess.run(
            [
                *(sys.executable, "-c", client, str(BENCH), str(port), str(clients)),
                *("1" if contended else "0", str(seconds)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        summary = json.loads(out.stdout)
        summary.pop("errors")
        print("cycle:", summary, file=sys.stderr)
        yappi.stop()
        os.kill(os.getpid(), signal.SIGINT)

    store: list[str] = []
    if "--aws" in sys.argv:
        from servers import aws_backend

        from statekeeper.testing.processes import MotoServer

        moto = MotoServer(Path(workdir)).start()
        atexit.register(moto.stop)
        aws_backend(moto, "profile", "profile-locks")
        os.environ.update(moto.env())
        store = ["--store", "s3://profile", "--locks", "dynamodb://profile-locks"]
    # PROFILE_LOG_LEVEL=info with STATEKEEPER_LOG_FORMAT=json: the cost of the log lines.
    level = os.environ.get("PROFILE_LOG_LEVEL", "warning")
    yappi.set_clock_type("wall" if "--wall" in sys.argv else "cpu")
    yappi.start(builtins=True)
    threading.Thread(target=drive, daemon=True).start()
    from statekeeper.cli import app

    try:
        app(
            ["serve", "--port", str(port), "--log-level", level, *store],
            standalone_mode=False,
        )
    except SystemExit:
        pass
    stats = yappi.get_func_stats()
    total = sum(t.ttot for t in yappi.get_thread_stats())
    print(f"seconds (clock type), all threads: {total:.3f}", file=sys.stderr)
    columns = {0: ("name", 100), 1: ("ncall", 9), 2: ("tsub", 8), 3: ("ttot", 8), 4: ("tavg", 8)}
    stats.sort("tsub")
    print("by own time:", file=sys.stderr)
    stats.print_all(out=sys.stderr, columns=columns, limit=int(os.environ.get("TOP", "40")))
    # PROFILE_MODULES: which modules' functions to list by total time (substrings).
    wanted = os.environ.get("PROFILE_MODULES", "statekeeper,starlette").split(",")
    print("by total time, the functions of", wanted, file=sys.stderr)
    ours = [s for s in stats if any(w in s.module for w in wanted)]
    for stat in sorted(ours, key=lambda s: -s.ttot)[: int(os.environ.get("TOP", "40")) * 2]:
        where = f"{stat.module.rsplit('/src/', 1)[-1]}:{stat.lineno} {stat.name}"[-100:]
        print(f"{where:100} {stat.ncall:7} {stat.tsub:8.3f} {stat.ttot:8.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
