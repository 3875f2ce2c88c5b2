"""The writer process of the T12 crash test: replays a fixed plan of batches into a store.

    python crash_writer.py ROOT [--cleanup]

The plan (:func:`plan`) is deterministic: ``BATCHES`` batches of rows drawn with repeats
(within and across batches) from 40 trials x 60 iterations; every batch is followed by a
manifest update, every ``COMPACT_EVERY``-th by a compaction. Odd batches go through the
column-wise path. A restarted process replays the whole plan: the writer's deduplication
skips what is stored. Before each step it prints ``W <i>``, ``M <i>`` or ``C <i>`` (flushed)
so the test can aim its SIGKILL; ``DONE`` at the end.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np

from morphtune.store import ResultWriter

SWEEP = "crash"
BATCHES = 60
ROWS = 500
COMPACT_EVERY = 4


def plan() -> list[list[tuple[str, int, float]]]:
    rng = random.Random(12)
    return [
        [
            (f"t{rng.randrange(40):02d}", rng.randrange(60), round(rng.random(), 6))
            for _ in range(ROWS)
        ]
        for _ in range(BATCHES)
    ]


def expected() -> dict[tuple[str, int], float]:
    """The store's content after the whole plan: the first write of each key."""
    model: dict[tuple[str, int], float] = {}
    for batch in plan():
        for trial_id, iteration, value in batch:
            model.setdefault((trial_id, iteration), value)
    return model


def _rows(batch: list[tuple[str, int, float]]) -> list[dict[str, Any]]:
    return [
        {
            "trial_id": trial_id,
            "iteration": iteration,
            "status": "running",
            "config": {"lr": 0.001 * (1 + int(trial_id[1:])), "model": {"width": 64}},
            "metrics": {"acc": value, "loss": 1.0 - value, "params": 1000 + iteration},
        }
        for trial_id, iteration, value in batch
    ]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(root: str, cleanup: bool) -> None:
    writer = ResultWriter(root, SWEEP)
    for index, batch in enumerate(plan()):
        say(f"W {index}")
        if index % 2:
            writer.write_columns(
                [row[0] for row in batch],
                np.array([row[1] for row in batch], dtype=np.int64),
                metrics={
                    "acc": [row[2] for row in batch],
                    "loss": [1.0 - row[2] for row in batch],
                    "params": [1000.0 + row[1] for row in batch],
                },
                config={
                    "lr": [0.001 * (1 + int(row[0][1:])) for row in batch],
                    "model.width": [64.0] * len(batch),
                },
            )
        else:
            writer.write_results(_rows(batch))
        say(f"M {index}")
        writer.update_manifest(progress=index)
        if index % COMPACT_EVERY == COMPACT_EVERY - 1:
            say(f"C {index}")
            writer.compact()
    if cleanup:
        writer.remove_stale_temp_files(0)
    say("DONE")


if __name__ == "__main__":
    main(sys.argv[1], "--cleanup" in sys.argv[2:])
