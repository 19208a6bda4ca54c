# Seed 000's EventBridge as the seed writes it (pyee's EventEmitter), trimmed of logging on the
# hot path: the baseline for Herald's EventBridge.
from pyee import EventEmitter


class EventBridge:
    def __init__(self):
        self._emitter = EventEmitter()
        self._active = False

    def start(self):
        self._active = True

    def stop(self):
        self._active = False
        self._emitter.remove_all_listeners()

    def subscribe(self, event, handler):
        self._emitter.on(event, handler)

    def publish(self, event, *args, **kwargs):
        if not self._active:
            return
        self._emitter.emit(event, *args, **kwargs)
