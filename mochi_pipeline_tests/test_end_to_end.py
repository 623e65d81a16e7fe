"""End to end, as `make demo` runs it: `mochi run` then `mochi report`, on a generated repository.

Training is cut to a few steps; everything else is the real pipeline: git → chunks → dataset →
LoRA on the tiny base → evaluation → merge → GGUF verified against transformers → Modelfile,
and a completion from llama.cpp.
"""

from __future__ import annotations

import shutil

import yaml

from mochi_pipeline.resources import read_asset_file
from mochi_pipeline_tests.test_cli import mochi
from mochi_pipeline_tests.training.store_project import TEST_TINY_STEPS


def test_whole_pipeline_from_repository_to_gguf(sample_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    (repo / "mochi.yaml").write_text(yaml.safe_dump({
        "generation": {"eval_time_share": 0.3},
        "training": {"tiny_pretrain_steps": TEST_TINY_STEPS, "max_steps": 6, "eval_steps": 3, "save_steps": 3,
                     "max_seq_length": 128, "batch_size": 4, "eval_max_examples": 16, "eval_max_new_tokens": 8},
        "export": {"quantizations": ["f16", "q8_0"]},
    }))

    run = mochi(repo, "run")
    assert "Materializing 17 asset(s)" in run.stdout

    art = repo / ".mochi"
    gguf = read_asset_file(art / "assets" / "gguf_model.json")
    assert {f.quantization for f in gguf.files} == {"f16", "q8_0"}
    assert "\nFROM ./mochi-q8_0.gguf\n" in (art / "gguf" / "model" / "Modelfile").read_text()
    report = read_asset_file(art / "assets" / "evaluation_report.json")
    assert report.metrics["base"]["overall"]["perplexity"] > 0

    out = mochi(repo, "report").stdout
    assert "evaluation_report:" in out and "| " in out  # the markdown table
    assert "llama.cpp completion from the exported q8_0 GGUF" in out

    # Nothing changed: nothing to do, and nothing is rebuilt.
    assert "Nothing to do" in mochi(repo, "run").stdout
