# Seed 004's unit tests (tests/core/test_event_bus.py), copied with the imports changed and
# two fixes, each marked: the seed's test_request_reply is a `pass` and is written for real;
# its test_context_manager calls get_event_bus() once outside pytest.raises after the
# shutdown, where it can only raise (a bug in the seed), so that call is inside the raises.
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import asyncio
import pytest_asyncio
from herald.nats import (
    EventBus,
    initialize_event_bus,
    get_event_bus,
    shutdown_event_bus,
    NotConnectedError,
    event_bus_context
)
from herald.nats import Event

SERVER = os.environ.get("HERALD_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest_asyncio.fixture
async def event_bus():
    """Create and connect event bus for testing"""
    bus = await initialize_event_bus([SERVER])
    yield bus
    await shutdown_event_bus()


@pytest.mark.asyncio
async def test_connect_disconnect():
    """Test basic connection lifecycle"""
    bus = EventBus([SERVER])
    assert not bus.connected

    await bus.connect()
    assert bus.connected

    await bus.disconnect()
    assert not bus.connected


@pytest.mark.asyncio
async def test_publish_subscribe(event_bus):
    """Test pub/sub messaging"""
    received = []

    async def handler(event):
        received.append(event)

    await event_bus.subscribe("test.hello", handler)
    await event_bus.publish("test.hello", {"msg": "world"})

    await asyncio.sleep(0.1)  # Allow message delivery

    assert len(received) == 1
    assert received[0].data["msg"] == "world"
    assert received[0].event_type == "hello"


@pytest.mark.asyncio
async def test_wildcard_subscription(event_bus):
    """Test wildcard subscriptions"""
    received = []

    async def handler(event):
        received.append(event)

    await event_bus.subscribe("test.>", handler)

    await event_bus.publish("test.one", {"id": 1})
    await event_bus.publish("test.two", {"id": 2})
    await event_bus.publish("other.three", {"id": 3})

    await asyncio.sleep(0.1)

    assert len(received) == 2
    assert received[0].data["id"] == 1
    assert received[1].data["id"] == 2


@pytest.mark.asyncio
async def test_request_reply(event_bus):
    """Test request/reply pattern"""

    async def handler(event):
        # Simulate processing
        await asyncio.sleep(0.1)
        # Herald: written for real; the handler answers with bus.reply(event, ...).
        await event_bus.reply(event, {"result": event.data["input"] * 2})

    await event_bus.subscribe("test.double", handler)
    response = await event_bus.request("test.double", {"input": 21}, timeout=5.0)
    assert response.data["result"] == 42
    assert response.event_type == "response"


@pytest.mark.asyncio
async def test_publish_not_connected():
    """Test publishing when not connected raises error"""
    bus = EventBus()

    with pytest.raises(NotConnectedError):
        await bus.publish("test", {})


@pytest.mark.asyncio
async def test_context_manager():
    """Test context manager"""
    async with event_bus_context([SERVER]) as bus:
        assert bus.connected
        await bus.publish("test", {"msg": "hello"})

    # Should be disconnected after context
    # Herald: the seed calls get_event_bus() here outside pytest.raises; it raises.
    # Event bus is shut down, should raise
    with pytest.raises(RuntimeError):
        await get_event_bus()


@pytest.mark.asyncio
async def test_event_serialization():
    """Test Event to/from JSON"""
    event = Event(
        subject="test.event",
        event_type="test",
        source="unit-test",
        data={"key": "value", "number": 42}
    )

    # Serialize
    json_bytes = event.to_json()
    assert isinstance(json_bytes, bytes)

    # Deserialize
    restored = Event.from_json(json_bytes)
    assert restored.subject == event.subject
    assert restored.event_type == event.event_type
    assert restored.source == event.source
    assert restored.data == event.data
