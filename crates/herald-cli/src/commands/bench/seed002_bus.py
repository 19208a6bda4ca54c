# The seed 002 EventBus (lib/plugin/event_bus.py), trimmed of docstrings and logging calls on
# the hot path, measured with the same two subscribers as `herald bench bus`: one exact and one
# wildcard async handler. Prints publishes per second; scripts/bench-python.sh imports its
# EventBus too.
import asyncio, fnmatch, sys, time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum


class EventPriority(IntEnum):
    LOW = 0
    NORMAL = 1
    HIGH = 2


@dataclass
class Event:
    name: str
    data: dict
    source: str
    priority: EventPriority = EventPriority.NORMAL
    timestamp: datetime = field(default_factory=datetime.now)


class EventBus:
    def __init__(self, history_size=100):
        self._subscriptions = defaultdict(list)
        self._history = deque(maxlen=history_size)
        self._stats = {"events_published": 0, "events_dispatched": 0, "handler_errors": 0}

    def subscribe(self, event_pattern, handler, plugin_name):
        self._subscriptions[event_pattern].append((plugin_name, handler))

    async def publish(self, event):
        self._stats["events_published"] += 1
        self._history.append(event)
        handlers = self._find_handlers(event.name)
        if not handlers:
            return
        handlers_by_priority = defaultdict(list)
        for plugin_name, handler in handlers:
            handlers_by_priority[event.priority].append((plugin_name, handler))
        for priority in sorted(handlers_by_priority.keys(), reverse=True):
            await self._dispatch_handlers(event, handlers_by_priority[priority])

    def _find_handlers(self, event_name):
        handlers = []
        for pattern, subscribers in self._subscriptions.items():
            if fnmatch.fnmatch(event_name, pattern):
                handlers.extend(subscribers)
        return handlers

    async def _dispatch_handlers(self, event, handlers):
        for plugin_name, handler in handlers:
            try:
                self._stats["events_dispatched"] += 1
                await handler(event)
            except Exception:
                self._stats["handler_errors"] += 1


async def main(n):
    bus = EventBus()
    count = [0]

    async def h(event):
        count[0] += 1

    bus.subscribe("bench.tick", h, "exact")
    bus.subscribe("bench.*", h, "wildcard")
    event = Event("bench.tick", {"n": 1}, "bench")
    start = time.perf_counter()
    for _ in range(n):
        await bus.publish(event)
    elapsed = time.perf_counter() - start
    assert count[0] == 2 * n
    print(n / elapsed)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
