"""`python -m benchmarks.paper_gpu`, the GPU session's one command, on the smoke profile on a CPU.

Torch always; jax where it is installed (its persistent XLA cache must fill), skipped cleanly otherwise.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from benchmarks.paper_gpu import main


def _run(tiny_scene_dir, out, backends: str) -> pd.DataFrame:
    main(["--backends", backends, "--profile", "smoke", "--models", "microcrystalnet", "--folds", "2",
          "--data", str(tiny_scene_dir), "--out", str(out), "--quiet"])
    return pd.read_csv(out / "paper_gpu.csv")


def test_paper_gpu_writes_one_table_per_backend_run(tiny_scene_dir, tmp_path):
    table = _run(tiny_scene_dir, tmp_path / "run", "torch")
    row = table.set_index("backend").loc["torch"]
    assert row["model"] == "microcrystalnet" and row["folds"] == 2 and row["device"] == "cpu"
    assert 0 <= row["f1_macro_mean"] <= 1 and row["train_seconds"] > 0 and row["wall_seconds"] >= row["train_seconds"]
    assert row["train_crystals_per_second"] > 0 and row["inference_crystals_per_second"] > 0
    text = (tmp_path / "run" / "paper_gpu.md").read_text()
    assert "--backends torch" in text and "microcrystalnet" in text
    assert sorted(p.name for p in (tmp_path / "run" / "torch" / "microcrystalnet").glob("fold_*")) == ["fold_0", "fold_1"]


def test_paper_gpu_refuses_unknown_backends_in_one_line(tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["--backends", "torch,theano", "--out", str(tmp_path / "run")])
    assert str(exit_info.value.code).startswith("error: --backends") and "theano" in str(exit_info.value.code)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed (the [jax] extra)")
def test_paper_gpu_on_jax_fills_the_compilation_cache(tiny_scene_dir, tmp_path):
    table = _run(tiny_scene_dir, tmp_path / "run", "jax")
    assert table["backend"].tolist() == ["jax"] and np.isfinite(table["f1_macro_mean"]).all()
    assert any((tmp_path / "run" / "xla_cache").iterdir())
