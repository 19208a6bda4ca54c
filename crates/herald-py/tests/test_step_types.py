"""Seed 000's registry and step models beyond its own tests: discovery, the contract, and
models that dump to the JSON Herald's Rust worker reads."""

import sys
import uuid
from pathlib import Path

import pytest
from herald import (
    FfiStepEvent,
    HandlerRegistry,
    StepContext,
    StepError,
    StepExecutionResult,
    StepHandler,
    StepHandlerResult,
)


def test_discover_handlers_scans_a_package_and_survives_a_broken_module():
    sys.path.insert(0, str(Path(__file__).parent))
    registry = HandlerRegistry()
    assert registry.discover_handlers("discoverable") == 1
    assert registry.list_handlers() == ["doubler"]
    assert registry.is_registered("doubler") and not registry.is_registered("Unnamed")
    assert registry.discover_handlers("no.such.package") == 0
    assert registry.unregister("doubler") and not registry.unregister("doubler")


def test_the_contract_is_enforced_and_a_handler_runs():
    with pytest.raises(TypeError):
        StepHandler()  # abstract
    sys.path.insert(0, str(Path(__file__).parent))
    from discoverable.sub.handlers import Doubler

    ids = {k: uuid.uuid4() for k in ("event_id", "task_uuid", "step_uuid", "correlation_id")}
    event = FfiStepEvent(**ids, execution_event={"handler_name": "doubler", "input_data": {"n": 21}})
    ctx = StepContext(
        event=event,
        task_uuid=event.task_uuid,
        step_uuid=event.step_uuid,
        correlation_id=event.correlation_id,
        handler_name="doubler",
        input_data=event.execution_event.input_data,
    )
    out = Doubler().call(ctx)
    assert out.success is True and out.result == {"n": 42}
    ok = StepExecutionResult.success_result(event, out.result, 3, "w1")
    dumped = ok.model_dump(mode="json")
    assert dumped["success"] is True and dumped["output"] == {"n": 42}
    assert dumped["step_uuid"] == str(ids["step_uuid"])
    failed = StepExecutionResult.failure_result(
        event, StepError(error_type="handler_error", message="boom"), 1, "w1"
    )
    assert failed.model_dump()["error"]["retryable"] is True
    assert StepHandlerResult.failure("x").error_type == "handler_error"
