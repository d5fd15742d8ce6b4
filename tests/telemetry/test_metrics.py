"""/metrics on the ASGI app over the embedded store: what each request and event counts."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from tests.security.support import OPERATOR, basic
from tests.server.tfwire import NAME, Api, lock_body, state_bytes

from statekeeper.app import Services
from statekeeper.server.app import create_app
from statekeeper.settings import load_settings
from statekeeper.telemetry.histogram import CountFamily, LatencyHistogram
from statekeeper.telemetry.metrics import Metrics, refusal_reason

OTHER = "other/unlisted.tfstate"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    metrics = Metrics("team/**")
    services = Services.build(
        load_settings({"data_dir": tmp_path / "data"}, env={}), metrics=metrics
    )
    client = Api(create_app(services), services)
    yield client
    client.close()
    services.close()


def value(api: Api, name: str, **labels: str) -> float:
    assert api.services.metrics is not None
    found = api.services.metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def test_lock_conflicts_and_the_wait_until_the_lock_is_had(api: Api) -> None:
    holder, waiter = lock_body(), lock_body(str(uuid.uuid4()), who="bob@ci")
    assert api.lock(holder).status_code == 200
    assert api.lock(waiter).status_code == 423
    assert api.lock(waiter).status_code == 423  # -lock-timeout polls with the same ID
    assert api.unlock(holder).status_code == 200
    assert api.lock(waiter).status_code == 200

    assert value(api, "statekeeper_lock_acquisitions_total", state=NAME) == 2
    assert value(api, "statekeeper_lock_conflicts_total", state=NAME) == 2
    assert value(api, "statekeeper_lock_wait_seconds_count") == 1
    assert value(api, "statekeeper_lock_wait_seconds_sum") > 0
    assert value(api, "statekeeper_events_total", action="unlock", outcome="ok") == 1
    assert api.services.metrics is not None
    text = api.services.metrics.render().decode()
    assert 'statekeeper_events_total{action="unlock",outcome="ok"} 1.0' in text.splitlines()
    assert value(api, "statekeeper_locks_held") == 1

    # Terraform's force-unlock: an empty UNLOCK.
    assert api.request("UNLOCK", api.url(), content=b"").status_code == 200
    assert value(api, "statekeeper_lock_force_unlocks_total", state=NAME) == 1


def test_writes_accepted_and_refused_by_reason(api: Api) -> None:
    assert api.write(state_bytes(1)).status_code == 200
    assert api.write(state_bytes(1)).status_code == 200  # a retry of the same bytes
    refused = {
        "lineage": api.write(state_bytes(2, lineage=str(uuid.uuid4()))),
        "serial": api.write(state_bytes(1, outputs={"x": {"value": 1, "type": "number"}})),
        "content_md5": api.write(state_bytes(2), md5="1B2M2Y8AsgTpgAmY7PhCfg=="),
        "validation": api.write(b'{"not": "a state"}'),
    }
    lock = lock_body()
    assert api.lock(lock).status_code == 200
    refused["lock"] = api.write(state_bytes(2))  # no ?ID= while locked
    assert {reason: r.status_code for reason, r in refused.items()} == {
        "lineage": 409,
        "serial": 409,
        "content_md5": 400,
        "validation": 400,
        "lock": 423,
    }
    for reason in refused:
        assert value(api, "statekeeper_state_write_refusals_total", state=NAME, reason=reason) == 1
    assert value(api, "statekeeper_state_writes_total", state=NAME, result="created") == 1
    assert value(api, "statekeeper_state_writes_total", state=NAME, result="unchanged") == 1
    # One version stored, its size observed at the storage boundary.
    assert value(api, "statekeeper_state_size_bytes_count") == 1
    assert value(api, "statekeeper_state_size_bytes_sum") == len(state_bytes(1))


def test_refusal_reasons_from_terraforms_wording() -> None:
    lineage = 'cannot import state with lineage "a" over unrelated state with lineage "b"; pull'
    serial = "cannot import state with serial 1 over newer state with serial 2; pull the lineage"
    assert refusal_reason("state_conflict", lineage) == "lineage"
    assert refusal_reason("state_conflict", serial) == "serial"
    assert refusal_reason("storage_unavailable", "S3 is down") == "error"


def test_no_label_carries_a_state_name_unless_allow_listed(api: Api) -> None:
    assert api.write(state_bytes(1), OTHER).status_code == 200
    assert api.lock(lock_body(), OTHER).status_code == 200
    assert api.write(state_bytes(1)).status_code == 200
    text = api.request("GET", "/metrics").text

    assert value(api, "statekeeper_state_writes_total", state="", result="created") == 1
    assert value(api, "statekeeper_lock_acquisitions_total", state="") == 1
    assert OTHER not in text
    # The allow-listed state appears only as a `state` label, never in a route.
    assert all(f'state="{NAME}"' in line for line in text.splitlines() if NAME in line)
    assert 'route="/state/{name}"' in text
    assert (
        value(
            api,
            "statekeeper_http_requests_total",
            route="/state/{name}",
            method="POST",
            status="200",
        )
        == 2
    )


def test_store_and_lock_table_calls_are_timed_by_driver_and_operation(api: Api) -> None:
    assert api.lock(lock_body()).status_code == 200
    text = api.request("GET", "/metrics").text
    for operation in ("acquire", "scan"):  # the scan: the locks-held gauge
        labels = {"driver": "sqlite", "operation": operation}
        assert value(api, "statekeeper_storage_operation_duration_seconds_count", **labels) >= 1
    assert "statekeeper_storage_operation_errors_total" in text
    assert 'statekeeper_build_info{python="' in text
    assert 'statekeeper_queue_depth{queue="audit"} 0.0' in text
    # The scrape itself was being answered; answered, it is not.
    assert "\nstatekeeper_http_requests_in_flight 1.0\n" in text
    assert value(api, "statekeeper_http_requests_in_flight") == 0
    # A latency histogram as Prometheus reads it: cumulative buckets up to +Inf = count.
    labels = {"route": "/metrics", "method": "GET"}
    name = "statekeeper_http_request_duration_seconds"
    count = value(api, name + "_count", **labels)
    assert count >= 1 and value(api, name + "_bucket", le="+Inf", **labels) == count
    assert value(api, name + "_bucket", le="0.005", **labels) <= count
    assert value(api, name + "_sum", **labels) > 0


def test_metrics_need_the_metrics_permission(tmp_path: Path) -> None:
    metrics = Metrics()
    services = Services.build(
        load_settings({"data_dir": tmp_path / "data"}, env={}), metrics=metrics
    )
    secrets = {
        name: services.tokens.create(OPERATOR, name, scopes, None).secret
        for name, scopes in {
            "scraper": ["**:metrics"],
            "reader": ["**:read"],
            "team-admin": ["team/**:admin"],
        }.items()
    }
    api = Api(create_app(services, allow_anonymous=False), services)
    try:
        assert api.request("GET", "/metrics").status_code == 401
        denied = api.request("GET", "/metrics", headers=basic("team-admin", secrets["team-admin"]))
        assert denied.status_code == 403
        assert "'metrics' permission" in denied.json()["message"]
        for name in ("scraper", "reader"):
            answer = api.request("GET", "/metrics", headers=basic(name, secrets[name]))
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        # A scraper token may read nothing else.
        state = api.request(
            "GET", "/state/team/a.tfstate", headers=basic("scraper", secrets["scraper"])
        )
        assert state.status_code == 403
    finally:
        api.close()
        services.close()


def test_the_latency_histogram_reads_as_prometheus_clients_own() -> None:
    # The hot histograms are statekeeper's; a scrape must not be able to tell.
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    buckets = (0.005, 0.01, 0.25, 1, 10)
    reference = Histogram("x_seconds", "Time.", ["route"], buckets=buckets, registry=theirs)
    cheap = LatencyHistogram("x_seconds", "Time.", ["route"], buckets=buckets, registry=ours)
    for seconds in (0.0, 0.001, 0.005, 0.0051, 0.25, 0.3, 1.0, 9.99, 10.0, 12.5, 600.0):
        for route in ("/a", "/b") if seconds < 1 else ("/a",):
            reference.labels(route).observe(seconds)
            cheap.labels(route).observe(seconds)
    assert generate_latest(ours) == generate_latest(theirs)


def test_latency_observed_from_many_threads_at_once_loses_none() -> None:
    registry = CollectorRegistry()
    histogram = LatencyHistogram("y_seconds", "Time.", ["op"], (0.5, 1.0), registry)
    timer = histogram.labels("put")

    def observe() -> None:
        for n in range(20_000):
            timer.observe(0.25 if n % 2 else 0.75)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Folded by the observers as they went: what waits for a scrape stays bounded.
    assert len(timer._pending) < timer.FOLD_AT
    counts, total = timer.read()
    assert counts == [40_000, 40_000, 0]
    assert total == 40_000 * 0.25 + 40_000 * 0.75


def test_the_counter_family_reads_as_prometheus_clients_own() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Counter("x_events", "Events.", ["action", "outcome"], registry=theirs)
    cheap = CountFamily("x_events", "Events.", ["action", "outcome"], registry=ours)
    for n in range(1000):
        labels = ("lock", "ok") if n % 3 else ("write", "locked")
        reference.labels(*labels).inc()
        cheap.labels(*labels).inc()
    reference.labels("read", "ok").inc(2.5)
    cheap.labels("read", "ok").inc(2.5)
    assert generate_latest(ours) == generate_latest(theirs)
