"""The set of (trial_id, iteration) keys a writer has stored, kept small.

Iterations are small consecutive integers in practice, so each trial holds a byte per
iteration below :data:`DENSE_LIMIT` (500 iterations: 500 bytes) and a set for larger ones;
a million keys take about a megabyte instead of a hundred as a set of tuples.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["DENSE_LIMIT", "KeyIndex"]

#: Iterations below this are kept as bytes; larger ones in a per-trial set.
DENSE_LIMIT = 1 << 16


class KeyIndex:
    """A set of (trial_id, iteration) keys with iteration >= 0."""

    def __init__(self) -> None:
        self._dense: dict[str, bytearray] = {}
        self._sparse: dict[str, set[int]] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, tuple) or len(key) != 2:
            return False
        trial_id, iteration = key
        return self.contains(trial_id, iteration)

    def contains(self, trial_id: str, iteration: int) -> bool:
        if iteration < DENSE_LIMIT:
            seen = self._dense.get(trial_id)
            return seen is not None and iteration < len(seen) and seen[iteration] == 1
        sparse = self._sparse.get(trial_id)
        return sparse is not None and iteration in sparse

    def add(self, trial_id: str, iteration: int) -> None:
        if iteration < DENSE_LIMIT:
            seen = self._dense.get(trial_id)
            if seen is None:
                seen = self._dense[trial_id] = bytearray(max(64, iteration + 1))
            elif iteration >= len(seen):
                seen.extend(bytes(max(iteration + 1, 2 * len(seen)) - len(seen)))
            if not seen[iteration]:
                seen[iteration] = 1
                self._size += 1
            return
        sparse = self._sparse.setdefault(trial_id, set())
        if iteration not in sparse:
            sparse.add(iteration)
            self._size += 1

    def add_table(self, table: pa.Table) -> None:
        """Add the keys of a table with ``trial_id`` and ``iteration`` columns (vectorised)."""
        if table.num_rows == 0:
            return
        trial_ids = table.column("trial_id")
        unique = pc.unique(trial_ids)
        codes = np.asarray(
            pc.index_in(trial_ids, value_set=unique).to_numpy(zero_copy_only=False), np.int64
        )
        iterations = np.asarray(
            table.column("iteration").to_numpy(zero_copy_only=False), dtype=np.int64
        )
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(unique) + 1))
        for code, trial_id in enumerate(unique.to_pylist()):
            own = iterations[order[bounds[code] : bounds[code + 1]]]
            dense = own[own < DENSE_LIMIT]
            if len(dense):
                seen = self._dense.get(trial_id)
                needed = int(dense.max()) + 1
                if seen is None:
                    seen = self._dense[trial_id] = bytearray(max(64, needed))
                elif needed > len(seen):
                    seen.extend(bytes(max(needed, 2 * len(seen)) - len(seen)))
                view = np.frombuffer(seen, dtype=np.uint8)
                before = int(view.sum())
                view[dense] = 1
                self._size += int(view.sum()) - before
                del view  # release the buffer: a bytearray with exports cannot grow
            for iteration in own[own >= DENSE_LIMIT].tolist():
                self.add(trial_id, iteration)
