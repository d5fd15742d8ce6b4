"""Run the benchmarks and write ``bench/RESULTS.md``.

python bench/run.py                 # all of them
python bench/run.py locks large     # some; the others' last results are kept
python bench/run.py report          # only re-write RESULTS.md and the charts
BENCH_QUICK=1 python bench/run.py   # small sizes, one repeat (a minute or two)
"""

from __future__ import annotations

import importlib
import sys

from harness import log, machine, save

ORDER = ["startup", "locks", "observability", "large", "terraform", "scale", "inventory"]
ORDER += ["lockpolicy", "history"]
ORDER += ["locks_s3"]


def main(argv: list[str]) -> int:
    names = [a for a in argv if a != "report"]
    unknown = sorted(set(names) - set(ORDER))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(ORDER)}")
        return 2
    if not argv:
        names = ORDER
    if names:
        save("machine", machine())
    for name in names:
        log(f"running {name}")
        module = importlib.import_module(f"bench_{name}")
        save(name, module.run())
    import report

    report.write()
    log("wrote bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
