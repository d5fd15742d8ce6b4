"""Lock cycle on S3 + DynamoDB (moto), 1 client: statekeeper against Terraform's own calls.

``statekeeper serve --store s3://… --locks dynamodb://…`` doing LOCK → GET →
POST (100 KB) → UNLOCK over HTTP, against the requests Terraform's own
``backend "s3"`` makes for the same cycle, sent straight to the same moto.

moto's latency swings from second to second on a shared machine (a 7-call
cycle is mostly moto's time), so a ratio of two medians taken minutes apart
measures moto's mood as much as statekeeper. Instead the two sides run in
**batches that alternate** (statekeeper, reference, reference, statekeeper, …:
each pair swaps which side goes first, so a drift within a pair falls on both
sides equally), both against one bucket, one table and one moto process that
are warm before the first batch, and the figure is the **median of the pairs'
ratios**. Each side's raw rates, and the CPU the server, moto and this process
spent per cycle, are kept with every batch. With one client each step waits
for the one before, so a cycle takes about the CPU time the server, moto and
the client spend on it one after another: the ratio of those sums
(``cpu_ratio``) moves far less from run to run than the rates do, and is
reported beside the figure.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from bench_locks import STATE_SIZE, Tally, _lock_body, _summary, run_http
from harness import OUT, aws_drivers_available, cpu_seconds, env_int, fresh, log, median
from rawhttp import content_md5
from servers import aws_backend, moto_server, statekeeper_on_aws
from statedocs import make_state, read_serial, set_serial

GOAL = 1.2


def terraform_s3_clients(moto: Any) -> tuple[Any, Any]:
    """boto3 S3 and DynamoDB clients on ``moto`` with boto3's defaults, made once."""
    import boto3

    kw = {
        "endpoint_url": moto.url,
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "region_name": moto.env()["AWS_REGION"],
    }
    return boto3.client("s3", **kw), boto3.client("dynamodb", **kw)  # type: ignore[call-overload]


def run_terraform_s3(
    s3: Any, ddb: Any, bucket: str, table: str, key: str, seconds: float
) -> dict[str, Any]:
    """Terraform's own ``backend "s3"`` (DynamoDB locking) doing the same cycle, call for call.

    The requests Terraform 1.15's S3 remote client makes for LOCK → read → write →
    UNLOCK (``internal/backend/remote-state/s3/client.go``): PutItem of the lock
    with ``attribute_not_exists(LockID)``; GetObject of the state and GetItem of
    its ``-md5`` digest, which the read checks; PutObject with Content-MD5 and
    PutItem of the new digest; GetItem of the lock (Unlock checks the ID) and
    DeleteItem. Made with boto3, the library statekeeper's own S3 and DynamoDB
    drivers use, so the ratio is statekeeper's cost over the bare calls (Go's SDK
    would be a little faster on the client side).
    """
    lock_key, digest_key = f"{bucket}/{key}", f"{bucket}/{key}-md5"
    doc = make_state(STATE_SIZE, 1, str(uuid.uuid4()))
    tally = Tally()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        lock_id = str(uuid.uuid4())
        start = time.perf_counter()
        ddb.put_item(
            TableName=table,
            Item={"LockID": {"S": lock_key}, "Info": {"S": _lock_body(lock_id).decode()}},
            ConditionExpression="attribute_not_exists(LockID)",
        )
        serial = 0
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            serial = read_serial(body)
        except s3.exceptions.NoSuchKey:
            pass
        ddb.get_item(TableName=table, Key={"LockID": {"S": digest_key}}, ConsistentRead=True)
        set_serial(doc, serial + 1)
        data = bytes(doc)
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            ContentMD5=content_md5(data),
            ContentType="application/json",
        )
        ddb.put_item(
            TableName=table,
            Item={"LockID": {"S": digest_key}, "Digest": {"S": hashlib.md5(data).hexdigest()}},
        )
        ddb.get_item(TableName=table, Key={"LockID": {"S": lock_key}}, ConsistentRead=True)
        ddb.delete_item(TableName=table, Key={"LockID": {"S": lock_key}})
        end = time.perf_counter()
        if end <= deadline:
            tally.latencies.append(end - start)
    return _summary(tally, seconds)


def _batch(run: Callable[[], dict[str, Any]], pids: dict[str, int]) -> dict[str, Any]:
    """One batch, with the CPU each process spent on it per cycle."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    client_before = time.process_time()
    result = run()
    cycles = max(result["cycles"], 1)
    for name, pid in pids.items():
        result[f"{name}_cpu_ms_per_cycle"] = (cpu_seconds(pid) - before[name]) * 1000 / cycles
    result["client_cpu_ms_per_cycle"] = (time.process_time() - client_before) * 1000 / cycles
    return result


def run() -> dict[str, Any]:
    # Short batches, many pairs: the load of a shared machine changes within seconds.
    pairs = env_int("BENCH_S3_PAIRS", 12, 4)
    seconds = float(env_int("BENCH_S3_SECONDS", 2, 2))
    if not aws_drivers_available():
        return {}
    work = OUT / "locks_s3"
    tag = uuid.uuid4().hex[:6]
    bucket, table = f"b-s3cycle-{tag}", f"t-s3cycle-{tag}"
    with moto_server(fresh(work / "moto")) as moto:
        aws_backend(moto, bucket, table)
        s3, ddb = terraform_s3_clients(moto)
        with statekeeper_on_aws(fresh(work / "server"), moto, bucket, table) as server:
            # Each batch starts a state of its own on both sides (a lineage is per batch).
            sides: dict[str, Callable[[float, str], dict[str, Any]]] = {
                "statekeeper_aws": lambda s, t: run_http(server.port, 1, False, s, t),
                "terraform_s3": lambda s, t: run_terraform_s3(
                    s3, ddb, bucket, table, f"bench/{t}/terraform.tfstate", s
                ),
            }
            pids = {"moto": moto.proc.pid}
            # Warm both sides (connections, lazily built clients, first objects), unmeasured.
            for side, run_side in sides.items():
                run_side(1.0, f"warm-{side}")
            runs = []
            for i in range(pairs):
                order = list(sides) if i % 2 == 0 else list(reversed(sides))
                pair: dict[str, Any] = {"first": order[0]}
                for side in order:
                    batch = functools.partial(sides[side], seconds, f"p{i}-{side}")
                    server_too = side == "statekeeper_aws"
                    watched = {**pids, "server": server.proc.pid} if server_too else pids
                    pair[side] = _batch(batch, watched)
                ours, theirs = pair["statekeeper_aws"], pair["terraform_s3"]
                pair["ratio"] = (
                    theirs["cycles_per_s"] / ours["cycles_per_s"]
                    if ours["cycles_per_s"]
                    else float("inf")
                )
                log(
                    f"locks_s3 pair {i + 1}/{pairs}: statekeeper {ours['cycles_per_s']:.1f}/s "
                    f"terraform {theirs['cycles_per_s']:.1f}/s ratio {pair['ratio']:.2f}"
                )
                runs.append(pair)

    def med(side: str, field: str) -> float:
        return median([x[side][field] for x in runs])

    for x in runs:
        ours, theirs = x["statekeeper_aws"], x["terraform_s3"]
        x["cpu_ratio"] = (
            ours["server_cpu_ms_per_cycle"]
            + ours["moto_cpu_ms_per_cycle"]
            + ours["client_cpu_ms_per_cycle"]
        ) / (theirs["moto_cpu_ms_per_cycle"] + theirs["client_cpu_ms_per_cycle"])
    ratio = median([x["ratio"] for x in runs])
    cpu_ratio = median([x["cpu_ratio"] for x in runs])
    log(f"locks_s3: median of paired ratios {ratio:.2f} (goal <= {GOAL}); CPU {cpu_ratio:.2f}")
    return {
        "params": {"pairs": pairs, "seconds_per_batch": seconds, "state_bytes": STATE_SIZE},
        "ratio": ratio,
        # Every process's CPU per cycle, ours over theirs: steadier than rates (see above).
        "cpu_ratio": cpu_ratio,
        "goal": GOAL,
        "statekeeper_aws_cycles_per_s": med("statekeeper_aws", "cycles_per_s"),
        "terraform_s3_cycles_per_s": med("terraform_s3", "cycles_per_s"),
        "statekeeper_aws_p50_ms": med("statekeeper_aws", "p50_ms"),
        "terraform_s3_p50_ms": med("terraform_s3", "p50_ms"),
        "server_cpu_ms_per_cycle": med("statekeeper_aws", "server_cpu_ms_per_cycle"),
        "moto_cpu_ms_per_cycle": {s: med(s, "moto_cpu_ms_per_cycle") for s in sides},
        "client_cpu_ms_per_cycle": {s: med(s, "client_cpu_ms_per_cycle") for s in sides},
        "errors": sum(x[s]["error_count"] for x in runs for s in sides),
        "runs": runs,
    }


if __name__ == "__main__":
    from harness import save

    save("locks_s3", run())
