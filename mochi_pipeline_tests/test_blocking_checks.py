"""A blocking check that failed stops what is below it in every later run, whoever starts it, until the asset it
checks is rebuilt and passes: the `mochi` command, `--select`, a launch as the UI makes it, the nightly tick."""

from __future__ import annotations

import datetime as dt
import random
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mochi_pipeline.config import load_config
from mochi_pipeline.definitions import build_defs
from mochi_pipeline_tests.cli_runner import PROJECT_TRAINING, check_results, mochi
from mochi_pipeline_tests.planted_secrets import values
from mochi_pipeline_tests.repo_factory import commit

pytestmark = pytest.mark.slow

LEAK = "check no_secrets_in_training_data on training_dataset failed"


def _trained(instance: dg.DagsterInstance) -> int:
    """How many models were trained (a step refused at its start trains none)."""
    return len(instance.fetch_materializations(dg.AssetKey("fine_tuned_adapter"), limit=100).records)


def _nightly_tick(defs: dg.Definitions, instance: dg.DagsterInstance, when: dt.datetime, cursor=None):
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=when, cursor=cursor,
                                             asset_selection=dg.AssetSelection.groups("training", "deployment"))


def _project(sample_repo, tmp_path, **sections) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(sample_repo, repo)
    (repo / ".gitignore").write_text(".mochi/\n")
    (repo / "mochi.yaml").write_text(yaml.safe_dump({
        "generation": {"eval_time_share": 0.3}, "training": PROJECT_TRAINING} | sections))
    return repo


def test_a_leaking_dataset_never_trains_until_a_rebuild_passes(sample_repo, tmp_path):
    repo = _project(sample_repo, tmp_path, automation={"retrain_cron": "0 3 * * *", "timezone": "UTC"})
    # A Q&A reply cached from a model that wrote a key into its answer: it reaches the final texts unscrubbed.
    reply = repo / ".mochi" / "cache" / "qa" / "reply.json"
    reply.parent.mkdir(parents=True)
    reply.write_text(f'{{"answer": "Use the token {values(random.Random())["github_token"]}."}}')

    cfg = load_config(repo / "mochi.yaml")
    defs = build_defs(cfg)
    home = str(cfg.artifacts_path / "dagster_home")
    mochi(repo, "status")  # makes the project's instance
    day = dt.datetime.combine(dt.date.today() + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)
    with dg.DagsterInstance.from_config(home) as instance:  # the sensor's first look, before the data and 03:00
        tick = _nightly_tick(defs, instance, day + dt.timedelta(hours=2))

    first = mochi(repo, "run", check=False)
    assert first.returncode == 2 and LEAK in first.stderr, first.stdout + first.stderr
    for _ in range(2):  # the dataset is stored and fresh: the next runs plan around it, and say so
        again = mochi(repo, "run", check=False)
        assert again.returncode == 2, again.stdout + again.stderr
        assert "Not running" in again.stdout and "fine_tuned_adapter" in again.stdout and LEAK in again.stdout
    selected = mochi(repo, "run", "--select", "fine_tuned_adapter", check=False)
    assert selected.returncode == 2 and LEAK in selected.stdout
    status = mochi(repo, "status").stdout
    assert "blocked: check no_secrets_in_training_data on training_dataset failed" in status
    assert f"Blocked: {LEAK}" in status

    with dg.DagsterInstance.from_config(home) as instance:
        # A launch from the UI: the asset itself refuses, naming the check.
        job = defs.resolve_implicit_global_asset_job_def()
        launched = job.execute_in_process(instance=instance, asset_selection=[dg.AssetKey("fine_tuned_adapter")],
                                          raise_on_error=False)
        assert not launched.success
        failure = next(e for e in launched.all_events if e.is_step_failure)
        assert "fine_tuned_adapter is blocked" in str(failure.step_failure_data.error.message)
        # The nightly tick: 03:00 passed and the dataset changed since the last look, yet nothing is requested.
        tick = _nightly_tick(defs, instance, day + dt.timedelta(hours=4), tick.cursor)
        assert tick.get_num_requested(dg.AssetKey("fine_tuned_adapter")) == 0
        assert _trained(instance) == 0

    # The fix: the leaking reply goes, and the next commit rebuilds the dataset, which passes: the same night's
    # tick now asks for training, and `mochi run` trains.
    reply.unlink()
    commit(repo, "Document clamp", "2024-07-03T10:00:00+00:00",
           {"pkg/util.py": (repo / "pkg" / "util.py").read_text() + "\n# clamp keeps a value within bounds.\n"})
    mochi(repo, "run", "--select", "+training_dataset")
    assert check_results(repo)["training_dataset:no_secrets_in_training_data"] is True
    with dg.DagsterInstance.from_config(home) as instance:
        later = _nightly_tick(defs, instance, day + dt.timedelta(hours=5), tick.cursor)
        assert later.get_num_requested(dg.AssetKey("fine_tuned_adapter")) == 1
    mochi(repo, "run")
    with dg.DagsterInstance.from_config(home) as instance:
        assert _trained(instance) == 1
    assert "Blocked" not in mochi(repo, "status").stdout


def test_a_gguf_that_fails_verification_is_never_served(sample_repo, tmp_path):
    # A tolerance tighter than f16's own rounding: the export cannot match transformers within it.
    repo = _project(sample_repo, tmp_path, export={"quantizations": ["f16"], "max_logit_diff_f16": 1e-9})
    failed = "check gguf_matches_transformers on gguf_model failed"

    first = mochi(repo, "run", check=False)
    assert first.returncode == 2 and failed in first.stderr, first.stdout + first.stderr
    assert (repo / ".mochi" / "gguf" / "model" / "mochi-f16.gguf").is_file()  # made, then held
    again = mochi(repo, "run", check=False)
    assert again.returncode == 2 and "Not running" in again.stdout and "ollama_modelfile" in again.stdout
    served = mochi(repo, "serve", "--quantization", "f16", "--port", "0", check=False, timeout=120)
    assert served.returncode == 2 and "Not serving" in served.stderr and failed in served.stderr
    home = str(repo / ".mochi" / "dagster_home")
    with dg.DagsterInstance.from_config(home) as instance:
        for name in ("ollama_modelfile", "assist_evaluation", "completion_evaluation"):
            assert not instance.fetch_materializations(dg.AssetKey(name), limit=1).records, name


def test_a_lora_export_that_does_not_reproduce_the_merged_model_fails_the_run(sample_repo, tmp_path):
    # A LoRA (the gate off: on the 20-step test base a few LoRA steps barely move perplexity) and a tolerance tighter
    # than f16's rounding: base + LoRA in llama.cpp cannot match the merged model within it.
    repo = _project(sample_repo, tmp_path, export={"quantizations": ["f16"], "max_logit_diff_f16": 1e-9},
                    training={**PROJECT_TRAINING, "method": "lora", "learning_rate": 1e-3, "quality_gate": False})
    run = mochi(repo, "run", check=False)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "check lora_reproduces_merged_model on gguf_lora_adapter failed" in run.stderr
    assert check_results(repo)["gguf_lora_adapter:lora_reproduces_merged_model"] is False
