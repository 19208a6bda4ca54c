"""Herald's rules behind the seed APIs: isolation of sync and async handlers with counts,
history and statistics, pattern translation, and a publish on a stopped bridge refused and
counted (never dropped in silence)."""

import pytest
from herald import Event, EventBridge, EventBus, NativeBus
from herald.event_bus import translate_pattern


def test_patterns_translate_from_fnmatch_to_herald():
    assert translate_pattern("trivia.*") == ("trivia.>", False)
    assert translate_pattern("*") == (">", False)
    assert translate_pattern("a.*.c") == ("a.*.c", False)
    assert translate_pattern("q?ote.[ab]") == ("q?ote.[ab]", True)


@pytest.mark.asyncio
async def test_sync_and_async_failures_are_isolated_and_counted():
    bus = EventBus()
    got = []

    def sync_bad(event):
        raise KeyError("sync")

    async def async_bad(event):
        raise ValueError("async")

    bus.subscribe("x.*", sync_bad, "a")
    bus.subscribe("x.*", async_bad, "b")
    bus.subscribe("x.*", lambda e: got.append(e.name), "c")
    await bus.publish(Event("x.y.z", {"n": 1}, "src"))
    assert got == ["x.y.z"]
    stats = bus.get_stats()
    assert stats["events_published"] == 1
    assert stats["events_dispatched"] == 3
    assert stats["handler_errors"] == 2
    assert [e.name for e in bus.get_history()] == ["x.y.z"]
    assert bus.get_history()[0].data == {"n": 1}
    assert bus.get_subscriptions("a") == {"x.*": ["a"]}
    bus.unsubscribe_all("a")
    bus.unsubscribe("x.*", "b")
    await bus.publish(Event("x.q", {}, "src"))
    assert got == ["x.y.z", "x.q"]


def test_a_python_exception_keeps_its_type_message_and_traceback():
    bus = NativeBus()

    def bad(*_):
        raise ZeroDivisionError("nope")

    bus.subscribe("t", "owner", bad)
    run, failures = bus.publish("t")
    assert run == 1
    owner, kind, message, tb = failures[0]
    assert (owner, kind, message) == ("owner", "ZeroDivisionError", "nope")
    assert "bad" in tb


def test_bad_input_is_a_value_error_naming_it():
    bus = NativeBus()
    with pytest.raises(ValueError, match="bad..subject"):
        bus.publish("bad..subject")
    with pytest.raises(ValueError, match="JSON object"):
        bus.publish("ok", "[1]")
    with pytest.raises(ValueError, match="urgent"):
        bus.publish("ok", "{}", "src", "urgent")


def test_a_publish_on_a_stopped_bridge_is_refused_and_counted():
    bridge = EventBridge()
    got = []
    bridge.start()
    bridge.subscribe("step.completion.sent", lambda *a, **k: got.append((a, k)))
    assert bridge.publish("step.completion.sent", {"obj": object}, attempt=2) is True
    assert got == [(({"obj": object},), {"attempt": 2})]
    bridge.stop()
    assert bridge.publish("step.completion.sent", "late") is False
    assert bridge.stats()["refused_stopped"] == 1
    assert len(got) == 1
    EventBridge.reset_instance()
    assert EventBridge.instance() is EventBridge.instance()
