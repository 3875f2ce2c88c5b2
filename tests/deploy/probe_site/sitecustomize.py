"""Make this interpreter look like the service image: absent distributions cannot be imported.

``tests/deploy/test_service_deps.py`` puts this directory on ``PYTHONPATH`` of the processes
it starts (the server, the query CLI, and any Python they start themselves, such as the
SubmitSweep spec checker), with:

* ``MORPHTUNE_PROBE_BLOCKED``: a JSON file ``{top-level module: distribution}`` of installed
  distributions that ``deploy/service-requirements.txt`` does not bring into the image;
  importing one raises ``ModuleNotFoundError``, as it would there;
* ``MORPHTUNE_PROBE_REPORTS``: a directory; at exit each process writes ``<pid>.json`` with
  the modules it imported after start-up (``{name: file}``) and the imports it refused.

Only the standard library is used here, so nothing third-party is loaded before the blocker.
"""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.machinery
import json
import os
import sys
from collections.abc import Sequence
from types import ModuleType


class _AbsentDistributions(importlib.abc.MetaPathFinder):
    def __init__(self, blocked: dict[str, str]) -> None:
        self.blocked = blocked
        self.refused: list[str] = []

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        top = fullname.partition(".")[0]
        if top in self.blocked:
            self.refused.append(fullname)
            raise ModuleNotFoundError(
                f"No module named {fullname!r} (distribution {self.blocked[top]} is not in"
                " the service image)",
                name=fullname,
            )
        return None


def _install() -> None:
    blocked_path = os.environ.get("MORPHTUNE_PROBE_BLOCKED")
    reports = os.environ.get("MORPHTUNE_PROBE_REPORTS")
    if not blocked_path or not reports:
        return
    with open(blocked_path, encoding="utf-8") as handle:
        finder = _AbsentDistributions(json.load(handle))
    before = set(sys.modules)
    sys.meta_path.insert(0, finder)

    def report() -> None:
        modules = {
            name: getattr(module, "__file__", None) or ""
            for name, module in list(sys.modules.items())
            if name not in before and module is not None
        }
        path = os.path.join(reports, f"{os.getpid()}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"argv": sys.argv, "modules": modules, "refused": finder.refused}, handle)

    atexit.register(report)


_install()
