"""Seed 000's step types as pydantic models, with the fields of Herald's Rust worker
(``herald-worker/src/step.rs``), so a model dumps to the JSON the worker reads and writes.

The seed declares a ``success`` field and a ``success()`` factory on ``StepHandlerResult``,
which pydantic cannot hold in one class body; here the factories are attached after the
class is built, so ``StepHandlerResult.success({...})`` builds a result and
``result.success`` is the field, as the seed's tests use them.
"""

from __future__ import annotations

from typing import Any, Optional
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class StepExecutionEvent(BaseModel):
    """What to run: the handler and its inputs."""

    handler_name: str
    input_data: dict[str, Any] = Field(default_factory=dict)
    dependency_results: dict[str, Any] = Field(default_factory=dict)
    step_config: dict[str, Any] = Field(default_factory=dict)
    retry_count: int = 0
    max_retries: int = 3


class FfiStepEvent(BaseModel):
    """A step ready for execution (``step.execution.received``)."""

    event_id: UUID
    task_uuid: UUID
    step_uuid: UUID
    correlation_id: UUID
    execution_event: StepExecutionEvent


class StepContext(BaseModel):
    """Context provided to step handlers."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    event: FfiStepEvent
    task_uuid: UUID
    step_uuid: UUID
    correlation_id: UUID
    handler_name: str
    input_data: dict[str, Any] = Field(default_factory=dict)
    dependency_results: dict[str, Any] = Field(default_factory=dict)
    step_config: dict[str, Any] = Field(default_factory=dict)
    retry_count: int = 0
    max_retries: int = 3


class StepHandlerResult(BaseModel):
    """Result from a step handler execution."""

    success: bool
    result: Optional[dict[str, Any]] = None
    error_message: Optional[str] = None
    error_type: Optional[str] = None
    retryable: bool = True
    metadata: dict[str, Any] = Field(default_factory=dict)


def _success(
    cls: type[StepHandlerResult],
    result: dict[str, Any],
    metadata: Optional[dict[str, Any]] = None,
) -> StepHandlerResult:
    """Create a success result."""
    return cls(success=True, result=result, metadata=metadata or {})


def _failure(
    cls: type[StepHandlerResult],
    message: str,
    error_type: str = "handler_error",
    retryable: bool = True,
    metadata: Optional[dict[str, Any]] = None,
) -> StepHandlerResult:
    """Create a failure result."""
    return cls(
        success=False,
        error_message=message,
        error_type=error_type,
        retryable=retryable,
        metadata=metadata or {},
    )


# On the class: the factories; on an instance: the fields (instance values win over a
# non-data descriptor).
type.__setattr__(StepHandlerResult, "success", classmethod(_success))
type.__setattr__(StepHandlerResult, "failure", classmethod(_failure))


class StepError(BaseModel):
    """Why a step failed."""

    error_type: str
    message: str
    retryable: bool = True
    metadata: dict[str, Any] = Field(default_factory=dict)


class StepExecutionResult(BaseModel):
    """A step's one result (``step.completion.sent``), as the Rust worker stores it."""

    event_id: UUID
    step_uuid: UUID
    task_uuid: UUID
    correlation_id: UUID
    success: bool
    output: dict[str, Any] = Field(default_factory=dict)
    error: Optional[StepError] = None
    execution_time_ms: int = 0
    worker_id: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def success_result(
        cls,
        event: FfiStepEvent,
        output: dict[str, Any],
        execution_time_ms: int,
        worker_id: str,
        metadata: Optional[dict[str, Any]] = None,
    ) -> "StepExecutionResult":
        """A success for ``event``."""
        return cls(
            event_id=event.event_id,
            step_uuid=event.step_uuid,
            task_uuid=event.task_uuid,
            correlation_id=event.correlation_id,
            success=True,
            output=output,
            execution_time_ms=execution_time_ms,
            worker_id=worker_id,
            metadata=metadata or {},
        )

    @classmethod
    def failure_result(
        cls,
        event: FfiStepEvent,
        error: StepError,
        execution_time_ms: int,
        worker_id: str,
    ) -> "StepExecutionResult":
        """A failure for ``event``."""
        return cls(
            event_id=event.event_id,
            step_uuid=event.step_uuid,
            task_uuid=event.task_uuid,
            correlation_id=event.correlation_id,
            success=False,
            error=error,
            execution_time_ms=execution_time_ms,
            worker_id=worker_id,
        )
