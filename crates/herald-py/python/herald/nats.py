"""Seed 004's NATS ``EventBus`` on herald-nats (``herald._native.NativeNats``).

The envelope is Herald's, which is seed 004's ``Event``: ``to_json``/``from_json`` write and
read the same eight fields (``PlatformEvent``'s and ``CommandEvent``'s extra fields travel in
``metadata``, as their ``__post_init__`` puts them; a top-level extra field is accepted by
Herald and counted, never written). Network calls run on a thread (``asyncio.to_thread``), so
the event loop keeps serving subscriptions while a request waits; each delivery is handed to
the loop that subscribed and its handler runs there, isolated (an exception is logged).

A handler answers a request with ``await bus.reply(event, data)``: the event it was given
remembers where the response goes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, Callable, Dict, Optional

from ._native import NativeNats

logger = logging.getLogger(__name__)


class EventPriority(Enum):
    """Event priority levels."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass
class Event:
    """Herald's envelope (seed 004's ``Event``)."""

    subject: str
    event_type: str
    source: str
    data: Dict[str, Any]
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    priority: EventPriority = EventPriority.NORMAL
    metadata: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        d = {k: getattr(self, k) for k in ("subject", "event_type", "source", "data", "timestamp", "correlation_id", "metadata")}
        d["priority"] = self.priority.value
        return json.dumps(d, default=str).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> "Event":
        d = json.loads(data.decode("utf-8"))
        d["priority"] = EventPriority(d.get("priority", "normal"))
        known = {"subject", "event_type", "source", "data", "timestamp", "correlation_id", "priority", "metadata"}
        return cls(**{k: v for k, v in d.items() if k in known})

    def __repr__(self) -> str:
        return (
            f"Event(subject={self.subject}, type={self.event_type}, "
            f"source={self.source}, id={self.correlation_id[:8]}...)"
        )


@dataclass
class PlatformEvent(Event):
    """A platform event; ``platform`` also in ``metadata``."""

    platform: str = "unknown"

    def __post_init__(self) -> None:
        if "platform" not in self.metadata:
            self.metadata["platform"] = self.platform


@dataclass
class CommandEvent(Event):
    """A command event; ``command`` also in ``metadata``."""

    command: str = ""
    args: list = field(default_factory=list)
    kwargs: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "command" not in self.metadata:
            self.metadata["command"] = self.command


class EventBusError(Exception):
    """Base of the event bus's errors."""


class NotConnectedError(EventBusError):
    """An operation that needs a connection, without one."""


class PublishError(EventBusError):
    """A publish that failed."""


class SubscriptionError(EventBusError):
    """A subscription that failed."""


class EventBus:
    """NATS-based event bus (seed 004) on Herald."""

    def __init__(
        self,
        servers: list[str] = None,
        token: str = None,
        name: str = "rosey-core",
        max_reconnect_attempts: int = -1,
    ):
        self.servers = servers or ["nats://localhost:4222"]
        self.token = token
        self.name = name
        self.max_reconnect_attempts = max_reconnect_attempts
        self._native: Optional[NativeNats] = None
        self._subscriptions: Dict[str, int] = {}

    @property
    def connected(self) -> bool:
        return self._native is not None and self._native.connected()

    async def connect(self) -> None:
        if self.connected:
            logger.warning("Already connected to NATS")
            return
        native = NativeNats()
        attempts = None if self.max_reconnect_attempts < 0 else self.max_reconnect_attempts
        try:
            await asyncio.to_thread(native.connect, self.servers, self.name, self.token, attempts)
        except Exception as e:
            raise EventBusError(f"Connection failed: {e}") from e
        self._native = native

    async def disconnect(self) -> None:
        if self._native is None:
            return
        native, self._native = self._native, None
        self._subscriptions.clear()
        try:
            await asyncio.to_thread(native.disconnect)
        except Exception as e:
            logger.error("Error during disconnect: %s", e)

    def _need(self) -> NativeNats:
        if not self.connected or self._native is None:
            raise NotConnectedError("Not connected to NATS")
        return self._native

    def _event(self, subject: str, data: Dict[str, Any], source: str, event_type: Optional[str], **kwargs) -> Event:
        return Event(subject=subject, event_type=event_type or subject.split(".")[-1], source=source, data=data, **kwargs)

    async def publish(self, subject: str, data: Dict[str, Any], source: str = "core", event_type: str = None, **kwargs) -> None:
        """Core publish (no persistence)."""
        native = self._need()
        event = self._event(subject, data, source, event_type, **kwargs)
        try:
            await asyncio.to_thread(native.publish, event.to_json())
        except Exception as e:
            raise PublishError(f"Publish failed: {e}") from e

    async def publish_js(self, subject: str, data: Dict[str, Any], source: str = "core", event_type: str = None, **kwargs):
        """JetStream publish: returns the ack ``(stream, seq, duplicate)`` once stored."""
        native = self._need()
        event = self._event(subject, data, source, event_type, **kwargs)
        try:
            stream, seq, duplicate = await asyncio.to_thread(native.publish_js, event.to_json())
        except Exception as e:
            raise PublishError(f"JetStream publish failed: {e}") from e
        return _Ack(stream=stream, seq=seq, duplicate=duplicate)

    async def subscribe(self, subject: str, handler: Callable[[Event], Any], queue: str = None) -> int:
        """Calls ``await handler(event)`` on this loop for each event on ``subject``."""
        native = self._need()
        loop = asyncio.get_running_loop()

        async def run(event: Event) -> None:
            try:
                result = handler(event)
                if asyncio.iscoroutine(result):
                    await result
            except Exception as e:
                logger.error("Error handling event on %s: %s", subject, e, exc_info=True)

        def deliver(data: bytes, reply: Optional[str]) -> None:
            try:
                event = Event.from_json(data)
            except Exception as e:
                logger.error("Malformed event on %s: %s", subject, e)
                return
            event._reply = reply  # where a response goes, for reply()
            event._raw = data
            loop.call_soon_threadsafe(lambda: loop.create_task(run(event)))

        try:
            handle = await asyncio.to_thread(native.subscribe, subject, deliver, queue)
        except Exception as e:
            raise SubscriptionError(f"Subscription failed: {e}") from e
        self._subscriptions[subject] = handle
        return handle

    async def request(self, subject: str, data: Dict[str, Any], timeout: float = 5.0) -> Event:
        """Request/reply: the response event, or ``TimeoutError``."""
        native = self._need()
        event = Event(subject=subject, event_type="request", source="core", data=data)
        raw = await asyncio.to_thread(native.request, event.to_json(), timeout)
        return Event.from_json(raw)

    async def reply(self, msg: Any, data: Dict[str, Any]) -> None:
        """Answers the request ``msg``: the event a Herald handler was given, or (as in seed
        004) any message with ``reply`` and ``subject``, such as a nats-py ``Msg`` from a
        plain subscription. The response is a Herald envelope on the request's subject,
        carrying the request's correlation id when the request was an envelope."""
        native = self._need()
        reply = getattr(msg, "_reply", None) or getattr(msg, "reply", None)
        if not reply:
            raise PublishError("the message is not a request (no reply subject)")
        raw = getattr(msg, "_raw", None)
        if raw is None and isinstance(msg, Event):
            raw = msg.to_json()
        if raw is None:
            raw = _request_of(msg)
        await asyncio.to_thread(native.reply, reply, raw, json.dumps(data))


def _request_of(msg: Any) -> bytes:
    """The request envelope of a message that is not Herald's own: its payload when that is
    an envelope, else one made from its subject (seed 004's ``reply`` uses only that)."""
    payload = getattr(msg, "data", None)
    if isinstance(payload, (bytes, bytearray)) and payload:
        try:
            Event.from_json(bytes(payload))
            return bytes(payload)
        except Exception:
            pass
    subject = getattr(msg, "subject", None)
    if not subject:
        raise PublishError("the message has no subject to answer on")
    return Event(subject=subject, event_type="request", source="core", data={}).to_json()


@dataclass
class _Ack:
    stream: str
    seq: int
    duplicate: bool


_event_bus: Optional[EventBus] = None


async def initialize_event_bus(servers: list[str] = None, token: str = None, **kwargs) -> EventBus:
    """Connects the process's bus (once)."""
    global _event_bus
    if _event_bus is not None:
        logger.warning("Event bus already initialized")
        return _event_bus
    bus = EventBus(servers=servers, token=token, **kwargs)
    await bus.connect()
    _event_bus = bus
    return bus


async def get_event_bus() -> EventBus:
    """The process's bus; ``RuntimeError`` before ``initialize_event_bus``."""
    if _event_bus is None:
        raise RuntimeError("Event bus not initialized. Call initialize_event_bus() first.")
    return _event_bus


async def shutdown_event_bus() -> None:
    """Disconnects and forgets the process's bus."""
    global _event_bus
    if _event_bus:
        await _event_bus.disconnect()
        _event_bus = None


@asynccontextmanager
async def event_bus_context(servers: list[str] = None, token: str = None):
    """The process's bus for the block's duration."""
    bus = await initialize_event_bus(servers, token)
    try:
        yield bus
    finally:
        await shutdown_event_bus()


__all__ = [
    "CommandEvent",
    "Event",
    "EventBus",
    "EventBusError",
    "EventPriority",
    "NotConnectedError",
    "PlatformEvent",
    "PublishError",
    "SubscriptionError",
    "event_bus_context",
    "get_event_bus",
    "initialize_event_bus",
    "shutdown_event_bus",
]

