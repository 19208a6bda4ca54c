"""Seed 004 on Herald beyond the seed's tests: subclasses' extra fields in metadata, queue
groups sharing messages, JetStream publish with its ack, and typed errors."""

import asyncio
import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest
from herald.nats import CommandEvent, EventBus, PlatformEvent, PublishError

SERVER = os.environ.get("HERALD_TEST_NATS_URL", "nats://127.0.0.1:4222")
ROOT = Path(__file__).resolve().parents[3]
HERALD = os.environ.get("HERALD_BIN", str(ROOT / "target" / "debug" / "herald"))


def test_subclass_fields_travel_in_metadata():
    p = PlatformEvent(subject="a.b", event_type="b", source="s", data={}, platform="discord")
    c = CommandEvent(subject="a.c", event_type="c", source="s", data={}, command="roll", args=[1])
    assert p.metadata["platform"] == "discord" and c.metadata["command"] == "roll"
    assert b'"platform": "discord"' in p.to_json()


@pytest.mark.asyncio
async def test_queue_group_and_jetstream():
    tag = uuid.uuid4().hex[:8]
    a, b = EventBus([SERVER], name=f"a{tag}"), EventBus([SERVER], name=f"b{tag}")
    await a.connect()
    await b.connect()
    got = []
    for bus in (a, b):
        await bus.subscribe(f"qg{tag}.work", lambda e, bus=bus: got.append((bus.name, e.data["i"])), queue="workers")
    for i in range(20):
        await a.publish(f"qg{tag}.work", {"i": i})
    await asyncio.sleep(0.3)
    assert sorted(i for _, i in got) == list(range(20)), "each to exactly one member"
    with pytest.raises(PublishError):
        await a.publish_js(f"nostream{tag}.x", {})
    subprocess.run([HERALD, "streams", "add", f"PY{tag}", "--subjects", f"js{tag}.>", "--bus", SERVER], check=True, capture_output=True)
    try:
        ack = await a.publish_js(f"js{tag}.created", {"n": 1})
        assert ack.stream == f"PY{tag}" and ack.seq == 1
    finally:
        subprocess.run([HERALD, "streams", "rm", f"PY{tag}", "--bus", SERVER], capture_output=True)
    await a.disconnect()
    await b.disconnect()


@pytest.mark.asyncio
async def test_reply_answers_a_plain_nats_py_message():
    """Seed 004's ``reply(msg, data)``: ``msg`` is the nats-py message a plain subscription
    received (it has ``subject`` and ``reply``), not one of Herald's events."""
    import nats

    tag = uuid.uuid4().hex[:8]
    bus = EventBus([SERVER], name=f"r{tag}")
    await bus.connect()
    nc = await nats.connect(SERVER)
    try:

        async def answer(msg):
            await bus.reply(msg, {"pong": True, "asked": msg.subject})

        await nc.subscribe(f"svc{tag}.echo", cb=answer)
        await nc.flush()
        # A plain request (not an envelope), then a Herald request (an envelope).
        plain = await nc.request(f"svc{tag}.echo", b"ping", timeout=5)
        body = json.loads(plain.data)
        assert body["data"] == {"pong": True, "asked": f"svc{tag}.echo"}
        assert body["subject"] == f"svc{tag}.echo"
        response = await bus.request(f"svc{tag}.echo", {"ping": 1}, timeout=5)
        assert response.data["pong"] is True
    finally:
        await nc.close()
        await bus.disconnect()
