"""No code path of the suite deserialises a user's file into code: the loaders it uses stay safe.

User files are read as data only: images (Pillow, tifffile), CSV/JSON/Parquet tables, `.npz`
arrays without pickle, `.keras` models in Keras's safe mode (no Lambda layers or other embedded
code), SAM checkpoints with `torch.load(weights_only=True)`. This scans the suite's own sources for
the calls that would break that promise.
"""

from __future__ import annotations

import re
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for package in ("mcn", "features", "benchmarks", "studies") for p in (ROOT / package).rglob("*.py"))

UNSAFE = {
    r"\bpickle\.loads?\(|\bcloudpickle\.loads?\(|\bdill\.loads?\(": "pickle runs code from the file",
    r"\bjoblib\.load\(": "joblib.load unpickles",
    r"allow_pickle\s*=\s*True": "np.load with pickle runs code from the file",
    r"weights_only\s*=\s*False": "torch.load without weights_only unpickles",
    r"safe_mode\s*=\s*False": "Keras unsafe mode runs Lambda layers from the file",
    r"\bpd\.read_pickle\(|\byaml\.load\(|\byaml\.unsafe_load\(": "deserialises objects",
}


def test_no_unsafe_deserialisation():
    found = [f"{path.relative_to(ROOT)}: {reason}: {m.group(0)}" for path in SOURCES
             for pattern, reason in UNSAFE.items() for m in re.finditer(pattern, path.read_text())]
    assert len(SOURCES) > 20 and not found, found


def test_every_torch_load_passes_weights_only_true():
    calls = [(p, m.group(0)) for p in SOURCES for m in re.finditer(r"torch\.load\([^)]*\)", p.read_text())]
    assert calls and all("weights_only=True" in call for _, call in calls), calls
