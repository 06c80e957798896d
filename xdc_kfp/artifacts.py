"""What the components write into KFP's typed artifacts beyond the step's own files."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def log_metrics(artifact: Any, values: Mapping[str, float]) -> None:
    """Log ``values`` on a ``dsl.Metrics`` output (the KFP UI reads them from its metadata) and
    write them to its file as JSON as well: an artifact without a file is downloadable from
    nowhere, and kfp.local treats a cache entry whose artifact file is missing as a miss, so a
    task with a Metrics output would never be reused."""
    for name, value in values.items():
        artifact.log_metric(name, float(value))
    path = Path(artifact.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(artifact.metadata), indent=2, sort_keys=True) + "\n")
