"""The example producer in examples/node-producer, which uses no code of ours, against a real
nats-server with the generated authorization config and the running intake service."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.nats

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node-producer"


@pytest.fixture(scope="module")
def node_example() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js (node and npm) is not installed: the example producer cannot run")
    if not (EXAMPLE / "node_modules" / "@nats-io" / "jetstream").is_dir():
        # The exact versions in package-lock.json, into the example's (git-ignored) node_modules.
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=EXAMPLE, check=True,
                       timeout=300)
    return EXAMPLE


async def test_the_node_example_submits_confirms_and_collects_its_receipts(node_example, secured, settings):
    env = {"PATH": os.environ["PATH"], "NATS_URL": f"nats://127.0.0.1:{secured.port}",
           "NATS_USER": "police", "NATS_PASS": secured.agencies["police"],
           "RETHINK_PREFIX": settings.subject_prefix, "RECEIPT_STREAM": settings.receipt_stream,
           "REQUEST_ID": "POL-NODE-1"}
    proc = await asyncio.create_subprocess_exec(
        "node", "producer.mjs", cwd=node_example, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()
    summary = json.loads(out.decode().strip().splitlines()[-1])

    assert summary["statuses"] == ["accepted", "rejected", "accepted", "accepted"]
    assert [k["command"] for k in summary["kept"]] == ["submit", "confirm_checks", "confirm_checks", "submit"]
    # The log holds the request and its confirmation once, written as police.
    js = secured.services.jetstream()
    case = await js.pull_subscribe(f"{settings.subject_prefix}.events.{summary['case_id']}.>",
                                   stream=settings.stream)
    events = [json.loads(m.data) for m in await case.fetch(10, timeout=2)]
    assert [e["type"] for e in events] == ["RequestSubmitted", "ChecksConfirmed"]
    assert {e["producer"] for e in events} == {"police"}
