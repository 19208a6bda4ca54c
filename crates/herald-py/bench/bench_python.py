"""herald bench python: Herald's EventBridge and EventBus.publish from Python beside the seeds'
own implementations (seed 000's pyee EventBridge, seed 002's pure-Python EventBus), measured
in the same run, alternating, median of 5. Prints one line per figure with the ratio.

Run with scripts/bench-python.sh (builds the package in release mode first)."""

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
# Seed 002's bus: the same file `herald bench bus` runs.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "herald-cli" / "src" / "commands" / "bench"))

import herald  # noqa: E402
import seed000_bridge  # noqa: E402
import seed002_bus  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000


def bridge_rate(bridge) -> float:
    count = [0]

    def h(x):
        count[0] += 1

    bridge.start()
    bridge.subscribe("step.completion.sent", h)
    start = time.perf_counter()
    for i in range(N):
        bridge.publish("step.completion.sent", i)
    elapsed = time.perf_counter() - start
    bridge.stop()
    assert count[0] == N, count[0]
    return N / elapsed


async def bus_rate(bus, event) -> float:
    count = [0]

    async def h(e):
        count[0] += 1

    bus.subscribe("bench.tick", h, "exact")
    bus.subscribe("bench.*", h, "wildcard")
    start = time.perf_counter()
    for _ in range(N):
        await bus.publish(event)
    elapsed = time.perf_counter() - start
    assert count[0] == 2 * N, count[0]
    return N / elapsed


def paired(a, b, runs=5):
    xs, ys = [], []
    for i in range(runs):
        if i % 2 == 0:
            xs.append(a()); ys.append(b())
        else:
            ys.append(b()); xs.append(a())
    return statistics.median(xs), statistics.median(ys)


def line(name, herald_rate, base_rate, base_name, target=2.0):
    ratio = herald_rate / base_rate if base_rate else 0.0
    met = "met" if ratio >= target else "NOT met"
    print(f"{name:<32} {herald_rate:>12.0f} {base_rate:>12.0f} {ratio:>6.2f}x  publishes/s  {base_name} (target {target}x: {met})")


def main():
    print(f"{'figure':<32} {'herald':>12} {'baseline':>12} {'ratio':>7}  unit         baseline")
    h, b = paired(lambda: bridge_rate(herald.EventBridge()), lambda: bridge_rate(seed000_bridge.EventBridge()))
    line("python_event_bridge_publish", h, b, "seed 000's pyee EventBridge")
    h, b = paired(
        lambda: asyncio.run(bus_rate(herald.EventBus(), herald.Event("bench.tick", {"n": 1}, "bench"))),
        lambda: asyncio.run(bus_rate(seed002_bus.EventBus(), seed002_bus.Event("bench.tick", {"n": 1}, "bench"))),
    )
    line("python_event_bus_publish", h, b, "seed 002's pure-Python EventBus, 2 async subscribers")


if __name__ == "__main__":
    main()
