"""Seed 000's ``EventBridge`` on Herald's bus.

The seed's bridge (pyee) passes any Python objects to handlers. Herald's envelope carries
JSON, so the bridge's ``publish`` (native: it runs no Python code of its own) sends Herald an
event with the name alone, keeps the arguments of the publish in progress beside it, and
each handler gets the objects themselves.

A publish while the bridge is stopped is **refused and counted**, never dropped in silence:
``publish`` returns ``False``, logs a warning on the ``herald.bridge`` logger, and
``stats()['refused_stopped']`` (Herald's counter) grows by one. A handler's exception is
isolated: logged on ``herald.bridge``, counted in ``stats()['handler_errors']``, and the
other handlers still run. ``KeyboardInterrupt`` and ``SystemExit`` are not isolated: they
reach the caller of ``publish``.
"""

from __future__ import annotations

import logging
from typing import Optional

from ._native import NativeBridge

logger = logging.getLogger(__name__)


class EventBridge(NativeBridge):
    """In-process event bus for step execution coordination (seed 000).

    ``subscribe(event, handler)``, ``unsubscribe(event, handler)``,
    ``publish(event, *args, **kwargs)``, ``is_active`` and ``stats()`` are Herald's, native.
    """

    _instance: Optional["EventBridge"] = None

    def __init__(self) -> None:
        self._event_schema = {
            "step.execution.received": "FfiStepEvent",
            "step.completion.sent": "StepExecutionResult",
            "handler.registered": "tuple[str, type]",
            "handler.error": "tuple[FfiStepEvent, Exception]",
            "poller.metrics": "FfiDispatchMetrics",
            "poller.error": "Exception",
        }

    @classmethod
    def instance(cls) -> "EventBridge":
        """The process's bridge."""
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @classmethod
    def reset_instance(cls) -> None:
        """Stops and forgets the process's bridge (for tests)."""
        if cls._instance:
            cls._instance.stop()
        cls._instance = None

    def start(self) -> None:
        """Activates the bridge."""
        super().start()
        logger.info("EventBridge started")

    def stop(self) -> None:
        """Deactivates the bridge and removes every handler."""
        super().stop()
        logger.info("EventBridge stopped")
