"""Seed 000's ``StepExecutionSubscriber`` on Herald's Rust worker.

Herald's worker (``herald._native.NativeWorker``) reads each step from the durable queue
``{namespace}_steps`` (SQLite or PGMQ), calls this subscriber for the step's handler, and
stores exactly one result per step in ``{namespace}_step_results``: the seed's
``complete_step_event``, done by the core after the handler returns. The subscriber
publishes ``step.execution.received`` and ``step.completion.sent`` on the bridge, as the seed
does, and turns every outcome into a ``StepHandlerResult``: an unknown handler is a
non-retryable ``handler_not_found``; an exception is a retryable ``handler_error`` with the
traceback in its metadata.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from typing import Optional

from ._native import NativeWorker
from .bridge import EventBridge
from .handler import HandlerRegistry
from .step import FfiStepEvent, StepContext, StepHandlerResult

logger = logging.getLogger(__name__)


class StepExecutionSubscriber:
    """Runs Python step handlers for the steps Herald's worker reads (seed 000)."""

    def __init__(
        self,
        event_bridge: EventBridge,
        handler_registry: HandlerRegistry,
        worker_id: str,
        store_url: str = "sqlite://.herald/herald.db",
        namespace: str = "default",
    ) -> None:
        self._event_bridge = event_bridge
        self._registry = handler_registry
        self._worker_id = worker_id
        self._store_url = store_url
        self._namespace = namespace
        self._active = False

    def start(self) -> None:
        """Marks the subscriber active (``run`` processes steps)."""
        self._active = True
        logger.info("StepExecutionSubscriber started")

    def stop(self) -> None:
        """Marks it inactive."""
        self._active = False
        logger.info("StepExecutionSubscriber stopped")

    @property
    def is_active(self) -> bool:
        """Whether it is active."""
        return self._active

    def run(self, until_empty: bool = True, max_seconds: Optional[float] = None) -> dict:
        """Runs Herald's worker over the steps queue with every handler of the registry, until
        the queue stays empty (or ``max_seconds``, or Ctrl-C); returns the worker's report."""
        if not self._active:
            raise RuntimeError("StepExecutionSubscriber is not started")
        worker = NativeWorker(self._store_url, self._namespace, self._worker_id)
        for name in self._registry.list_handlers():
            worker.register(name, self._dispatch)
        return worker.run(until_empty, max_seconds)

    def _dispatch(self, step_json: str) -> str:
        """Called by the worker for each step: the handler's result as JSON."""
        raw = json.loads(step_json)
        event = FfiStepEvent.model_validate(raw["event"])
        self._event_bridge.publish("step.execution.received", event)
        start = time.time()
        try:
            handler = self._registry.resolve(event.execution_event.handler_name)
            if handler is None:
                result = StepHandlerResult.failure(
                    message=f"Handler not found: {event.execution_event.handler_name}",
                    error_type="handler_not_found",
                    retryable=False,
                )
            else:
                context = StepContext(
                    event=event,
                    task_uuid=event.task_uuid,
                    step_uuid=event.step_uuid,
                    correlation_id=event.correlation_id,
                    handler_name=handler.name,
                    input_data=event.execution_event.input_data,
                    dependency_results=event.execution_event.dependency_results,
                    step_config=event.execution_event.step_config,
                    retry_count=raw.get("retry_count", 0),
                    max_retries=raw.get("max_retries", 3),
                )
                result = handler.call(context)
                if not isinstance(result, StepHandlerResult):
                    raise TypeError(f"{handler.name} returned {type(result).__name__}, not a StepHandlerResult")
        except Exception as e:  # the seed's _create_error_result
            logger.exception("Error executing handler %s", event.execution_event.handler_name)
            result = StepHandlerResult.failure(
                message=str(e),
                error_type="handler_error",
                retryable=True,
                metadata={"traceback": traceback.format_exc(), "exception_type": type(e).__name__},
            )
            self._event_bridge.publish("handler.error", (event, e))
        result.metadata.setdefault("execution_time_ms", int((time.time() - start) * 1000))
        self._event_bridge.publish("step.completion.sent", result)
        return result.model_dump_json()
