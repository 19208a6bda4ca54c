"""Seed 001 on Herald's core: the fast path polled on a thread, health, metrics and config
from the core, and bad input refused with a ValueError naming it."""

import time

import pytest
from herald import (
    EventBridge,
    InProcessDomainEventPoller,
    configure,
    get_config,
    get_health_check,
    get_metrics,
    is_healthy,
    poll_in_process_events,
    publish_domain_event,
)


def test_fast_path_poller_health_metrics_and_config(tmp_path):
    configure(f"sqlite://{tmp_path / 'h.db'}", "shop", "py-obs")
    assert poll_in_process_events() is None
    bridge = EventBridge()
    bridge.start()
    got = []
    bridge.subscribe("domain.event.received", got.append)
    poller = InProcessDomainEventPoller(bridge, polling_interval_ms=5)
    poller.start()
    with pytest.raises(RuntimeError):
        poller.start()
    for i in range(5):
        publish_domain_event("cart.updated", {"n": i}, mode="fast")
    deadline = time.time() + 5
    while len(got) < 5 and time.time() < deadline:
        time.sleep(0.01)
    poller.stop()
    assert [e.payload["n"] for e in got] == [0, 1, 2, 3, 4]
    assert got[0].event_type == "cart.updated" and got[0].source == "py-obs"
    health = get_health_check()
    assert health.is_healthy and is_healthy()
    assert health.components["store"].status.value == "healthy"
    assert health.python["version"]
    metrics = get_metrics()
    assert metrics.domain_events_published == 5
    assert get_config().namespace == "shop"


def test_bad_input_names_the_value(tmp_path):
    configure(f"sqlite://{tmp_path / 'h.db'}")
    with pytest.raises(ValueError, match="sideways"):
        publish_domain_event("x.y", {}, mode="sideways")
    with pytest.raises(ValueError, match="not-a-uuid"):
        publish_domain_event("x.y", {}, correlation_id="not-a-uuid")
    with pytest.raises(ValueError, match="mysql"):
        configure("mysql://nope")
