# Seed 000's EventBridge unit test, copied with only the import changed.
from herald import EventBridge


def test_event_bridge_publish_subscribe():
    """Test basic pub/sub functionality."""
    bridge = EventBridge()
    bridge.start()

    received = []
    bridge.subscribe("test.event", lambda x: received.append(x))
    bridge.publish("test.event", "data")

    assert received == ["data"]
    bridge.stop()
