# A Python peer that uses seed 004's own Event class (copied verbatim from the seed) over
# nats-py: it reads one event that Herald published, prints what it understood as one JSON
# line, and answers with an event of its own for Herald to read.
import asyncio
import json
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Dict

import nats


class EventPriority(Enum):
    """Event priority levels"""
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass
class Event:
    subject: str                           # NATS subject
    event_type: str                        # Event type identifier
    source: str                            # Source service/component
    data: Dict[str, Any]                   # Event payload
    timestamp: str = field(default_factory=lambda: datetime.utcnow().isoformat())
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    priority: EventPriority = EventPriority.NORMAL
    metadata: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        d = asdict(self)
        d['priority'] = self.priority.value
        return json.dumps(d, default=str).encode('utf-8')

    @classmethod
    def from_json(cls, data: bytes) -> 'Event':
        d = json.loads(data.decode('utf-8'))
        d['priority'] = EventPriority(d['priority'])
        return cls(**d)


async def main(url: str, prefix: str) -> None:
    nc = await nats.connect(url)
    got = asyncio.get_running_loop().create_future()

    async def on_msg(msg):
        if not got.done():
            got.set_result(Event.from_json(msg.data))

    await nc.subscribe(f"{prefix}.from_rust", cb=on_msg)
    await nc.flush()
    print("ready", flush=True)
    event = await asyncio.wait_for(got, timeout=10)
    understood = asdict(event)
    understood['priority'] = event.priority.value
    print(json.dumps(understood), flush=True)
    reply = Event(
        subject=f"{prefix}.from_python",
        event_type="python.answer",
        source="seed004-python",
        data={"echo": event.data, "n": 7},
        priority=EventPriority.CRITICAL,
        correlation_id=event.correlation_id,
        metadata={"lang": "python"},
    )
    # Herald subscribes before it publishes, so it hears this.
    await nc.publish(reply.subject, reply.to_json())
    await nc.flush()
    await nc.close()


asyncio.run(main(sys.argv[1], sys.argv[2]))
