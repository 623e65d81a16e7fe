"""The four training assets materialized on a small project dataset with the tiny base.

One module-scoped materialization (a real LoRA run) serves several tests: the loss fell, the LoRA
weights moved, the fine-tuned model beats the base on the held-out split, and the merged model
reproduces the PEFT model's logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from mochi_pipeline.data_generation.dataset_builder import TrainingDatasetArtifact
from mochi_pipeline.io_manager import read_asset_file, write_asset_file
from mochi_pipeline_tests.materialize import materialize, project_config
from mochi_pipeline_tests.training.store_project import TINY_BASE

pytestmark = pytest.mark.slow

TRAINING = dict(method="lora", max_steps=10, max_seq_length=192, batch_size=4, learning_rate=1e-2, lora_rank=8,
                lora_alpha=16, lora_dropout=0.0, eval_steps=5, save_steps=5, logging_steps=1, warmup_ratio=0.0,
                lr_scheduler="constant", **TINY_BASE, eval_max_examples=24)


TRAINING_ASSETS = ["base_model", "fine_tuned_adapter", "evaluation_report", "merged_model"]


def store_dataset_record(artifacts: Path, dataset_dir: Path) -> None:
    """Store a training_dataset value pointing at ``dataset_dir``, as the data layer would."""
    counts = {split: sum(1 for _ in (dataset_dir / f"{split}.jsonl").open()) for split in ("train", "eval")}
    write_asset_file(artifacts / "assets" / "training_dataset", TrainingDatasetArtifact(
        path=str(dataset_dir), hf_path=str(dataset_dir / "hf"),
        jsonl={s: str(dataset_dir / f"{s}.jsonl") for s in counts}, counts={}, task_counts={},
        n_examples=counts, n_tokens={}, dropped={}, eval_sources=[], content_hash="test",
    ))


@pytest.fixture(scope="module")
def materialized(tmp_path_factory, store_dataset, sample_repo, tiny_base):
    root = tmp_path_factory.mktemp("training_assets")
    cfg = project_config(root, repo={"source": str(sample_repo)}, training=TRAINING)
    store_dataset_record(cfg.artifacts_path, store_dataset)
    result = materialize(cfg, TRAINING_ASSETS)
    assert result.success
    stored = cfg.artifacts_path / "assets"
    return result, {name: read_asset_file(stored / f"{name}.json") for name in TRAINING_ASSETS}


def test_lora_training_lowers_the_loss_and_moves_the_adapter(materialized):
    result, records = materialized
    adapter = records["fine_tuned_adapter"]
    history = json.loads((Path(adapter.path) / "loss_history.json").read_text())
    losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    assert len(losses) == 10 and len(eval_losses) == 2
    assert min(losses[-3:]) < losses[0]  # per-batch losses are noisy: compare the tail's best with the start
    assert eval_losses[-1] < eval_losses[0]
    weights = load_file(str(Path(adapter.path) / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: non-zero means it trained
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["training_loss_decreased"].passed
    meta = result.asset_materializations_for_node("fine_tuned_adapter")[0].metadata
    assert "data:image/png;base64," in meta["loss_curve"].value
    assert (Path(adapter.path) / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_fine_tuned_model_beats_base_on_held_out_split(materialized):
    result, records = materialized
    report = records["evaluation_report"]
    base, tuned = report.metrics["base"]["overall"], report.metrics["fine_tuned"]["overall"]
    assert tuned["perplexity"] < base["perplexity"]
    assert report.fine_tuned_better
    assert set(report.metrics["base"]["by_task"]) == {"next_line", "fim_psm", "implement"}
    assert tuned["token_accuracy"] is not None and base["token_accuracy"] is not None
    # Bits per byte is the same loss per byte: lower with the perplexity, and below 8 bits for code a model learnt.
    assert 0 < tuned["bits_per_byte"] < base["bits_per_byte"] and tuned["bits_per_byte"] < 8
    assert "| **all** |" in report.markdown and "language: python" in report.markdown
    assert (Path(report.path) / "evaluation.png").read_bytes()[:4] == b"\x89PNG"
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["quality_gate"].passed and report.accepted


def test_merged_model_reproduces_the_adapter_logits(materialized):
    _, records = materialized
    merged_dir = Path(records["merged_model"].path)
    adapter_dir = records["fine_tuned_adapter"].path
    base_dir = records["base_model"].path
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    ids = tokenizer("class OrderService:\n    def get_order(self, order_id: int) -> dict:\n", return_tensors="pt")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    with torch.no_grad():
        got, want, before = (m(**ids).logits for m in (merged, peft, base))
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, before, atol=1e-3)  # the merge changed the base
    assert "base_layer" not in " ".join(load_file(str(merged_dir / "model.safetensors")))
    card = (merged_dir / "README.md").read_text()
    assert "Method:** lora" in card and "perplexity" in card
    assert tokenizer.chat_template and "### Response" in tokenizer.chat_template


def _report(base: float | None, tuned: float | None, previous: float | None = None) -> dict:
    def scores(ppl):
        return {"overall": {"perplexity": ppl}}

    return {"base": scores(base), "fine_tuned": scores(tuned), "previous": scores(previous) if previous else None}


@pytest.mark.parametrize(("report", "passed", "why"), [
    (_report(100.0, 80.0), True, "beats the base"),
    (_report(100.0, 100.0), False, "not below the base"),
    (_report(100.0, 120.0), False, "not below the base"),
    (_report(100.0, float("nan")), False, "not a finite number"),
    (_report(100.0, None), False, "not a finite number"),
    (_report(100.0, 80.0, previous=79.0), True, "replaced model"),  # within the 2% tolerance
    (_report(100.0, 80.0, previous=70.0), False, "worse than 70"),
])
def test_quality_gate(report, passed, why):
    from mochi_pipeline.training.evaluation import gate

    verdict, reason = gate(report, tolerance=0.02)
    assert verdict is passed and why in reason


def test_a_second_training_of_the_project_waits_for_the_first(tmp_path, store_dataset, sample_repo, tiny_base):
    """Two trainings of one project (two `mochi run`s, the schedule and the UI) never share the run folder at once:
    while another process holds the project's training lock, fine_tuned_adapter waits; then it trains."""
    import threading
    import time

    from mochi_pipeline.storage import file_lock

    cfg = project_config(tmp_path, repo={"source": str(sample_repo)}, training={**TRAINING, "max_steps": 2})
    store_dataset_record(cfg.artifacts_path, store_dataset)
    runs = cfg.artifacts_path / "training" / "runs"
    results = []
    with file_lock(runs / ".training.lock"):  # the other training
        worker = threading.Thread(target=lambda: results.append(materialize(cfg, ["base_model",
                                                                                  "fine_tuned_adapter"])))
        worker.start()
        deadline = time.monotonic() + 120
        while not (cfg.artifacts_path / "assets" / "base_model.json").is_file():  # the next step is the training
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.1)
        time.sleep(5)  # two steps of this training take about that long, had it not waited
        assert worker.is_alive() and not [p for p in runs.iterdir() if not p.name.startswith(".")]
        released = time.time()
    worker.join(300)
    assert results and results[0].success
    (run,) = [p for p in runs.iterdir() if (p / "final").is_dir()]
    assert (run / "final").stat().st_mtime >= released
