from __future__ import annotations

import subprocess
import sys


def test_store_service_and_metrics_import_neither_torch_nor_ray() -> None:
    code = (
        "import sys, morphtune.store, morphtune.service, morphtune.service.client, "
        "morphtune.metrics; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'ray'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]", result.stdout
