"""paygentic-sdk 0.6.3 (in its own virtualenv) drives every issue-2 operation it still has."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from db.merchants import NewMerchant
from tests.helpers import sdk063_python

DRIVER = Path(__file__).with_name("sdk063_driver.py")
EXPECTED = {
    f"{resource}.{op}"
    for resource, ops in {
        "products": ["create", "get", "update", "list"],
        "billable_metrics": ["create", "get", "update", "list"],
        "fees": ["create", "get", "update", "list", "delete"],
        "features": ["create", "get", "update", "list", "delete"],
        "prices": ["create", "get", "update", "list", "delete"],
        "plans": ["create", "get", "update", "list"],
        "customers": ["create", "get", "update", "list", "delete"],
        "users": ["get", "update"],
    }.items()
    for op in ops
}


def test_every_shared_operation_parses_under_sdk_0_6_3(api_url: str, merchant: NewMerchant) -> None:
    run = subprocess.run(
        [sdk063_python(), str(DRIVER), api_url, merchant.api_key, merchant.merchant_id, merchant.user_id],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    failures = {op: outcome for op, outcome in results.items() if outcome != "ok"}
    assert failures == {}, json.dumps(failures, indent=2)
    assert EXPECTED <= set(results), sorted(EXPECTED - set(results))
