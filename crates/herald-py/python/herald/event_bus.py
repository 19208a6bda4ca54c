"""Seed 002's plugin event bus on Herald's bus.

Patterns: seed 002 matches names with ``fnmatch``, where ``*`` crosses dots. Herald uses
NATS token rules everywhere (DESIGN.md), so a pattern is translated once, at subscribe:
``*`` alone and a trailing ``.*`` become ``>`` (one or more tokens, as fnmatch would match
them), any other ``*`` matches one token, and a pattern with ``?`` or ``[...]`` is kept as an
explicit glob. A pattern that means something else under the two rules is therefore written
the NATS way (``trivia.*.ended``: one token in the middle).

Handlers may be ``async def`` (run on the caller's event loop, in Herald's dispatch order)
or plain functions. A handler's exception is isolated: logged, counted in
``get_stats()['handler_errors']``, and the other handlers still run. ``KeyboardInterrupt``
and ``SystemExit`` are not isolated: they reach the caller of ``publish``.

The ``Event`` object itself travels through Herald's bus (no JSON on the way): Herald routes,
orders, isolates and counts it, every handler gets the very object published, as in the
seed, and ``get_history()`` returns those objects.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum
from typing import Any, Callable, Dict, List, Optional

from ._native import NativeBus


class EventPriority(IntEnum):
    """Event priority levels (seed 002); Herald's ``critical`` is above ``HIGH``."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    CRITICAL = 3


@dataclass
class Event:
    """An event for inter-plugin communication (seed 002)."""

    name: str
    data: Dict[str, Any]
    source: str
    priority: EventPriority = EventPriority.NORMAL
    timestamp: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    def __str__(self) -> str:
        return f"Event({self.name} from {self.source})"


def translate_pattern(pattern: str) -> tuple[str, bool]:
    """Seed 002's fnmatch pattern as Herald's ``(pattern, is_glob)``."""
    if any(c in pattern for c in "?["):
        return pattern, True
    if pattern == "*":
        return ">", False
    if pattern.endswith(".*"):
        return pattern[:-1] + ">", False
    return pattern, False


class EventBus:
    """Seed 002's pub/sub bus for plugins, on Herald's bus."""

    def __init__(self, history_size: int = 100, logger: Optional[logging.Logger] = None):
        self.logger = logger or logging.getLogger("plugin.event_bus")
        self._native = NativeBus(history_size, objects=True)
        # (pattern as given, plugin) -> [(handle, handler)]
        self._handles: Dict[tuple[str, str], List[tuple[int, Callable]]] = {}
        self._async_errors = 0

    def subscribe(self, event_pattern: str, handler: Callable, plugin_name: str) -> None:
        """Calls ``handler(event)`` for every event whose name matches ``event_pattern``."""
        pattern, glob = translate_pattern(event_pattern)
        handle = self._native.subscribe(pattern, plugin_name, handler, "normal", glob, True)
        self._handles.setdefault((event_pattern, plugin_name), []).append((handle, handler))
        self.logger.debug("%s subscribed to %s (%s)", plugin_name, event_pattern, pattern)

    def unsubscribe(self, event_pattern: str, plugin_name: str) -> None:
        """Removes ``plugin_name``'s subscriptions made with ``event_pattern``."""
        for handle, _ in self._handles.pop((event_pattern, plugin_name), []):
            self._native.remove(handle)

    def unsubscribe_all(self, plugin_name: str) -> None:
        """Removes every subscription of ``plugin_name``."""
        for key in [k for k in self._handles if k[1] == plugin_name]:
            self.unsubscribe(*key)

    async def publish(self, event: Event) -> None:
        """Publishes ``event`` and returns once every matching handler has run."""
        pending, failures = self._native.dispatch(event.name, event, event.source, event.priority)
        if failures:
            for owner, kind, message, _tb in failures:
                self.logger.error("handler of %s failed on %s: %s: %s", owner, event.name, kind, message)
        if pending:
            # Awaited here, on the caller's loop, in Herald's dispatch order.
            for owner, awaitable in pending:
                try:
                    await awaitable
                except Exception as e:  # isolated, as Herald isolates a Rust handler
                    self._async_errors += 1
                    self.logger.error("handler of %s failed on %s: %r", owner, event.name, e)

    def get_history(self, count: Optional[int] = None) -> List[Event]:
        """The last ``count`` events (all by default), newest first."""
        return self._native.objects(count)

    def get_stats(self) -> Dict[str, int]:
        """``events_published``, ``events_dispatched``, ``handler_errors`` (and Herald's others)."""
        stats = dict(self._native.stats())
        stats["handler_errors"] += self._async_errors
        return stats

    def get_subscriptions(self, plugin_name: Optional[str] = None) -> Dict[str, List[str]]:
        """``{pattern: [plugin, ...]}``, as given at subscribe."""
        out: Dict[str, List[str]] = {}
        for (pattern, plugin), handles in self._handles.items():
            if plugin_name is None or plugin == plugin_name:
                out.setdefault(pattern, []).extend([plugin] * len(handles))
        return out


__all__ = ["Event", "EventBus", "EventPriority", "translate_pattern"]
