"""End to end, as a user runs it: `mochi run`, `mochi report`, new commits, and a model the gate rejects.

Training is cut to a few steps; everything else is the real pipeline: git → chunks → dataset →
LoRA on the tiny base → evaluation and quality gate → merge → GGUF verified against transformers →
Modelfile, and a completion from llama.cpp. Each `mochi run` is one Dagster run.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mochi_pipeline.config import load_config
from mochi_pipeline.deployment.significance import binomial_tail
from mochi_pipeline.io_manager import read_asset_file
from mochi_pipeline.storage import file_sha256
from mochi_pipeline_tests.cli_runner import PROJECT_TRAINING, check_results, mochi, status_of
from mochi_pipeline_tests.repo_factory import LATER_COMMITS, commit

pytestmark = pytest.mark.slow

MODEL_ASSETS = ["fine_tuned_adapter", "evaluation_report", "merged_model", "gguf_model", "ollama_modelfile",
                "assist_evaluation", "completion_evaluation"]


def write_config(repo: Path, **training) -> None:
    (repo / ".gitignore").write_text(".mochi/\n")
    (repo / "mochi.yaml").write_text(yaml.safe_dump({
        "generation": {"eval_time_share": 0.3},
        "training": {**PROJECT_TRAINING, **training},
        "export": {"quantizations": ["f16", "q8_0"]},
    }))


def runs_of(repo: Path) -> dict[str, list[dg.EventLogEntry]]:
    """A materialization per asset and run, oldest first, from the run history the CLI keeps (code_chunks has
    one per partition in a run, all with the run's data version: one stands for them)."""
    home = repo / ".mochi" / "dagster_home"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        keys = [k for k in instance.get_asset_keys() if k.to_user_string() != "git_repository"]
        by_run = {k.to_user_string(): {r.run_id: r.event_log_entry for r in reversed(
            instance.fetch_materializations(k, limit=1000).records)} for k in keys}
    return {name: list(entries.values()) for name, entries in by_run.items()}


# Checks every full run evaluates; each must pass on the tiny model the demo config trains, except rerank: the tiny
# model reranks at chance (its check warns unless p < 0.01), and is skipped when the cases are too few to tell.
AT_CHANCE = "assist_evaluation:rerank_beats_chance"
EXPECTED_CHECKS = {
    "source_files:source_files_found",
    "training_dataset:schema_valid", "training_dataset:no_train_eval_overlap",
    "training_dataset:no_secrets_in_training_data", "training_dataset:mix_within_proportions",
    "fine_tuned_adapter:training_loss_decreased", "evaluation_report:quality_gate",
    "gguf_model:gguf_matches_transformers",
}


def data_version(entry: dg.EventLogEntry) -> str:
    return entry.asset_materialization.tags["dagster/data_version"]


def reused(entry: dg.EventLogEntry) -> bool:
    return "reused_from_run" in entry.asset_materialization.metadata


# These two tests train in their own `mochi run` rather than reuse the session's trained fixtures: what they check
# is that one CLI run, from a commit, brings a model through the gate (and a worse one is stopped there).
def test_whole_pipeline_then_each_commit_reaches_a_new_model_in_one_run(sample_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    for message, date, files in LATER_COMMITS:
        commit(repo, message, date, files)
    write_config(repo)
    commit(repo, "Add the mochi config", "2024-06-03T10:00:00+00:00", {})  # as a team shares it
    art = repo / ".mochi"

    run = mochi(repo, "run")
    assert "Materializing 28 asset(s)" in run.stdout
    gguf = read_asset_file(art / "assets" / "gguf_model.json")
    assert {f.quantization for f in gguf.files} == {"f16", "q8_0"}
    assert "\nFROM ./mochi-q8_0.gguf\n" in (art / "gguf" / "model" / "Modelfile").read_text()
    report = read_asset_file(art / "assets" / "evaluation_report.json")
    base, tuned = (report.metrics[m]["overall"] for m in ("base", "fine_tuned"))
    assert report.accepted and tuned["perplexity"] < base["perplexity"]
    assert (art / "training" / "accepted.json").is_file()
    rerank = read_asset_file(art / "assets" / "assist_evaluation.json")
    assert rerank.n_cases >= 3 and rerank.p_value is not None  # held-out changes, ranked by the trained model
    checks = check_results(repo)
    assert EXPECTED_CHECKS <= checks.keys()
    assert [name for name, passed in checks.items() if not passed and name != AT_CHANCE] == []
    if binomial_tail(rerank.n_cases, rerank.n_cases, rerank.chance) < 0.01:
        assert checks[AT_CHANCE] == (rerank.p_value < 0.01)
    else:  # even a perfect score would prove nothing: skipped, never passed
        assert AT_CHANCE not in checks

    out = mochi(repo, "report").stdout
    assert "evaluation_report:" in out and "| **all** |" in out
    assert "Quality gate: passed" in out
    assert "**Rerank on held-out changes**" in out and "assist_evaluation: " in out
    assert "**Verify on planted faults**" in out or "Verify not measured: no held-out function" in out
    assert "**Completion of held-out code**" in out and "| next_line |" in out  # with the base's figures
    assert "llama.cpp completion from the exported q8_0 GGUF" in out
    assert "Nothing to do" in mochi(repo, "run").stdout

    # A one-file code commit: one run rebuilds the chain down to the Modelfile; training continues the model.
    before = runs_of(repo)
    commit(repo, "Add a scaling helper", "2024-07-01T10:00:00+00:00",
           {"pkg/scale.py": "def scale(values, factor):\n    return [v * factor for v in values]\n"})
    assert set(status_of(repo).values()) == {"FRESH", "STALE"}
    run = mochi(repo, "run")
    # Everything but base_model and what reads only the trackers and CI systems (none set here).
    assert "Materializing 23 asset(s)" in run.stdout
    after = runs_of(repo)
    for name in MODEL_ASSETS + ["code_chunks", "training_dataset"]:
        assert len(after[name]) == len(before[name]) + 1, name
        assert data_version(after[name][-1]) != data_version(before[name][-1]), name
    adapter = read_asset_file(art / "assets" / "fine_tuned_adapter.json")
    assert adapter.warm_start_from and Path(adapter.warm_start_from).is_dir()
    assert "replaced" in read_asset_file(art / "assets" / "evaluation_report.json").markdown
    assert set(status_of(repo).values()) == {"FRESH"}

    # A docs-only commit: code chunks keep their data version, and what only reads code is reused.
    before = runs_of(repo)
    (repo / "docs" / "guide.rst").write_text((repo / "docs" / "guide.rst").read_text() + "\nScaling\n=======\n\n"
                                             "Use ``scale`` to multiply every value.\n")
    commit(repo, "Document scale in the guide", "2024-07-02T10:00:00+00:00", {})
    mochi(repo, "run")
    after = runs_of(repo)
    assert data_version(after["code_chunks"][-1]) == data_version(before["code_chunks"][-1])
    assert reused(after["deduplicated_chunks"][-1]) and reused(after["completion_pairs"][-1])
    assert data_version(after["doc_sections"][-1]) != data_version(before["doc_sections"][-1])
    assert set(status_of(repo).values()) == {"FRESH"}


def test_a_worse_model_is_blocked_and_the_exported_one_stays(sample_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    write_config(repo)
    mochi(repo, "run")
    served = load_config(repo / "mochi.yaml").artifacts_path / "gguf" / "model" / "mochi-q8_0.gguf"
    digest = file_sha256(served)

    write_config(repo, learning_rate=0.05)  # a learning rate this tiny model cannot take: it gets worse
    failed = mochi(repo, "run", check=False)
    assert failed.returncode == 2
    assert "check quality_gate on evaluation_report failed" in failed.stderr
    # worse than the base or than the model it would replace, whichever the diverged run lands below
    assert re.search(r"perplexity ([\d.]+ is (not below the base model's|worse than [\d.]+ of the model it would "
                     r"replace)|is not a finite number)", failed.stderr, re.I), failed.stderr
    assert "Traceback" not in failed.stderr
    assert file_sha256(served) == digest  # nothing exported: the old model is what `mochi serve` finds
    report = read_asset_file(repo / ".mochi" / "assets" / "evaluation_report.json")
    assert not report.accepted
    assert check_results(repo)["evaluation_report:quality_gate"] is False

    again = mochi(repo, "run", check=False)  # the rejection stands; nothing below it is attempted again
    assert again.returncode == 2 and "held assets back" in again.stderr
    assert "Not running" in again.stdout and "Nothing else to run" in again.stdout
    assert "check quality_gate on evaluation_report failed" in again.stdout
    assert "Blocked: check quality_gate on evaluation_report failed" in mochi(repo, "status").stdout
    from mochi_pipeline.cli import _exported_gguf

    assert _exported_gguf(load_config(repo / "mochi.yaml"), "q8_0") == served


def test_a_model_on_a_new_base_is_still_compared_with_the_served_one_in_bits_per_byte(sample_repo, tmp_path):
    from mochi_pipeline_tests.training.store_project import TEST_TINY_STEPS

    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    write_config(repo)
    mochi(repo, "run")
    served = read_asset_file(repo / ".mochi" / "assets" / "evaluation_report.json").adapter_path
    write_config(repo, tiny_pretrain_steps=TEST_TINY_STEPS + 5)  # another base: its own weights, a new path
    mochi(repo, "run", check=False)  # accepted or not: either way the served model was compared
    report = read_asset_file(repo / ".mochi" / "assets" / "evaluation_report.json")
    assert report.metrics["previous_path"] == served and report.metrics["previous_base"]
    assert report.metrics["previous"]["overall"]["bits_per_byte"] > 0
    assert "bits per byte" in report.gate_reason and "another base" in report.gate_reason
    assert "compare bits per byte, not perplexity" in report.markdown
