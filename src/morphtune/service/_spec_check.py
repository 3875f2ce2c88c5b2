"""Validate submitted spec text with :func:`morphtune.spec.parse_spec`, in a child process.

Checking a spec consults the method registries (torch) and may load a dataset to count steps,
so the service runs :func:`main` in a child Python with the text on stdin and
reads one JSON line back: ``{"ok": true, "name": ...}`` or ``{"ok": false, "error": ...}``.
The service process itself never imports torch. Answers are cached by the text's SHA-256.

Where torch is not installed at all (the slim service image), the child checks what it can
without the method registries: the text is a YAML mapping and its ``name`` is a valid sweep
id. The full check then happens where the sweep runs (``morphtune run`` on the cluster, which
fails the job with the same field-naming errors, visible through the job's status and logs).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections import OrderedDict

__all__ = ["SOURCE", "SpecRejected", "check_spec", "main"]

SOURCE = "<submitted spec>"
_CACHE_SIZE = 64
_cache: OrderedDict[str, tuple[bool, str]] = OrderedDict()
_cache_lock = threading.Lock()


class SpecRejected(ValueError):
    """The spec does not validate; the message is the spec's own error (field paths, lines)."""


def check_spec(text: str, *, timeout: float = 120.0) -> str:
    """The validated spec's ``name``; raises :class:`SpecRejected`, ``TimeoutError`` when the
    check takes longer than ``timeout`` seconds, or ``RuntimeError`` if the checker crashed."""
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    with _cache_lock:
        cached = _cache.get(digest)
    if cached is None:
        cached = _run_child(text, timeout)
        with _cache_lock:
            _cache[digest] = cached
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    ok, answer = cached
    if not ok:
        raise SpecRejected(answer)
    return answer


def _run_child(text: str, timeout: float) -> tuple[bool, str]:
    try:
        child = subprocess.run(
            [sys.executable, "-c", "from morphtune.service._spec_check import main; main()"],
            input=text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"checking the spec took longer than {timeout:.0f} s") from None
    lines = child.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
        return bool(answer["ok"]), str(answer["name"] if answer["ok"] else answer["error"])
    except (IndexError, ValueError, KeyError, TypeError):
        tail = child.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(
            f"the spec checker exited with code {child.returncode}: {tail[0]}"
        ) from None


def main() -> int:
    """The child: spec text on stdin, one JSON line out."""
    from morphtune.spec import SpecError, parse_spec

    text = sys.stdin.read()
    try:
        spec = parse_spec(text, source=SOURCE)
    except SpecError as error:
        print(json.dumps({"ok": False, "error": str(error)}))
    except ModuleNotFoundError as missing:
        if missing.name != "torch":
            raise
        print(json.dumps(_structural_check(text)))
    else:
        print(json.dumps({"ok": True, "name": spec.name}))
    return 0


def _structural_check(text: str) -> dict[str, object]:
    """The check without torch: a YAML mapping whose ``name`` is a valid sweep id."""
    import yaml

    from morphtune.store._schema import validate_sweep_id

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return {"ok": False, "error": f"invalid sweep spec {SOURCE}: not valid YAML: {error}"}
    if not isinstance(data, dict):
        return {"ok": False, "error": f"invalid sweep spec {SOURCE}: a spec must be a mapping"}
    name = data.get("name")
    try:
        validate_sweep_id(name)
    except ValueError as error:
        return {"ok": False, "error": f"invalid sweep spec {SOURCE}: name: {error}"}
    return {"ok": True, "name": name}


if __name__ == "__main__":
    sys.exit(main())
