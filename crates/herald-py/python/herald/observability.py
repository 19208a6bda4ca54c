"""Seed 001 for Python: domain events on Herald's durable and fast paths, and the health,
metrics and config models filled from Herald's core (``herald._native``).

The core is process-wide: it is made on first use from ``HERALD_STORE`` (default
``sqlite://.herald/herald.db``), or by ``configure(store_url, namespace, worker_id)``.
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Optional
from uuid import UUID

from pydantic import BaseModel, Field

from . import _native
from ._native import configure

logger = logging.getLogger(__name__)


class DomainEvent(BaseModel):
    """A domain event to be published."""

    event_type: str
    payload: dict[str, Any]
    correlation_id: Optional[UUID] = None
    timestamp: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))


class InProcessDomainEvent(BaseModel):
    """An in-process domain event (fast path)."""

    event_id: UUID
    event_type: str
    payload: dict[str, Any]
    correlation_id: Optional[UUID] = None
    timestamp: datetime
    source: str


class HealthStatus(str, Enum):
    """Health check status values."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class ComponentHealth(BaseModel):
    """Health status of a single component."""

    name: str
    status: HealthStatus
    message: Optional[str] = None
    last_check: datetime
    required: bool = True


class HealthCheck(BaseModel):
    """Comprehensive health check result."""

    status: HealthStatus
    worker_id: str
    uptime_seconds: float
    components: dict[str, ComponentHealth]
    rust: dict[str, Any]
    python: dict[str, Any]

    @property
    def is_healthy(self) -> bool:
        return self.status == HealthStatus.HEALTHY


class WorkerMetrics(BaseModel):
    """Worker performance metrics."""

    worker_id: str
    uptime_seconds: float
    steps_processed: int
    steps_succeeded: int
    steps_failed: int
    steps_in_progress: int
    avg_execution_time_ms: float
    max_execution_time_ms: float
    p95_execution_time_ms: float
    p99_execution_time_ms: float
    dispatch_channel_pending: int
    completion_channel_pending: int
    dispatch_channel_saturation: float
    completion_channel_saturation: float
    domain_events_published: int
    domain_events_dropped: int
    handler_errors: int
    timeout_errors: int
    ffi_errors: int


class WorkerConfig(BaseModel):
    """Worker configuration exposed from Rust."""

    worker_id: str
    namespace: str
    environment: str
    polling_interval_ms: int
    starvation_threshold_ms: int
    max_concurrent_handlers: int
    handler_timeout_ms: int
    dispatch_buffer_size: int
    completion_buffer_size: int


def publish_domain_event(event_type: str, payload: dict[str, Any], correlation_id: Optional[UUID] = None, mode: str = "broadcast") -> bool:
    """The native publish, with a dict payload."""
    return _native.publish_domain_event(
        event_type, json.dumps(payload), str(correlation_id) if correlation_id else None, mode
    )


def poll_in_process_events() -> Optional[dict[str, Any]]:
    """The next fast-path event as a dict, or ``None``."""
    text = _native.poll_in_process_events()
    return json.loads(text) if text is not None else None


class DomainEventPublisher:
    """Publishes domain events through Herald: durable (the ``{namespace}_domain_events``
    queue, ``True`` only after commit) and fast (in-process) by default."""

    def __init__(self, correlation_id: Optional[UUID] = None, mode: str = "broadcast") -> None:
        self._default_correlation_id = correlation_id
        self._mode = mode

    def publish(self, event_type: str, payload: dict[str, Any], correlation_id: Optional[UUID] = None) -> bool:
        event = DomainEvent(
            event_type=event_type,
            payload=payload,
            correlation_id=correlation_id or self._default_correlation_id,
        )
        try:
            return publish_domain_event(event.event_type, event.payload, event.correlation_id, self._mode)
        except Exception as e:
            logger.error("Failed to publish domain event: %s", e)
            raise


class InProcessDomainEventPoller:
    """Polls the fast path on a thread of its own and emits each event as
    ``domain.event.received`` on ``event_emitter`` (anything with ``emit``, such as pyee's,
    or an ``EventBridge``)."""

    def __init__(self, event_emitter: Any, polling_interval_ms: int = 50) -> None:
        self._emitter = event_emitter
        self._polling_interval = polling_interval_ms / 1000.0
        self._running = False
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        if self._running:
            raise RuntimeError("InProcessDomainEventPoller already running")
        self._running = True
        self._thread = threading.Thread(target=self._poll_loop, name="herald-domain-event-poller", daemon=True)
        self._thread.start()
        logger.info("InProcessDomainEventPoller started")

    def stop(self, timeout: float = 5.0) -> None:
        self._running = False
        if self._thread:
            self._thread.join(timeout=timeout)
            self._thread = None
        logger.info("InProcessDomainEventPoller stopped")

    def _emit(self, event: InProcessDomainEvent) -> None:
        if hasattr(self._emitter, "emit"):
            self._emitter.emit("domain.event.received", event)
        else:
            self._emitter.publish("domain.event.received", event)

    def _poll_loop(self) -> None:
        while self._running:
            try:
                data = poll_in_process_events()
                if data is not None:
                    self._emit(InProcessDomainEvent.model_validate(data))
                else:
                    time.sleep(self._polling_interval)
            except Exception as e:
                logger.error("Domain event polling error: %s", e)
                time.sleep(self._polling_interval)

    @property
    def is_running(self) -> bool:
        return self._running


def get_health_check() -> HealthCheck:
    """Herald's health, with this Python layer's details."""
    health = HealthCheck.model_validate_json(_native.get_health_check())
    health.python = {"version": platform.python_version(), "implementation": platform.python_implementation()}
    return health


def get_metrics() -> WorkerMetrics:
    """The worker's metrics (the last ``StepExecutionSubscriber.run`` in this process)."""
    return WorkerMetrics.model_validate_json(_native.get_metrics())


def get_config() -> WorkerConfig:
    """The worker's configuration."""
    return WorkerConfig.model_validate_json(_native.get_config())


def is_healthy() -> bool:
    """Whether Herald reports this process healthy."""
    return get_health_check().is_healthy


__all__ = [
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
]
