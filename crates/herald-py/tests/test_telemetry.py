"""Span export from Python: in a child interpreter (the exporter is process-wide), a publish
on Herald's bus with a handler is exported by OTLP/HTTP to a receiver this test runs on
loopback: a protobuf POST to /v1/traces holding the publish and process spans and the
service name; an endpoint that is neither http:// nor https:// is refused with the key named."""

import http.server
import os
import subprocess
import sys
import textwrap
import threading

import herald
import pytest

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import herald
    from herald import Event, EventBus

    assert herald.start_telemetry(endpoint=sys.argv[1], service_name="py-telemetry-test")

    async def main():
        bus = EventBus()
        seen = []
        bus.subscribe("py.traced", lambda e: seen.append(e.name), "t")
        await bus.publish(Event("py.traced", {"n": 1}, "src"))
        assert seen == ["py.traced"], seen

    asyncio.run(main())
    herald.shutdown_telemetry()
    """
)


def test_spans_are_exported_by_otlp_http():
    received = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append((self.path, self.headers.get("content-type"), body))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        done = subprocess.run(
            [sys.executable, "-c", CHILD, endpoint], env=env, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()
    finally:
        server.shutdown()
    assert received, "no export reached the receiver"
    body = b"".join(b for _, _, b in received)
    assert all(p == "/v1/traces" for p, _, _ in received)
    assert all(c == "application/x-protobuf" for _, c, _ in received)
    for needle in [b"py-telemetry-test", b"publish py.traced", b"process py.traced", b"herald"]:
        assert needle in body, needle


def test_an_endpoint_that_is_not_http_is_refused_naming_the_key():
    with pytest.raises(ValueError, match="telemetry.endpoint"):
        herald.start_telemetry(endpoint="ftp://collector:4318")
