"""Herald for Python services: the seeds' Python APIs on Herald's Rust core.

- ``herald.event_bus``: seed 002's plugin ``EventBus``, ``Event`` and ``EventPriority``.
- ``herald.bridge``: seed 000's ``EventBridge``.
- ``herald.handler`` and ``herald.step``: seed 000's ``StepHandler``, ``HandlerRegistry`` and
  step models (pydantic).
- ``herald.observability``: seed 001's domain events, health, metrics and config.
- ``herald.nats``: seed 004's NATS ``EventBus``, its ``Event`` (Herald's envelope), typed errors
  and module-level lifecycle functions.
- ``herald.subscriber``: seed 000's ``StepExecutionSubscriber`` on Herald's Rust worker.
- ``herald.operations``: ``Operations``, the verbs of ``herald dlq`` and ``herald schedule``.
- ``start_telemetry()`` / ``shutdown_telemetry()``: Herald's hop spans (publish and process,
  OpenTelemetry's messaging conventions) exported by OTLP/HTTP; started at import when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set, flushed at exit.

Both run on Herald's in-process bus (``herald._native.NativeBus``): NATS-style patterns,
priorities, handler isolation, history and statistics are Herald's.
"""

import atexit as _atexit
import os as _os

from ._native import (
    NativeBus,
    NativeNats,
    NativeWorker,
    __version__,
    shutdown_telemetry,
    start_telemetry,
)
from .bridge import EventBridge
from .event_bus import Event, EventBus, EventPriority
from .handler import HandlerRegistry, StepHandler
from .observability import (
    ComponentHealth,
    DomainEvent,
    DomainEventPublisher,
    HealthCheck,
    HealthStatus,
    InProcessDomainEvent,
    InProcessDomainEventPoller,
    WorkerConfig,
    WorkerMetrics,
    configure,
    get_config,
    get_health_check,
    get_metrics,
    is_healthy,
    poll_in_process_events,
    publish_domain_event,
)
from .operations import Operations
from .subscriber import StepExecutionSubscriber
from .step import (
    FfiStepEvent,
    StepContext,
    StepError,
    StepExecutionEvent,
    StepExecutionResult,
    StepHandlerResult,
)

__all__ = [
    "Operations",
    "ComponentHealth",
    "DomainEvent",
    "DomainEventPublisher",
    "HealthCheck",
    "HealthStatus",
    "InProcessDomainEvent",
    "InProcessDomainEventPoller",
    "WorkerConfig",
    "WorkerMetrics",
    "configure",
    "get_config",
    "get_health_check",
    "get_metrics",
    "is_healthy",
    "poll_in_process_events",
    "publish_domain_event",
    "Event",
    "EventBridge",
    "EventBus",
    "EventPriority",
    "FfiStepEvent",
    "HandlerRegistry",
    "NativeBus",
    "NativeNats",
    "NativeWorker",
    "StepExecutionSubscriber",
    "StepContext",
    "StepError",
    "StepExecutionEvent",
    "StepExecutionResult",
    "StepHandler",
    "StepHandlerResult",
    "__version__",
    "shutdown_telemetry",
    "start_telemetry",
]

if _os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or _os.environ.get(
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
):
    start_telemetry(enabled=False)
_atexit.register(shutdown_telemetry)
