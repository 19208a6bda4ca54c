"""Python step handlers on Herald's Rust worker: steps enqueued with ``herald queue send``
are run by Python ``StepHandler``s and each gets exactly one result in the results queue
(compared by step id sets); a handler that raises gives a retryable ``handler_error`` result
carrying the traceback; an unknown handler gives ``handler_not_found``."""

import json
import os
import subprocess
import uuid
from pathlib import Path

from herald import EventBridge, HandlerRegistry, StepExecutionSubscriber, StepHandler, StepHandlerResult

ROOT = Path(__file__).resolve().parents[3]
HERALD = os.environ.get("HERALD_BIN", str(ROOT / "target" / "debug" / "herald"))


def herald(*args: str) -> str:
    out = subprocess.run([HERALD, *args], capture_output=True, text=True, check=True)
    return out.stdout


class Adder(StepHandler):
    handler_name = "py.add"

    def call(self, context):
        return StepHandlerResult.success({"sum": sum(context.input_data["numbers"])})


class Exploder(StepHandler):
    handler_name = "py.explode"

    def call(self, context):
        raise RuntimeError("kaboom")


def step(handler: str, max_retries: int, **input_data) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "task_uuid": str(uuid.uuid4()),
        "step_uuid": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
        "execution_event": {
            "handler_name": handler,
            "input_data": input_data,
            "dependency_results": {},
            "step_config": {},
            "retry_count": 0,
            "max_retries": max_retries,
        },
    }


def test_steps_sent_with_the_cli_get_exactly_one_result_each(tmp_path):
    store = f"sqlite://{tmp_path / 'h.db'}"
    herald("queue", "create", "default_steps", "--store", store)
    steps = [step("py.add", 3, numbers=[i, 1, 2]) for i in range(20)]
    boom = step("py.explode", 0)
    missing = step("py.nobody", 3)
    for s in [*steps, boom, missing]:
        herald("queue", "send", "default_steps", json.dumps(s), "--subject", "step.execution.received", "--store", store)

    registry = HandlerRegistry()
    registry.register("py.add", Adder)
    registry.register("py.explode", Exploder)
    bridge = EventBridge()
    bridge.start()
    completions = []
    bridge.subscribe("step.completion.sent", completions.append)
    subscriber = StepExecutionSubscriber(bridge, registry, "py-worker-1", store_url=store)
    subscriber.start()
    report = subscriber.run(until_empty=True, max_seconds=60)
    assert report["read"] >= 22, report

    lines = herald("queue", "read", "default_step_results", "--qty", "100", "--vt", "60", "--store", store)
    results = [json.loads(line) for line in lines.splitlines() if line.strip()]
    bodies = [r["message"]["data"] if "message" in r else r["data"] for r in results]
    by_step = {}
    for b in bodies:
        by_step.setdefault(b["step_uuid"], []).append(b)
    expected = {s["step_uuid"] for s in [*steps, boom, missing]}
    assert set(by_step) == expected, "missing or unexpected results"
    assert all(len(v) == 1 for v in by_step.values()), "exactly one result per step"
    for s in steps:
        r = by_step[s["step_uuid"]][0]
        assert r["success"] is True
        assert r["output"] == {"sum": sum(s["execution_event"]["input_data"]["numbers"])}
    failed = by_step[boom["step_uuid"]][0]
    assert failed["success"] is False
    assert failed["error"]["error_type"] == "handler_error"
    assert failed["error"]["retryable"] is True
    assert "kaboom" in failed["error"]["message"]
    assert "Traceback" in failed["error"]["metadata"]["traceback"]
    assert by_step[missing["step_uuid"]][0]["error"]["error_type"] == "handler_not_found"
    assert len(completions) >= 21
