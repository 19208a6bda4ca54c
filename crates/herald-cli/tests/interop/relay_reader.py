# A plain nats-py reader of what `herald relay` put in a JetStream stream: for each message, one
# JSON line with its subject, its Nats-Msg-Id header and its payload exactly as stored.
import asyncio
import json
import sys

import nats


async def main(url: str, stream: str, count: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    for seq in range(1, count + 1):
        msg = await js.get_msg(stream, seq)
        headers = msg.headers or {}
        print(json.dumps({
            "subject": msg.subject,
            "msg_id": headers.get("Nats-Msg-Id"),
            "payload": msg.data.decode("utf-8"),
        }), flush=True)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
