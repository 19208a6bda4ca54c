"""Herald's rules behind the seed APIs: isolation of sync and async handlers with counts,
history and statistics, pattern translation, and a publish on a stopped bridge refused and
counted (never dropped in silence)."""

import gc
import warnings

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


@pytest.mark.asyncio
async def test_handlers_get_the_published_object_itself_and_history_keeps_it():
    bus = EventBus(history_size=2)
    seen = []
    bus.subscribe("obj.*", lambda e: seen.append(e), "a")
    events = [Event(f"obj.{i}", {"i": i}, "src") for i in range(3)]
    for e in events:
        await bus.publish(e)
    assert all(a is b for a, b in zip(seen, events))
    # Bounded by history_size, newest first, the very objects.
    history = bus.get_history()
    assert len(history) == 2
    assert history[0] is events[2] and history[1] is events[1]
    assert bus.get_history(1)[0] is events[2]


@pytest.mark.asyncio
async def test_a_handler_that_publishes_gets_its_own_event_and_the_outer_publish_goes_on():
    bus = EventBus()
    seen = []

    async def outer(e):
        seen.append(("outer", e.name))
        await bus.publish(Event("inner.x", {}, "src"))

    def inner(e):
        seen.append(("inner", e.name))

    def after(e):
        seen.append(("after", e.name))

    bus.subscribe("outer.x", outer, "a")
    bus.subscribe("inner.x", inner, "b")
    bus.subscribe("outer.x", after, "c")
    await bus.publish(Event("outer.x", {}, "src"))
    # Sync handlers run in Herald's dispatch; async ones are awaited after it, in order.
    assert seen == [("after", "outer.x"), ("outer", "outer.x"), ("inner", "inner.x")]
    assert bus.get_stats()["events_published"] == 2


def test_bridge_handlers_get_each_publishs_arguments_even_when_nested():
    bridge = EventBridge()
    bridge.start()
    got = []

    def first(x, *, tag=None):
        got.append(("first", x, tag))
        if x == 1:
            bridge.publish("second", 2, tag="inner")
        got.append(("first-after", x, tag))

    def bad(*_a, **_k):
        raise RuntimeError("isolated")

    bridge.subscribe("first", first)
    bridge.subscribe("first", bad)
    bridge.subscribe("second", lambda x, tag=None: got.append(("second", x, tag)))
    assert bridge.publish("first", 1, tag="outer") is True
    assert got == [("first", 1, "outer"), ("second", 2, "inner"), ("first-after", 1, "outer")]
    assert bridge.stats()["handler_errors"] == 1
    bridge.unsubscribe("first", first)
    got.clear()
    assert bridge.publish("first", 3) is True
    assert got == []
    bridge.stop()
    assert not bridge.is_active


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_ctrl_c_in_a_handler_is_not_isolated_it_ends_the_publish(exc):
    # Ctrl-C while a handler runs arrives as KeyboardInterrupt inside it: it is raised to
    # the publisher (the handlers after it are skipped), never swallowed as a failure.
    got = []

    def interrupted(*_a, **_k):
        raise exc()

    bus = NativeBus()
    bus.subscribe("t", "a", interrupted)
    bus.subscribe("t", "b", lambda *a: got.append("b"))
    with pytest.raises(exc):
        bus.publish("t")
    assert got == []

    bridge = EventBridge()
    bridge.start()
    bridge.subscribe("t", interrupted)
    bridge.subscribe("t", lambda *a, **k: got.append("bridge"))
    with pytest.raises(exc):
        bridge.publish("t", 1)
    assert got == []
    # The bridge goes on working after it.
    bridge.unsubscribe("t", interrupted)
    assert bridge.publish("t", 2) is True
    assert got == ["bridge"]


@pytest.mark.asyncio
async def test_ctrl_c_in_an_event_bus_handler_reaches_the_awaiting_caller():
    bus = EventBus()
    got = []

    async def first(_e):
        got.append("first")

    def interrupted(_e):
        raise KeyboardInterrupt()

    bus.subscribe("k.*", first, "a")
    bus.subscribe("k.*", interrupted, "b")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KeyboardInterrupt):
            await bus.publish(Event("k.x", {}, "src"))
        gc.collect()
    # The coroutine the first handler returned is closed, not left never awaited.
    assert got == []
    assert not [w for w in caught if "never awaited" in str(w.message)]
