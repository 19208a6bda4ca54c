"""Operating Herald from Python: the same verbs as ``herald dlq`` and ``herald schedule``.

``Operations(store_url)`` works on ``sqlite://PATH`` or ``postgres://...``:

- dead letters: ``dlq_places()``, ``dlq_letters(place)``, ``dlq_replay(place, ids=[...] or
  all=True)`` and ``dlq_abandon(place, reason, ...)``. Each letter is replayed or abandoned in
  one transaction with its audit event on the event store's ``herald-audit`` stream; a letter
  replayed ``max_replays`` times already is refused unless ``force=True``.
- schedules: ``schedule_add(name, queue, cron=... or every="30s", ...)``, ``schedules()``
  (each with its next five fire times), ``schedule_remove``, ``schedule_pause``,
  ``schedule_resume``. A scheduler (``herald schedule run``, ``herald worker --scheduler``)
  sends each tick exactly once.

Bad input raises ``ValueError`` naming the value, with nothing stored or moved; a store that
fails raises ``RuntimeError``.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from ._native import NativeOperations


class Operations:
    """The operator's verbs on one store."""

    def __init__(self, store_url: str) -> None:
        self._native = NativeOperations(store_url)

    def dlq_places(self) -> list[dict[str, Any]]:
        """Every dead-letter place: name, origin, count, oldest_age_ms."""
        return json.loads(self._native.dlq_places())

    def dlq_letters(self, place: str, limit: int = 20) -> list[dict[str, Any]]:
        """Letters of ``place``: id, origin, reason, attempts, died_at, replays, body."""
        return json.loads(self._native.dlq_letters(place, limit))

    def dlq_replay(
        self,
        place: str,
        ids: Optional[list[int]] = None,
        all: bool = False,
        max_replays: int = 3,
        force: bool = False,
        who: Optional[str] = None,
        why: Optional[str] = None,
    ) -> dict[str, Any]:
        """Sends letters back to their queue; returns ``{"done": [...], "refused": [...]}``."""
        return json.loads(
            self._native.dlq_replay(place, ids, all, max_replays, force, who, why)
        )

    def dlq_abandon(
        self,
        place: str,
        reason: str,
        ids: Optional[list[int]] = None,
        all: bool = False,
        who: Optional[str] = None,
    ) -> dict[str, Any]:
        """Gives letters up (archived, recorded with ``reason``)."""
        return json.loads(self._native.dlq_abandon(place, reason, ids, all, who))

    def schedule_add(
        self,
        name: str,
        queue: str,
        cron: Optional[str] = None,
        every: Optional[str] = None,
        data: Optional[dict[str, Any]] = None,
        subject: Optional[str] = None,
        tz: str = "UTC",
        missed: str = "skip",
    ) -> None:
        """Stores a schedule (``cron`` or ``every``, not both)."""
        text = None if data is None else json.dumps(data)
        self._native.schedule_add(name, queue, cron, every, text, subject, tz, missed)

    def schedules(self) -> list[dict[str, Any]]:
        """Every schedule: ``spec``, ``paused``, ``last_tick`` and its ``next`` five fire times."""
        return json.loads(self._native.schedules())

    def schedule_remove(self, name: str) -> None:
        self._native.schedule_remove(name)

    def schedule_pause(self, name: str) -> None:
        self._native.schedule_pause(name, True)

    def schedule_resume(self, name: str) -> None:
        self._native.schedule_pause(name, False)
