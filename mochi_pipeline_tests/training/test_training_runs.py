"""Training runs beyond the LoRA pipeline: resume after a kill, full fine-tuning and its merge, QLoRA, early stopping,
divergence, an empty eval split, bad settings."""

from __future__ import annotations

import math
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, TrainerCallback

from mochi_pipeline.training.base_models import BaseModelError, infer_target_modules, load_tokenizer, resolve_base
from mochi_pipeline.training.settings import TrainingSettings
from mochi_pipeline.training.sft_data import Formatter, fit_to_length, load_dataset_dict
from mochi_pipeline.training.trainer import TrainingError, TrainingResult, train
from mochi_pipeline_tests.training.store_project import fast_settings


class Killed(RuntimeError):
    pass


class KillAfterCheckpoint(TrainerCallback):
    """Stops training with an exception right after the checkpoint of ``step`` is complete on disk.

    Not a kill: what a real SIGKILL mid-write leaves behind (and the resume after it) is tested on a real process in
    ``test_crash_safety.py``; this in-process version checks the resume logic itself, fast and deterministically.
    """

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Killed(f"killed after checkpoint {self.step}")


def _train_only(store_dataset: Path):
    """The store dataset without its eval split: no evaluations, so the runs stay short."""
    data = load_dataset_dict(store_dataset)
    data["eval"] = data["eval"].select([])
    return data


@pytest.mark.slow
def test_a_run_stopped_after_a_checkpoint_resumes_from_it(tmp_path, store_dataset, tiny_base):
    data = _train_only(store_dataset)
    settings = fast_settings(max_steps=6, save_steps=2, eval_steps=2)
    with pytest.raises(Killed):
        train(data, tiny_base, settings, tmp_path, callbacks=[KillAfterCheckpoint(4)])
    assert not list(tmp_path.glob("*/final"))  # nothing half-written
    lines: list[str] = []
    result = train(data, tiny_base, settings, tmp_path, log=lines.append)
    assert Path(result.resumed_from).name == "checkpoint-4"
    assert result.global_step == 6
    assert not (Path(result.output_dir).parent / "checkpoints").exists()  # finished: nothing left to resume
    steps = [h["step"] for h in result.history if "loss" in h]
    assert steps == [1, 2, 3, 4, 5, 6]  # the history of the first run is kept, steps continue
    assert any("resuming from" in str(line) for line in lines)
    assert TrainingResult.load(result.output_dir).global_step == 6


@pytest.mark.slow
def test_full_fine_tuning_changes_the_base_weights(tmp_path, store_dataset, tiny_base):
    result = train(_train_only(store_dataset), tiny_base, fast_settings(method="full", max_steps=2,
                                                                        learning_rate=1e-3), tmp_path)
    assert result.trainable_parameters == result.total_parameters
    before = load_file(str(Path(tiny_base.path) / "model.safetensors"))
    after = load_file(str(Path(result.output_dir) / "model.safetensors"))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(before[name], after[name])
    # A standalone model (no adapter to apply) that loads with the trained weights, not the base's.
    assert not (Path(result.output_dir) / "adapter_config.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert torch.equal(loaded.state_dict()[name], after[name])


def test_qlora_on_cpu_says_what_to_do(tmp_path, store_dataset, tiny_base):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(TrainingError, match="QLoRA needs a CUDA GPU; use method: lora"):
        train(_train_only(store_dataset), tiny_base, fast_settings(method="qlora"), tmp_path)


@pytest.mark.gpu
def test_qlora_trains_on_a_gpu(tmp_path, store_dataset, tiny_base):
    result = train(_train_only(store_dataset), tiny_base, fast_settings(method="qlora", max_steps=4), tmp_path)
    assert result.global_step == 4
    weights = load_file(str(Path(result.output_dir) / "adapter_model.safetensors"))
    assert any("lora_B" in name and t.abs().sum() > 0 for name, t in weights.items())


def test_settings_validate_in_one_place():
    with pytest.raises(ValueError, match="save_steps .* must be a multiple of eval_steps"):
        TrainingSettings(eval_steps=10, save_steps=15)
    with pytest.raises(ValueError, match="method"):
        TrainingSettings(method="adapter")
    assert str(TrainingSettings()) != str(TrainingSettings(lora_rank=8))  # signature follows the values


def test_unknown_base_model_names_the_fix():
    with pytest.raises(BaseModelError, match="neither a preset"):
        resolve_base("no such model", 1)


@pytest.mark.slow
def test_hub_model_without_cache_or_network_names_the_download_command():
    with pytest.raises(BaseModelError, match="huggingface-cli download mochi-test/no-such-model"):
        resolve_base("mochi-test/no-such-model", 1)


def test_lora_targets_are_inferred_from_module_names(tiny_base):
    model = AutoModelForCausalLM.from_pretrained(tiny_base.path)
    assert infer_target_modules(model) == sorted(tiny_base.target_modules)


def test_rows_become_prompt_completion_pairs(store_dataset, tiny_base):
    tokenizer = load_tokenizer(tiny_base)
    formatter = Formatter.for_base(tiny_base, tokenizer, "native")
    split = load_dataset_dict(store_dataset)["train"]
    raw = next(r for r in split if r["task"] == "next_line")
    chat = next(r for r in split if r["task"] == "implement")
    assert formatter.training_pair(raw) == ("", raw["text"])  # plain causal LM, loss on every token
    prompt, completion = formatter.training_pair(chat)
    assert prompt.startswith("You are a coding assistant") and prompt.endswith("### Response\n")
    assert completion == chat["response"] + "<|endoftext|>"  # the model learns to stop
    assert formatter.scoring_pair(raw) == (raw["context"], raw["response"])
    fim = next(r for r in split if r["task"] == "fim_psm")
    prompt, completion = formatter.training_pair(fim)
    assert prompt == "" and completion == f"<fim_prefix>{fim['prefix']}<fim_suffix>{fim['suffix']}<fim_middle>" + fim[
        "response"]  # the tiny base's StarCoder sentinels, each one token
    ids = tokenizer(completion)["input_ids"]
    assert [ids.count(tokenizer.convert_tokens_to_ids(t)) for t in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>")] \
        == [1, 1, 1]
    assert formatter.scoring_pair(fim) == (completion[: -len(fim["response"])], fim["response"])
    without = Formatter.for_base(tiny_base, tokenizer, "off")
    assert not without.usable(fim) and without.usable(raw)
    assert "fill-in-the-middle examples left out (training.fim: off)" in without.fim_note(split, "tiny")


@pytest.mark.slow
def test_warm_start_continues_the_earlier_model(tmp_path, store_dataset, tiny_base):
    data = _train_only(store_dataset)
    settings = fast_settings(max_steps=4)
    first = train(data, tiny_base, settings, tmp_path)
    again = train(data, tiny_base, settings, tmp_path, init_from=Path(first.output_dir))
    assert again.warm_start_from == first.output_dir and again.run_id != first.run_id
    assert again.first_train_loss < first.first_train_loss  # it starts where the first run ended
    before = load_file(str(Path(first.output_dir) / "adapter_model.safetensors"))
    after = load_file(str(Path(again.output_dir) / "adapter_model.safetensors"))
    assert any(not torch.equal(before[name], after[name]) for name in before)  # and keeps learning


def test_warm_start_is_refused_when_it_would_not_fit(tmp_path, tiny_base):
    from mochi_pipeline.training.trainer import FINAL_DIR, RESULT_FILE, warm_start_refusal

    earlier = TrainingResult(
        output_dir=str(tmp_path), method="lora", run_id="r", global_step=1, epochs=1.0, n_train=1, n_eval=0,
        trainable_parameters=1, total_parameters=1, target_modules=["q_proj"], first_train_loss=1.0,
        last_train_loss=1.0, best_eval_loss=None, resumed_from="", seconds=1.0, base_path=tiny_base.path,
        lora_rank=8,
    )
    final = tmp_path / FINAL_DIR
    final.mkdir()
    (final / RESULT_FILE).write_text(earlier.to_json())
    assert warm_start_refusal(final, tiny_base, fast_settings(lora_rank=8)) == ""
    assert "method changed" in warm_start_refusal(final, tiny_base, fast_settings(method="full"))
    assert "lora_rank" in warm_start_refusal(final, tiny_base, fast_settings(lora_rank=4))
    other = tiny_base.__class__(tiny_base.name, str(tmp_path), "", (), None, None)
    assert "base model changed" in warm_start_refusal(final, other, fast_settings(lora_rank=8))
    assert "unreadable" in warm_start_refusal(tmp_path / "nothing", tiny_base, fast_settings())


def test_a_row_longer_than_the_budget_keeps_some_of_its_answer():
    prompt, answer = list(range(300)), list(range(1000, 1010))
    assert fit_to_length(prompt + answer, 300, 256) == (prompt[-246:] + answer, 246)  # the prompt loses its start
    long_answer = list(range(1000, 1400))
    assert fit_to_length(prompt + long_answer, 300, 256) == (prompt[-128:] + long_answer[:128], 128)
    assert fit_to_length(list(range(20)), 0, 8) == (list(range(8)), 0)  # raw text: its beginning
    assert fit_to_length(prompt[:10] + answer, 10, 256) == (prompt[:10] + answer, 10)  # fits: as it is
    bos = [-1]  # the BOS stays where the prompt loses its start
    assert fit_to_length(bos + prompt + answer, 301, 256, head=1) == (bos + prompt[-245:] + answer, 246)
    assert fit_to_length(bos + prompt + long_answer, 301, 256, head=1) == (bos + prompt[-127:] + long_answer[:128],
                                                                          128)


@pytest.mark.slow
def test_prompts_longer_than_the_budget_still_train_and_evaluate(tmp_path, store_dataset, tiny_base):
    data = load_dataset_dict(store_dataset)
    settings = fast_settings(max_seq_length=32, max_steps=2, eval_steps=2, save_steps=2, batch_size=4)
    tokenizer = load_tokenizer(tiny_base)
    formatter = Formatter.for_base(tiny_base, tokenizer, "native")
    long_prompts = [r for r in data["eval"] if formatter.training_ids(r)[1] >= settings.max_seq_length]
    assert len(long_prompts) >= settings.batch_size  # the case: an eval batch of rows whose prompt fills the budget
    data["eval"] = datasets.Dataset.from_list(long_prompts)
    rows = formatter.to_token_rows(data["eval"], settings.max_seq_length)
    pairs = zip(rows["input_ids"], rows["completion_mask"], strict=True)
    assert all(len(ids) <= 32 and sum(mask) > 0 for ids, mask in pairs)
    result = train(data, tiny_base, settings, tmp_path, log=lambda _m: None)
    eval_losses = [h["eval_loss"] for h in result.history if "eval_loss" in h]
    assert eval_losses and all(math.isfinite(loss) for loss in eval_losses)  # cut from the end, every row: NaN


@pytest.mark.slow
def test_a_large_eval_split_is_sampled_at_each_eval_step(tmp_path, store_dataset, tiny_base):
    data = load_dataset_dict(store_dataset)
    lines: list[str] = []
    result = train(data, tiny_base, fast_settings(max_steps=2, eval_steps=2, save_steps=2, eval_during_training=3),
                   tmp_path, log=lines.append)
    assert len(data["eval"]) > 3
    assert any(f"3 of {len(data['eval'])} eval examples scored per eval step" in line for line in lines)
    assert [h["eval_loss"] for h in result.history if "eval_loss" in h]  # it still evaluates


@pytest.mark.slow
def test_a_run_with_other_settings_does_not_resume_anothers_checkpoint(tmp_path, store_dataset, tiny_base):
    data = _train_only(store_dataset)
    with pytest.raises(Killed):
        train(data, tiny_base, fast_settings(max_steps=6, save_steps=2, eval_steps=2), tmp_path,
              callbacks=[KillAfterCheckpoint(4)])
    (stopped,) = [p.parent.name for p in tmp_path.glob("*/checkpoints")]
    lines: list[str] = []
    other = train(data, tiny_base, fast_settings(max_steps=6, save_steps=2, eval_steps=2, learning_rate=1e-3),
                  tmp_path, log=lines.append)
    assert other.run_id != stopped and other.resumed_from == ""  # its own run, from the base
    assert [h["step"] for h in other.history if "loss" in h] == [1, 2, 3, 4, 5, 6]
    assert not any("resuming from" in str(line) for line in lines)
    assert (tmp_path / stopped / "checkpoints" / "checkpoint-4").is_dir()  # the other run's checkpoint is left be



def test_packed_rows_mask_each_example_from_the_others(tiny_base):
    from mochi_pipeline.training.trainer import PackedRowsCollator

    a, b = [1012, 1130, 1250, 1333], [2041, 2150, 2262]
    batch = PackedRowsCollator(pad_token_id=0)([
        {"input_ids": a + b, "labels": [-100, 1130, 1250, 1333, 2041, 2150, 2262], "seq_lengths": [4, 3]},
        {"input_ids": b, "labels": b, "seq_lengths": [3]},
    ])
    # Padding and each example's first token (nothing before it in its own example) are not predicted.
    assert batch["labels"].tolist() == [[-100, 1130, 1250, 1333, -100, 2150, 2262],
                                        [-100, 2150, 2262, -100, -100, -100, -100]]
    assert batch["position_ids"][0].tolist() == [0, 1, 2, 3, 0, 1, 2]
    model = AutoModelForCausalLM.from_pretrained(tiny_base.path, dtype=torch.float32).eval()
    with torch.no_grad():  # as in training: no KV cache (with one, transformers reads no packing from positions)
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = model(input_ids=torch.tensor([b]), use_cache=False).logits
        joined = model(input_ids=torch.tensor([a + b]), use_cache=False).logits  # one sequence: b would see a
    assert torch.allclose(packed[0, 4:], alone[0], atol=1e-4)  # b packed after a sees only itself
    assert not torch.allclose(joined[0, 4:], alone[0], atol=1e-4)


def test_the_cpu_loss_keeps_packed_examples_apart(tiny_base, tmp_path):
    import datasets
    from trl import SFTConfig

    from mochi_pipeline.training.trainer import MochiSFTTrainer, PackedRowsCollator

    model = AutoModelForCausalLM.from_pretrained(tiny_base.path, dtype=torch.float32)
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, activation_checkpointing=False)
    trainer = MochiSFTTrainer(model=model, args=args,
                              train_dataset=datasets.Dataset.from_dict({"prompt": ["x = "], "completion": ["1"]}),
                              processing_class=load_tokenizer(tiny_base))
    a, b = [1012, 1130, 1250, 1333], [2041, 2150, 2262]
    batch = PackedRowsCollator(pad_token_id=0)([{"input_ids": a + b, "labels": a + b, "seq_lengths": [4, 3]}])
    assert trainer.model.config.use_cache is False  # the trainer turns the KV cache off: packing can be read
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        apart = trainer.model(**batch, use_cache=False).loss  # what packing promises: no cross-example attention
        cached = trainer.model(**batch, use_cache=True).loss  # a KV cache hides the boundaries from transformers
    assert not torch.allclose(apart, cached)  # the two differ, so the comparison below can tell them apart
    assert torch.allclose(loss, apart)


class WeightsAtEachSave(TrainerCallback):
    """Keeps each checkpoint's weight file as written: train() deletes the checkpoints once final/ is whole."""

    def __init__(self, file: str):
        self.file = file
        self.saved: dict[int, bytes] = {}

    def on_save(self, args, state, control, **kwargs):
        self.saved[state.global_step] = (Path(args.output_dir) / f"checkpoint-{state.global_step}" / self.file
                                         ).read_bytes()


@pytest.mark.slow
def test_early_stopping_stops_and_keeps_the_best_checkpoint(tmp_path, store_dataset, tiny_base):
    # LoRA at lr 0.3 overshoots: the eval loss rises after the first step, so patience 1 stops at step 2.
    settings = fast_settings(learning_rate=0.3, max_steps=8, eval_steps=1, save_steps=1, early_stopping_patience=1,
                             eval_during_training=8)
    saves = WeightsAtEachSave("adapter_model.safetensors")
    result = train(load_dataset_dict(store_dataset), tiny_base, settings, tmp_path, callbacks=[saves])
    evals = {h["step"]: h["eval_loss"] for h in result.history if "eval_loss" in h}
    assert result.global_step < settings.max_steps
    assert TrainingResult.load(result.output_dir).global_step == result.global_step
    assert list(evals) == list(range(1, result.global_step + 1))  # evaluated at every step until it stopped
    best = min(evals, key=evals.get)
    assert best < result.global_step and result.best_eval_loss == evals[best]  # the last eval was worse
    # final/ holds the best checkpoint's weights, not the last step's.
    final = (Path(result.output_dir) / "adapter_model.safetensors").read_bytes()
    assert final == saves.saved[best] and final != saves.saved[result.global_step]


@pytest.mark.slow
def test_a_diverged_run_fails_with_the_fix_and_writes_no_model(tmp_path, store_dataset, tiny_base):
    # A learning rate alone (validated below 1) does not overflow fp32 here: Adam steps are bounded and the loss
    # recovers. Decoupled weight decay multiplies every weight by 1 - lr * weight_decay (about -990) per step, so
    # the weights overflow within a few real steps and the loss turns NaN; lowering the learning rate is the fix.
    settings = fast_settings(method="full", learning_rate=0.99, weight_decay=1000.0, max_steps=6)
    with pytest.raises(TrainingError, match=r"Training diverged \(loss (nan|inf)\); lower training.learning_rate"):
        train(_train_only(store_dataset), tiny_base, settings, tmp_path)
    assert list(tmp_path.glob("*/checkpoints"))  # it did train (checkpoint-4 is on disk) ...
    assert not list(tmp_path.glob("*/final*"))  # ... but left no model to evaluate or export


@pytest.mark.slow
def test_merging_a_full_fine_tune_gives_the_trained_model(tmp_path, store_dataset, tiny_base):
    from mochi_pipeline.training.merge import merge

    result = train(_train_only(store_dataset), tiny_base, fast_settings(method="full", max_steps=2,
                                                                        learning_rate=1e-3), tmp_path / "runs")
    merged_dir = merge(tiny_base, Path(result.output_dir), "full", tmp_path / "merged", "store project", {})
    tokenizer = load_tokenizer(tiny_base)
    ids = tokenizer("class OrderService:\n    def get_order(self, order_id: int) -> dict:\n", return_tensors="pt")
    with torch.no_grad():
        merged, trained, base = (AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()(**ids).logits
                                 for d in (merged_dir, result.output_dir, tiny_base.path))
    torch.testing.assert_close(merged, trained, atol=1e-5, rtol=0)
    assert not torch.allclose(merged, base, atol=1e-3)  # the trained weights, not the base's
    assert "Method:** full" in (merged_dir / "README.md").read_text()


@pytest.mark.slow
def test_an_empty_eval_split_trains_without_eval_and_evaluation_says_why(tmp_path, store_dataset, tiny_base):
    from mochi_pipeline.training.evaluation import REPORT_JSON, evaluate

    data = _train_only(store_dataset)
    settings = fast_settings(max_steps=2, eval_steps=1, save_steps=2)
    lines: list[object] = []
    result = train(data, tiny_base, settings, tmp_path / "runs", log=lines.append)
    assert result.global_step == 2 and result.n_eval == 0 and result.best_eval_loss is None
    assert not any("eval_loss" in h for h in result.history)
    assert any("eval split is empty" in str(line) for line in lines)
    # Nothing to compare base and fine-tuned on: a message naming the split and the setting that fills it.
    with pytest.raises(ValueError, match=r"eval split is empty.*generation\.eval_time_share"):
        evaluate(data, tiny_base, Path(result.output_dir), "lora", settings, tmp_path / "evaluation")
    assert not (tmp_path / "evaluation" / REPORT_JSON).exists()


@pytest.mark.slow
def test_the_base_models_scores_are_reused_while_base_and_eval_rows_stay_the_same(tmp_path, store_dataset, tiny_base):
    from mochi_pipeline.training.evaluation import evaluate

    data = load_dataset_dict(store_dataset)
    settings = fast_settings(max_steps=2, eval_steps=2, save_steps=2, eval_max_examples=12)
    final = Path(train(data, tiny_base, settings, tmp_path / "runs", log=lambda _: None).output_dir)
    cache = tmp_path / "base_scores"

    def run(dataset: datasets.DatasetDict) -> tuple[dict, list[str]]:
        lines: list[str] = []
        report = evaluate(dataset, tiny_base, final, "lora", settings, tmp_path / "evaluation",
                          log=lambda x: lines.append(str(x)), cache_dir=cache)
        return report, lines

    first, first_log = run(data)
    again, again_log = run(data)
    assert any("Scoring the base model" in line for line in first_log)
    assert any(f"scores on these {first['n_examples']} eval examples are reused" in line for line in again_log)
    assert not any("scoring the base model" in line for line in again_log)  # no progress of base scoring
    assert again["base"] == first["base"]
    assert again["fine_tuned"] == first["fine_tuned"]
    # another eval split (the answers changed): the base is scored again
    changed = data["eval"].map(lambda row: {"response": row["response"] + "\n# changed\n"})
    _, changed_log = run(datasets.DatasetDict({"train": data["train"], "eval": changed}))
    assert any("Scoring the base model" in line for line in changed_log)
    assert len(list(cache.glob("*.json"))) == 2


@pytest.mark.slow
@pytest.mark.parametrize(("batch_size", "counted"), [(1, True), (2, False)])  # num_items_in_batch given or not
def test_the_output_head_runs_only_where_the_loss_looks_and_changes_nothing(tmp_path, store_dataset, tiny_base,
                                                                            batch_size, counted):
    """MochiSFTTrainer's loss on a CPU: the same value and gradients as the model's own loss over full logits,
    from logits at only the positions a label follows (in any row of the batch: one row, as the CPU presets
    train, skips every prompt position)."""
    from transformers import Trainer

    from mochi_pipeline.training.base_models import load_model
    from mochi_pipeline.training.lora_config import lora_config, sft_config
    from mochi_pipeline.training.trainer import MochiSFTTrainer, use_packed_rows

    settings = fast_settings(max_steps=1, batch_size=batch_size)
    tokenizer = load_tokenizer(tiny_base)
    rows = Formatter.for_base(tiny_base, tokenizer, settings.fim).to_token_rows(
        load_dataset_dict(store_dataset)["train"], settings.max_seq_length)
    rows = rows.filter(lambda row: 0 in row["completion_mask"])  # chat rows: a prompt the loss ignores
    trainer = MochiSFTTrainer(model=load_model(tiny_base), args=sft_config(settings, tmp_path, has_eval=False),
                              train_dataset=rows, processing_class=tokenizer,
                              peft_config=lora_config(settings, list(tiny_base.target_modules)))
    use_packed_rows(trainer, packing=True)
    batch = next(iter(trainer.get_train_dataloader()))
    scored = int((batch["labels"][:, 1:] != -100).any(0).sum())
    if batch_size == 1:  # the prompts' positions are skipped
        assert 0 < scored < 0.8 * (batch["labels"].shape[1] - 1)
    model = trainer.model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    count = (batch["labels"][:, 1:] != -100).sum() if counted else None

    def loss_and_grads(compute) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        loss = compute(model, dict(batch), num_items_in_batch=count)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in trainable]

    ours, our_grads = loss_and_grads(trainer.compute_loss)
    theirs, their_grads = loss_and_grads(lambda *a, **k: Trainer.compute_loss(trainer, *a, **k))
    assert torch.allclose(ours, theirs, rtol=1e-5), (ours, theirs)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(our_grads, their_grads, strict=True))
    assert any(g.abs().sum() > 0 for g in our_grads)


def test_a_damaged_record_of_the_served_model_is_an_error_naming_the_file_and_the_fix(tmp_path):
    import dagster as dg

    from mochi_pipeline.training.assets import read_accepted

    assert read_accepted(tmp_path) is None  # before the first accepted model: compared with the base only
    record = tmp_path / "training" / "accepted.json"
    record.parent.mkdir()
    record.write_text('{"kind": "AcceptedModel", "adapter_path": ')  # cut off by a full disk
    with pytest.raises(dg.Failure) as err:
        read_accepted(tmp_path)
    assert str(record) in err.value.description and "delete it" in err.value.description
