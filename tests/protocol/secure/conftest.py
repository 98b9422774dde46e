"""The secure profile's vectors (``tests/data``, copies of shared/protocol's)."""

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[2] / "data"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / name).read_text(encoding="utf-8"))
    return data


SECURE_VECTORS = load("secure-vectors.json")
NOISE_VECTORS = load("noise-vectors.json")
