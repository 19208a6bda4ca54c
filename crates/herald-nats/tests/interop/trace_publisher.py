"""trace_publisher.py: a plain nats-py publisher (no Herald) that sends three envelopes on
SUBJECT: one with `traceparent` only as a NATS header, one with it only in the envelope's
metadata, one with a malformed header. Usage: trace_publisher.py NATS_URL SUBJECT TRACEPARENT"""

import asyncio
import json
import sys

import nats


def envelope(event_id, metadata):
    return json.dumps({
        "subject": sys.argv[2],
        "event_type": "traced",
        "source": "nats-py",
        "data": {},
        "timestamp": "2026-12-04T00:00:00Z",
        "correlation_id": "c-1",
        "priority": "normal",
        "metadata": dict(metadata, event_id=event_id),
    }).encode()


async def main():
    url, subject, traceparent = sys.argv[1], sys.argv[2], sys.argv[3]
    nc = await nats.connect(url)
    await nc.publish(subject, envelope("header", {}),
                     headers={"traceparent": traceparent, "tracestate": "py=1"})
    await nc.publish(subject, envelope("metadata", {"traceparent": traceparent}))
    await nc.publish(subject, envelope("malformed", {}), headers={"traceparent": "00-not-a-trace"})
    await nc.flush()
    await nc.close()


asyncio.run(main())
