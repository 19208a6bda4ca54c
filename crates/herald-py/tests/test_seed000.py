# Seed 000's unit tests, copied with only the import changed.
from herald import EventBridge, HandlerRegistry, StepHandler, StepHandlerResult


def test_event_bridge_publish_subscribe():
    """Test basic pub/sub functionality."""
    bridge = EventBridge()
    bridge.start()

    received = []
    bridge.subscribe("test.event", lambda x: received.append(x))
    bridge.publish("test.event", "data")

    assert received == ["data"]
    bridge.stop()

def test_handler_registry_register_resolve():
    """Test handler registration and resolution."""
    registry = HandlerRegistry()

    class TestHandler(StepHandler):
        handler_name = "test_handler"
        def call(self, context):
            return StepHandlerResult.success({})

    registry.register("test_handler", TestHandler)
    handler = registry.resolve("test_handler")

    assert handler is not None
    assert handler.name == "test_handler"

def test_step_handler_result_factory_methods():
    """Test StepHandlerResult factory methods."""
    success = StepHandlerResult.success({"key": "value"})
    assert success.success is True
    assert success.result == {"key": "value"}

    failure = StepHandlerResult.failure("error", retryable=False)
    assert failure.success is False
    assert failure.retryable is False
