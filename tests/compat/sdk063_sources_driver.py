"""Runs under paygentic-sdk 0.6.3 (its own virtualenv): every sources, sources.events and sources.rules
operation, against a plan with a revenue metric and a source whose event `done_event` is not pending.

Usage: python sdk063_sources_driver.py <server_url> <api_key> <plan_id> <metric_id> <source_id> <done_event>
Prints one JSON object: {"<resource>.<op>": "ok" | "<error>"}; exits 0 either way.
"""

import json
import sys
from collections.abc import Callable
from typing import Any

from paygentic_sdk import Paygentic, errors

url, key, plan_id, metric_id, source_id, done_event = sys.argv[1:7]
results: dict[str, str] = {}


def step(name: str, call: Callable[[], Any], check: Callable[[Any], bool] = lambda r: True) -> Any:
    try:
        response = call()
        results[name] = "ok" if check(response) else f"unexpected response: {response!r}"[:500]
        return response
    except Exception as exc:  # report, keep going: the test asserts on the whole map
        results[name] = f"{type(exc).__name__}: {exc}"[:500]
        return None


def refused(name: str, call: Callable[[], Any], status: int) -> None:
    try:
        call()
        results[name] = f"expected {status}, got a success"
    except errors.PaygenticError as exc:
        results[name] = "ok" if exc.status_code == status else f"status {exc.status_code}: {exc}"[:500]
    except Exception as exc:
        results[name] = f"{type(exc).__name__}: {exc}"[:500]


with Paygentic(server_url=url, bearer_auth=key) as p:
    mapping = {"billableMetricMapping": {"revenue": metric_id}}
    created = step(
        "sources.create",
        lambda: p.sources.create(
            name="0.6.3", plan_id=plan_id, type_="stripe_revenue", metadata=mapping, processing_mode="manual"
        ),
        lambda r: r.processing_mode == "manual" and r.metadata == mapping,
    )
    sid = created.id
    step("sources.get", lambda: p.sources.get(id=sid), lambda r: r.id == sid)
    step("sources.update", lambda: p.sources.update(id=sid, name="renamed"), lambda r: r.name == "renamed")
    step(
        "sources.list",
        lambda: p.sources.list(request={"plan_id": plan_id}),
        lambda r: {s.id for s in r.data} == {sid, source_id},
    )

    rule = step(
        "sources.rules.create",
        lambda: p.sources.rules.create(
            source_id=sid,
            name="big",
            conditions=[{"type": "amount", "operator": "between", "value": {"from_": 100, "to": "500.50"}}],
        ),
        lambda r: r.description == "" and r.evaluation_count == 0,
    )
    rid = rule.id
    step("sources.rules.get", lambda: p.sources.rules.get(rule_id=rid), lambda r: r.id == rid)
    step(
        "sources.rules.update",
        lambda: p.sources.rules.update(rule_id=rid, order=3, enabled=False),
        lambda r: (r.order, r.enabled) == (3, False),
    )
    step(
        "sources.rules.list",
        lambda: p.sources.rules.list(source_id=sid),
        lambda r: [x.id for x in r.data] == [rid],
    )
    step("sources.rules.delete", lambda: p.sources.rules.delete(rule_id=rid), lambda r: r is None)

    step(
        "sources.events.list",
        lambda: p.sources.events.list(id=source_id, status="rejected"),
        lambda r: [e.id for e in r.data] == [done_event] and r.data[0].status == "rejected",
    )
    refused(
        "sources.events.approve", lambda: p.sources.events.approve(id=source_id, event_id=done_event), 409
    )
    refused("sources.events.reject", lambda: p.sources.events.reject(id=source_id, event_id="sev_none"), 404)
    step(
        "sources.events.bulk_approve",
        lambda: p.sources.events.bulk_approve(id=source_id, event_ids=["sev_none"]),
        lambda r: (r.processed, r.failed, r.details.failed[0].id) == (0, 1, "sev_none"),
    )
    step(
        "sources.events.bulk_reject",
        lambda: p.sources.events.bulk_reject(id=source_id, event_ids=["sev_none"]),
        lambda r: r.rejected == 0,
    )

print(json.dumps(results))
