"""WatchSweep: result rows in the order the store wrote them, resumable from a token.

Rows are ordered by ``(written_at, trial_id, iteration)``. ``written_at`` is set by the store's
writer, strictly increasing per writer and per batch, and kept by compaction, so a batch that
becomes visible later never sorts before one already sent. A resume token encodes the last
sent key; resuming sends exactly the rows whose key is greater: no repeats, no gaps. A row
written again (a replayed batch) gets a new ``written_at`` and is sent again as written.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from morphtune.service._cache import SweepCache
from morphtune.store._conditions import InvalidArgument
from morphtune.store._frame import SweepFrame

__all__ = ["Position", "decode_token", "encode_token", "rows_after", "watch_rows"]

_TOKEN_VERSION = 1


@dataclass(frozen=True, order=True)
class Position:
    """The key of the last row sent."""

    written_at: float
    trial_id: str
    iteration: int


def encode_token(sweep_id: str, position: Position) -> str:
    body = {
        "v": _TOKEN_VERSION,
        "s": sweep_id,
        "w": position.written_at.hex(),  # exact, unlike a decimal repr round trip
        "t": position.trial_id,
        "i": position.iteration,
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, sweep_id: str, field: str = "resume_token") -> Position:
    """The position in ``token``; :class:`InvalidArgument` when it is malformed or belongs to
    another sweep."""
    try:
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        version, owner = body["v"], body["s"]
        position = Position(float.fromhex(body["w"]), body["t"], body["i"])
    except (ValueError, TypeError, KeyError, binascii.Error, OverflowError):
        raise InvalidArgument(field, "is not a resume token this service issued") from None
    if (
        version != _TOKEN_VERSION
        or not isinstance(position.trial_id, str)
        or not isinstance(position.iteration, int)
    ):
        raise InvalidArgument(field, "is not a resume token this service issued")
    if owner != sweep_id:
        raise InvalidArgument(
            field, f"was issued for sweep {owner!r}, not {sweep_id!r}; watch that sweep"
        )
    return position


def _keys(frame: SweepFrame) -> pa.Table:
    return frame.table(["written_at"])


def end_position(frame: SweepFrame) -> Position | None:
    """The key of the last row written so far (``None`` for no rows)."""
    if not frame.columns:
        return None
    keys = _keys(frame)
    if keys.num_rows == 0:
        return None
    order = _sorted(keys)
    last = keys.slice(int(order[-1]), 1).to_pylist()[0]
    return Position(float(last["written_at"]), last["trial_id"], int(last["iteration"]))


def _sorted(keys: pa.Table) -> np.ndarray:
    sort_keys = [("written_at", "ascending"), ("trial_id", "ascending"), ("iteration", "ascending")]
    return np.asarray(pc.sort_indices(keys, sort_keys=sort_keys).to_numpy(), dtype=np.int64)


def rows_after(
    frame: SweepFrame, position: Position | None, trial_id: str = ""
) -> list[dict[str, Any]]:
    """Every row (all columns plus ``state``) whose key is after ``position``, in key order;
    only ``trial_id``'s rows when given."""
    if not frame.columns:
        return []
    keys = _keys(frame)
    written = keys.column("written_at")
    ids = keys.column("trial_id")
    if position is None:
        after = pc.is_valid(written)
    else:
        later = pc.greater(written, position.written_at)
        same = pc.equal(written, position.written_at)
        later_trial = pc.greater(ids, position.trial_id)
        same_trial = pc.and_(
            pc.equal(ids, position.trial_id),
            pc.greater(keys.column("iteration"), position.iteration),
        )
        after = pc.or_(later, pc.and_(same, pc.or_(later_trial, same_trial)))
    if trial_id:
        after = pc.and_(after, pc.equal(ids, trial_id))
    selected = np.flatnonzero(np.asarray(pc.fill_null(after, False).to_numpy(zero_copy_only=False)))
    if len(selected) == 0:
        return []
    order = _sorted(keys.take(pa.array(selected)))
    rows = selected[order]
    return frame.table(frame.all_columns()).take(pa.array(rows)).to_pylist()


def watch_rows(
    cache: SweepCache,
    sweep_id: str,
    position: Position | None,
    trial_id: str,
    *,
    keep_going: Callable[[], bool],
    wait: Callable[[float], object],
    poll_interval: float,
) -> Iterator[tuple[dict[str, Any], Position]]:
    """Rows after ``position`` and then each new row as it appears, with its position.

    Checks the sweep's fingerprint every ``poll_interval`` (through ``cache``) and reads rows
    only when it changed. Stops when ``keep_going()`` is false; ``wait(seconds)`` sleeps and
    may return early. Raises :class:`~morphtune.store.SweepNotFound` if the sweep vanishes.
    """
    seen = ""
    while keep_going():
        entry = cache.entry(sweep_id)
        if entry.fingerprint != seen:
            seen = entry.fingerprint
            for row in rows_after(entry.frame, position, trial_id):
                position = Position(float(row["written_at"]), row["trial_id"], row["iteration"])
                yield row, position
                if not keep_going():
                    return
        wait(poll_interval)
