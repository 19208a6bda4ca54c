"""Operating Herald from Python on a real store: a worker's poisoned steps are listed,
replayed (back to their queue, counted when they die again, refused past max_replays) and
abandoned, each with an audit event; schedules are added (bad input refused by name, nothing
stored), listed with their next five fire times, paused, resumed and removed; a scheduler
(``herald schedule run``) fires one of them."""

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from herald import Operations

ROOT = Path(__file__).resolve().parents[3]
HERALD = os.environ.get("HERALD_BIN", str(ROOT / "target" / "debug" / "herald"))


def herald(store: str, *args: str) -> str:
    out = subprocess.run(
        [HERALD, "--store", store, *args], capture_output=True, text=True, check=True
    )
    return out.stdout


@pytest.fixture()
def store():
    with tempfile.TemporaryDirectory() as d:
        yield f"sqlite://{d}/herald.db"


def test_dead_letters_are_replayed_and_abandoned_with_their_audit(store):
    herald(store, "worker", "--handler", "demo.panic", "--enqueue", "2", "--until-empty", "-q")
    ops = Operations(store)
    places = ops.dlq_places()
    assert [p["name"] for p in places] == ["default_steps_dlq"]
    assert places[0]["count"] == 2
    letters = ops.dlq_letters("default_steps_dlq")
    assert len(letters) == 2 and all("panics" in l["reason"] for l in letters)
    assert json.loads(letters[0]["body"])["subject"] == "step.execution.received"

    with pytest.raises(ValueError, match="999999"):
        ops.dlq_replay("default_steps_dlq", ids=[999999])
    with pytest.raises(ValueError, match="_dlq"):
        ops.dlq_replay("default_steps", all=True)
    with pytest.raises(ValueError, match="max-replays"):
        ops.dlq_replay("default_steps_dlq", all=True, max_replays=0)
    assert len(ops.dlq_letters("default_steps_dlq")) == 2, "nothing moved"

    first = letters[0]["id"]
    report = ops.dlq_replay("default_steps_dlq", ids=[first], who="py-ops", why="fixed")
    assert report == {"done": [first], "refused": []}
    herald(store, "worker", "--until-empty", "-q")
    again = ops.dlq_letters("default_steps_dlq")
    assert sorted(l["replays"] for l in again) == [0, 1]

    capped = ops.dlq_replay("default_steps_dlq", all=True, max_replays=1)
    assert len(capped["done"]) == 1 and len(capped["refused"]) == 1
    left = ops.dlq_letters("default_steps_dlq")
    report = ops.dlq_abandon("default_steps_dlq", "handler retired", all=True)
    assert report["done"] == [l["id"] for l in left]
    assert ops.dlq_letters("default_steps_dlq") == []

    audit = [json.loads(l) for l in herald(store, "store", "read", "herald-audit").splitlines()]
    actions = [e["event"]["data"]["action"] for e in audit]
    assert actions == ["replayed", "replayed", "abandoned"]
    assert audit[0]["event"]["data"]["who"] == "py-ops"


def test_schedules_are_stored_listed_and_fired_once(store):
    ops = Operations(store)
    ops.schedule_add("nightly", "reports", cron="0 3 * * *", tz="Europe/Paris", data={"kind": "daily"})
    ops.schedule_add("beat", "pings", every="500ms", missed="catch-up")
    for bad, match in [
        (dict(name="x", queue="q", cron="not cron"), "not cron"),
        (dict(name="x", queue="q", cron="* * * * *", tz="Mars/Base"), "Mars/Base"),
        (dict(name="x", queue="q", every="0s"), "more than 0"),
        (dict(name="beat", queue="q", every="5s"), "beat exists"),
        (dict(name="b c", queue="q", every="5s"), "b c"),
        (dict(name="x", queue="q", every="5s", missed="sometimes"), "sometimes"),
    ]:
        with pytest.raises(ValueError, match=match):
            ops.schedule_add(**bad)
    listed = {s["spec"]["name"]: s for s in ops.schedules()}
    assert set(listed) == {"beat", "nightly"}, "nothing else stored"
    assert len(listed["nightly"]["next"]) == 5
    assert listed["nightly"]["next"][0].endswith("T02:00:00.000000Z")  # 03:00 in Paris, winter

    ops.schedule_pause("nightly")
    assert {s["spec"]["name"]: s["paused"] for s in ops.schedules()} == {"beat": False, "nightly": True}
    ops.schedule_resume("nightly")
    ops.schedule_remove("nightly")
    with pytest.raises(ValueError, match="no schedule named nightly"):
        ops.schedule_remove("nightly")

    scheduler = subprocess.Popen([HERALD, "--store", store, "schedule", "run"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        ticks = []
        while time.time() < deadline and len(ticks) < 2:
            time.sleep(0.2)
            ticks = herald(store, "queue", "read", "pings", "--vt", "0", "--qty", "100").splitlines()
    finally:
        scheduler.terminate()
        scheduler.wait()
    times = [json.loads(t)["message"]["metadata"]["schedule"]["tick_ms"] for t in ticks]
    assert len(times) >= 2 and len(set(times)) == len(times), times
    assert all(t % 500 == 0 for t in times)
