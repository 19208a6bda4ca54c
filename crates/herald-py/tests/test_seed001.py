# Seed 001's unit tests, copied with only the imports changed; test_domain_event_publisher,
# a `pass` in the seed ("requires a running worker"), is written for real: the event is
# published and read back from the durable queue.
import json
import os
import subprocess
from pathlib import Path

from herald import DomainEventPublisher, HealthCheck, WorkerMetrics, configure

ROOT = Path(__file__).resolve().parents[3]
HERALD = os.environ.get("HERALD_BIN", str(ROOT / "target" / "debug" / "herald"))


def test_domain_event_publisher(tmp_path):
    """Test domain event publishing."""
    store = f"sqlite://{tmp_path / 'h.db'}"
    configure(store, "orders", "py-test")
    publisher = DomainEventPublisher()
    assert publisher.publish("order.created", {"order_id": "123", "amount": 100.0}) is True
    out = subprocess.run(
        [HERALD, "queue", "read", "orders_domain_events", "--qty", "10", "--store", store],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(rows) == 1
    text = json.dumps(rows[0])
    assert "order.created" in text and "123" in text


def test_health_check_model():
    """Test health check model validation."""
    data = {
        "status": "healthy",
        "worker_id": "test-worker",
        "uptime_seconds": 100.0,
        "components": {},
        "rust": {},
        "python": {},
    }
    health = HealthCheck.model_validate(data)
    assert health.is_healthy

def test_metrics_model():
    """Test metrics model validation."""
    data = {
        "worker_id": "test-worker",
        "uptime_seconds": 100.0,
        "steps_processed": 50,
        "steps_succeeded": 45,
        "steps_failed": 5,
        "steps_in_progress": 0,
        "avg_execution_time_ms": 50.0,
        "max_execution_time_ms": 200.0,
        "p95_execution_time_ms": 100.0,
        "p99_execution_time_ms": 150.0,
        "dispatch_channel_pending": 0,
        "completion_channel_pending": 0,
        "dispatch_channel_saturation": 0.0,
        "completion_channel_saturation": 0.0,
        "domain_events_published": 10,
        "domain_events_dropped": 0,
        "handler_errors": 3,
        "timeout_errors": 2,
        "ffi_errors": 0,
    }
    metrics = WorkerMetrics.model_validate(data)
    assert metrics.steps_processed == 50
