"""Seed 000's ``EventBridge`` on Herald's bus.

The seed's bridge (pyee) passes any Python objects to handlers. Herald's envelope carries
JSON, so the bridge keeps the arguments of the publish in progress on the Python side and
sends Herald an event whose id names them; handlers get the objects themselves.

A publish while the bridge is stopped is **refused and counted**, never dropped in silence:
``publish`` returns ``False``, logs a warning, and ``stats()['refused_stopped']`` (Herald's
counter) grows by one. A handler's exception is isolated: logged, counted in
``stats()['handler_errors']``, and the other handlers still run.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

from ._native import NativeBus

logger = logging.getLogger(__name__)


class EventBridge:
    """In-process event bus for step execution coordination (seed 000)."""

    _instance: Optional["EventBridge"] = None

    def __init__(self) -> None:
        self._native = NativeBus(100)
        self._native.stop()
        self._active = False
        self._args: Dict[str, Tuple[tuple, dict]] = {}
        self._ids = itertools.count(1)
        self._handles: Dict[Tuple[str, int], List[int]] = {}
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
        self._native.start()
        self._active = True
        logger.info("EventBridge started")

    def stop(self) -> None:
        """Deactivates the bridge and removes every handler."""
        self._native.stop()
        for handles in self._handles.values():
            for h in handles:
                self._native.remove(h)
        self._handles.clear()
        self._active = False
        logger.info("EventBridge stopped")

    def subscribe(self, event: str, handler: Callable[..., Any]) -> None:
        """Calls ``handler(*args, **kwargs)`` for each publish of ``event``."""

        def call(_s: str, _d: str, _src: str, _p: str, _ts: str, event_id: str) -> None:
            args, kwargs = self._args.get(event_id, ((), {}))
            handler(*args, **kwargs)

        handle = self._native.subscribe(event, "bridge", call)
        self._handles.setdefault((event, id(handler)), []).append(handle)
        logger.debug("Subscribed to %s: %s", event, getattr(handler, "__name__", handler))

    def unsubscribe(self, event: str, handler: Callable[..., Any]) -> None:
        """Removes ``handler`` from ``event``."""
        for h in self._handles.pop((event, id(handler)), []):
            self._native.remove(h)

    def publish(self, event: str, *args: Any, **kwargs: Any) -> bool:
        """Publishes ``event`` with these arguments; ``False`` (refused, counted) when stopped."""
        if not self._active:
            logger.warning("EventBridge not active, publish of %s refused", event)
            try:
                self._native.publish(event)
            except RuntimeError:
                pass  # Herald refused it and counted it in refused_stopped
            return False
        event_id = f"py-{next(self._ids)}"
        self._args[event_id] = (args, kwargs)
        try:
            _, failures = self._native.publish(event, "{}", "python", "normal", event_id)
        finally:
            del self._args[event_id]
        for owner, kind, message, _tb in failures:
            logger.error("EventBridge handler failed on %s: %s: %s", event, kind, message)
        return True

    def stats(self) -> Dict[str, int]:
        """Herald's counters for this bridge."""
        return dict(self._native.stats())

    @property
    def is_active(self) -> bool:
        """Whether the bridge is active."""
        return self._active
