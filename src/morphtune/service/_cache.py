"""Answers derived from a sweep, kept while the sweep's store fingerprint is unchanged.

``SweepStore.fingerprint`` lists the sweep's files (no Parquet read); it is checked at most
once per ``check_interval`` seconds per sweep, so a hot query costs a dict lookup. A sweep
whose fingerprint changed gets a fresh :class:`~morphtune.store._frame.SweepFrame` and an
empty answer table. While one thread re-checks a fingerprint, the others answer from the
entry they have (at most one check interval older).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from morphtune.store import SweepNotFound, SweepStore
from morphtune.store._frame import SweepFrame

__all__ = ["CacheEntry", "SweepCache"]


class CacheEntry:
    """One sweep at one fingerprint: its frame (built on first use) and cached answers."""

    def __init__(
        self, store: SweepStore, sweep_id: str, fingerprint: str, now: float, max_answers: int
    ) -> None:
        self.sweep_id = sweep_id
        self.fingerprint = fingerprint
        self.checked = now
        self.answers: dict[Hashable, object] = {}
        self.refreshing = threading.Lock()
        self._store = store
        self._frame: SweepFrame | None = None
        self._frame_lock = threading.Lock()
        self._max_answers = max_answers

    @property
    def frame(self) -> SweepFrame:
        with self._frame_lock:
            if self._frame is None:
                self._frame = SweepFrame(self._store, self.sweep_id)
            return self._frame

    def remember(self, key: Hashable, answer: object) -> object:
        if len(self.answers) >= self._max_answers:
            self.answers.clear()  # distinct queries beyond the bound: start over, stay small
        self.answers[key] = answer
        return answer


class SweepCache:
    """Entries per sweep id, least recently refreshed dropped beyond ``max_sweeps``."""

    def __init__(
        self,
        store: SweepStore,
        *,
        check_interval: float = 0.5,
        max_sweeps: int = 8,
        max_answers: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._interval = check_interval
        self._max_sweeps = max_sweeps
        self._max_answers = max_answers
        self._clock = clock
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, sweep_id: str) -> CacheEntry | None:
        """The cached entry, if it was checked within the interval (no validation)."""
        entry = self._entries.get(sweep_id)
        if entry is not None and self._clock() - entry.checked < self._interval:
            return entry
        return None

    def entry(self, sweep_id: str) -> CacheEntry:
        """The entry for ``sweep_id`` at its current fingerprint; ``sweep_id`` must already be
        validated. Raises :class:`SweepNotFound`."""
        entry = self._entries.get(sweep_id)
        now = self._clock()
        if entry is not None and now - entry.checked < self._interval:
            return entry
        if entry is not None and not entry.refreshing.acquire(blocking=False):
            return entry  # another thread is checking it right now
        try:
            fingerprint = self._store.fingerprint(sweep_id)
        except SweepNotFound:
            self._drop(sweep_id)
            raise
        finally:
            if entry is not None:
                entry.refreshing.release()
        if entry is not None and entry.fingerprint == fingerprint:
            entry.checked = now
            return entry
        fresh = CacheEntry(self._store, sweep_id, fingerprint, now, self._max_answers)
        with self._lock:
            self._entries[sweep_id] = fresh
            self._entries.move_to_end(sweep_id)
            while len(self._entries) > self._max_sweeps:
                self._entries.popitem(last=False)
        return fresh

    def _drop(self, sweep_id: str) -> None:
        with self._lock:
            self._entries.pop(sweep_id, None)
