"""Where a sweep's results go and where its driver keeps its working state.

A sweep has two homes. Its **results** (the Parquet store: manifest, result and trial parts)
go to the results root, a local directory or an object-store URI (``s3://bucket/prefix``),
where the service, the CLI and reports read them. Its **working state** (Tune's experiment
directory and checkpoints, the kept snapshots for ``resume``, Ray Train storage, the default
SQLite Optuna study, logger files) is local to the driver: Tune, SQLite and the checkpoint
loaders need real files. With a local results root both are the sweep's directory
``<root>/<sweep>``; with an object-store root the working state goes to
``<storage.work>/<sweep>`` (default ``./morphtune-work``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from morphtune.store import SweepStore
from morphtune.store._location import ObjectLocation, open_location

__all__ = ["DEFAULT_WORK", "SweepExistsError", "SweepPaths", "sweep_paths"]

#: The driver's local working directory when results go to an object store.
DEFAULT_WORK = "./morphtune-work"


class SweepExistsError(FileExistsError):
    """The sweep's directory already holds results and overwriting was not asked for."""


@dataclass(frozen=True)
class SweepPaths:
    """The two homes of one sweep (see the module)."""

    sweep_id: str
    #: the results store's root, as :class:`SweepStore` and :class:`ResultWriter` take it
    store_root: str | Path
    #: the driver's local working directory of this sweep
    directory: Path
    #: where the sweep's results are, for people (an object-store URI without its query)
    results_dir: str | Path

    @property
    def on_object_store(self) -> bool:
        return isinstance(self.store_root, str)

    def claim(self, overwrite: bool) -> None:
        """Make the sweep's homes ready for a new run: refuse one that already has results
        (:class:`SweepExistsError`) unless ``overwrite``, which deletes them first."""
        taken = self.directory.exists() and any(self.directory.iterdir())
        if self.on_object_store and SweepStore(self.store_root).has_sweep(self.sweep_id):
            taken = True
        if taken and not overwrite:
            raise SweepExistsError(
                f"sweep {self.sweep_id!r} already has results in {self.results_dir}; pass "
                "--overwrite to replace them or --sweep-id to choose another id"
            )
        if taken:
            if self.on_object_store:
                location = open_location(self.store_root)
                location.delete_tree(location.join(self.sweep_id))
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True, exist_ok=True)


def sweep_paths(results: str | Path, sweep_id: str, work: str | None = None) -> SweepPaths:
    """The homes of sweep ``sweep_id`` for the results root ``results`` (a local path or a
    filesystem URI) and, for object-store roots, the local working root ``work``
    (default :data:`DEFAULT_WORK`). A URI pyarrow cannot open raises ``ValueError``."""
    if isinstance(results, str) and "://" in results:
        location = open_location(results)
        if isinstance(location, ObjectLocation):
            directory = Path(work or DEFAULT_WORK).expanduser().resolve() / sweep_id
            shown = f"{location.display.rstrip('/')}/{sweep_id}"
            return SweepPaths(sweep_id, results, directory, shown)
        results = location.root  # file:// (or a URI pyarrow maps to local disk)
    root = Path(results).expanduser().resolve()
    return SweepPaths(sweep_id, root, root / sweep_id, root / sweep_id)
