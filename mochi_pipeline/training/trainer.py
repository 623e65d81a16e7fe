"""Supervised fine-tuning with TRL's ``SFTTrainer``: LoRA, QLoRA or full, resumable, early-stopped.

Each run lives in ``<runs_dir>/<run id>``, the run id being a hash of everything that changes the
result (settings, base model, data, the model it starts from): a killed run with the same inputs
resumes from its last checkpoint (``checkpoints/``); a changed input starts afresh. The final
adapter (or full model) is written atomically to ``final/`` with the tokenizer, the loss history
(JSON) and its plot (PNG); the checkpoints are then removed. A warm start (``init_from``) continues
from an earlier run's final weights instead of the base's.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import (
    EarlyStoppingCallback,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from trl import SFTTrainer

from mochi_pipeline.progress import Notice, Progress
from mochi_pipeline.storage import atomic_directory, atomic_write_bytes, atomic_write_text, content_hash
from mochi_pipeline.training import base_models
from mochi_pipeline.training.base_models import ResolvedBase
from mochi_pipeline.training.evaluation import sample_indices
from mochi_pipeline.training.lora_config import lora_config, sft_config
from mochi_pipeline.training.plots import loss_curve_png
from mochi_pipeline.training.settings import TrainingSettings
from mochi_pipeline.training.sft_data import Formatter

RESULT_FILE = "training_result.json"
HISTORY_FILE = "loss_history.json"
CURVE_FILE = "loss_curve.png"
FINAL_DIR = "final"


class TrainingError(RuntimeError):
    """Training cannot run as configured; the message says what to change."""


@dataclass
class TrainingResult:
    output_dir: str
    method: str
    run_id: str
    global_step: int
    epochs: float
    n_train: int
    n_eval: int
    trainable_parameters: int
    total_parameters: int
    target_modules: list[str]
    first_train_loss: float | None
    last_train_loss: float | None
    best_eval_loss: float | None
    resumed_from: str
    seconds: float
    warm_start_from: str = ""  # the final directory of the run this one continued, '' = from the base
    base_path: str = ""
    lora_rank: int = 0
    processes: int = 1  # how many processes shared the steps (distributed.py)
    history: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def load(cls, output_dir: str | Path) -> TrainingResult:
        return cls(**json.loads((Path(output_dir) / RESULT_FILE).read_text(encoding="utf-8")))


class LogProgress(TrainerCallback):
    """Forwards the trainer's logs to a logger such as context.log: loss and eval loss as ``Progress``."""

    FIGURES = ("loss", "eval_loss", "learning_rate")

    def __init__(self, log: Callable[[object], None]):
        self.log = log

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs=None, **kwargs):
        logs = logs or {}
        figures = {k.replace("_", " "): round(float(logs[k]), 4) for k in self.FIGURES if k in logs}
        if figures:
            self.log(Progress("fine-tuning", state.global_step, state.max_steps, figures))
        else:  # the closing summary (runtime, samples per second)
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
            self.log(f"step {state.global_step}/{state.max_steps}: {shown}")


class PackedRowsCollator:
    """Batches packed rows as ``[batch, length]`` with per-example ``position_ids`` and no attention mask.

    TRL flattens a packed batch into one long row (padding-free), which only FlashAttention runs
    cheaply. With SDPA/eager attention that row costs ``(batch x length)^2`` attention and a mask
    as large; kept as separate rows, transformers still reads the example boundaries from the
    restarting ``position_ids`` and builds a block-diagonal causal mask per row.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), length), -100, dtype=torch.long)
        position_ids = torch.arange(length).repeat(len(examples), 1)  # padding: one more "example"
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            position_ids[i, :n] = torch.cat([torch.arange(k) for k in e["seq_lengths"]])
        labels[position_ids == 0] = -100  # an example's first token has nothing before it to predict from
        return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


class MochiSFTTrainer(SFTTrainer):
    """``SFTTrainer`` that, without CUDA, computes the output head only where the loss needs it.

    TRL computes the loss through a chunked "fused LM head" and adds entropy/accuracy metrics; it
    saves GPU memory, but on a CPU with a 49k-token vocabulary it about doubles the cost of a step.
    The model's own loss (``Trainer.compute_loss``) builds float32 logits over the whole vocabulary at
    every position, prompts included, where the loss ignores them: on Gemma 3's 262k-token head that
    is as much work per token as the rest of the model. So in training the head runs only at the
    positions whose next token is scored (``logits_to_keep``), and the loss is the same sum of
    cross-entropies divided the same way.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if torch.cuda.is_available():
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if return_outputs or not model.training or inputs.get("labels") is None:
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
        return self.completion_head_loss(model, inputs, num_items_in_batch)

    def completion_head_loss(self, model, inputs: dict, num_items_in_batch=None) -> torch.Tensor:
        """``Trainer.compute_loss``'s training loss, with the output head run only where a label follows."""
        labels = inputs["labels"]
        targets = labels[:, 1:]  # the logits at position t predict the token at t + 1
        keep = (targets != -100).any(0).nonzero().squeeze(-1)  # positions scored in any row of the batch
        logits = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False,
                       logits_to_keep=keep).logits.float()
        wanted = targets[:, keep]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), wanted.reshape(-1),
                                                 ignore_index=-100, reduction="sum")
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:  # as Trainer.compute_loss scales it
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        else:
            loss = loss / (wanted != -100).sum().clamp(min=1)
        return loss


def use_packed_rows(trainer: SFTTrainer, packing: bool) -> None:
    """Packed batches as rows unless FlashAttention runs TRL's flattened (padding-free) batches."""
    if packing and not str(trainer.model.config._attn_implementation).startswith("flash"):
        trainer.data_collator = PackedRowsCollator(trainer.processing_class.pad_token_id)


def check_method_supported(method: str) -> None:
    if method != "qlora":
        return
    if not torch.cuda.is_available():
        raise TrainingError("QLoRA needs a CUDA GPU; use method: lora (or full) on this machine.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TrainingError("QLoRA needs bitsandbytes: pip install 'mochi[gpu]' (or use method: lora).") from None


def run_id(settings: TrainingSettings, base: ResolvedBase, data: datasets.DatasetDict,
           init_from: Path | None = None) -> str:
    fingerprints = [data[s]._fingerprint for s in ("train", "eval")]
    start = weights_hash(init_from) if init_from is not None else "base"
    return content_hash(settings.weights_signature(), base.path, start, *fingerprints)


def weights_hash(model_dir: Path) -> str:
    """Hash of a model directory's weights and configs (not run logs: the same weights keep the hash)."""
    names = {"config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json"}
    files = sorted(p for p in Path(model_dir).rglob("*") if p.is_file() and (p.suffix == ".safetensors"
                                                                              or p.name in names))
    return content_hash(*(part for p in files for part in (p.relative_to(model_dir).as_posix(), p.read_bytes())))


def warm_start_refusal(init_from: Path, base: ResolvedBase, settings: TrainingSettings) -> str:
    """Why an earlier run's final weights cannot seed this run ('' when they can)."""
    try:
        earlier = TrainingResult.load(init_from)
    except (OSError, ValueError, TypeError) as err:
        return f"its training record is unreadable ({type(err).__name__})"
    if earlier.method != settings.method:
        return f"the method changed ({earlier.method} -> {settings.method})"
    if earlier.base_path != base.path:
        return "the base model changed"
    if settings.method != "full" and (
        earlier.lora_rank != settings.lora_rank
        or (settings.lora_targets and sorted(settings.lora_targets) != sorted(earlier.target_modules))
    ):
        return "the adapter's shape (lora_rank or lora_targets) changed"
    return ""


def last_complete_checkpoint(checkpoints: Path, remove_incomplete: bool = True) -> str | None:
    """The newest checkpoint written whole, or None; one cut short by a kill is removed (by rank 0 alone
    when several processes train: ``remove_incomplete`` is False on the others, which only skip it).

    The Trainer writes ``trainer_state.json`` last, so a checkpoint whose state file is missing or does
    not parse was interrupted.
    """
    if not checkpoints.is_dir():
        return None
    found = sorted((d for d in checkpoints.glob("checkpoint-*") if d.name.split("-")[-1].isdigit()),
                   key=lambda d: int(d.name.split("-")[-1]), reverse=True)
    for candidate in found:
        try:
            json.loads((candidate / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if remove_incomplete:
                shutil.rmtree(candidate, ignore_errors=True)
            continue
        return str(candidate)
    return None


def prune_runs(runs_dir: Path, keep: int, protect: set[str]) -> list[str]:
    """Delete finished runs beyond the ``keep`` newest, never one named in ``protect``; returns what went."""
    finished = sorted((d for d in runs_dir.iterdir() if (d / FINAL_DIR / RESULT_FILE).is_file()),
                      key=lambda d: (d / FINAL_DIR / RESULT_FILE).stat().st_mtime, reverse=True)
    removed = []
    for old in finished[keep:]:
        if old.name not in protect:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(old.name)
    return removed


def _history(log_history: list[dict]) -> list[dict[str, float]]:
    keep = ("loss", "eval_loss", "learning_rate")
    rows = []
    for entry in log_history:
        row = {k: float(entry[k]) for k in keep if k in entry and isinstance(entry[k], int | float)}
        if row:
            rows.append({"step": int(entry["step"]), **row})
    return rows


def _start_model(base: ResolvedBase, settings: TrainingSettings, init_from: Path | None):
    """The model training starts from, and the LoRA config for SFTTrainer to add (None: already adapted/full)."""
    if settings.method == "full":
        start = base if init_from is None else ResolvedBase(base.name, str(init_from), "", (), None, None)
        return base_models.load_model(start), None, []
    model = base_models.load_model(base, quantize_4bit=settings.method == "qlora")
    targets = list(settings.lora_targets or base.target_modules or base_models.infer_target_modules(model))
    if init_from is None:
        return model, lora_config(settings, targets), targets
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(model, str(init_from), is_trainable=True)
    return adapted, None, sorted(adapted.peft_config["default"].target_modules)


def train(
    data: datasets.DatasetDict,
    base: ResolvedBase,
    settings: TrainingSettings,
    runs_dir: Path,
    log: Callable[[object], None] = print,
    callbacks: Sequence[TrainerCallback] = (),
    init_from: Path | None = None,
) -> TrainingResult:
    """Fine-tune ``base`` (or continue ``init_from``) on ``data`` (splits train/eval).

    Returns where the result is and how it went; the result is under ``runs_dir/<run id>/final``.
    """
    check_method_supported(settings.method)
    started = time.monotonic()
    tokenizer = base_models.load_tokenizer(base)
    formatter = Formatter.for_base(base, tokenizer, settings.fim)
    if note := formatter.fim_note(data["train"], base.name):
        log(Notice(note))
    train_set = formatter.to_token_rows(data["train"], settings.max_seq_length)
    held_out = data["eval"]
    held_out = held_out.select(sample_indices(len(held_out), settings.eval_during_training, settings.seed))
    eval_set = formatter.to_token_rows(held_out, settings.max_seq_length) if len(held_out) else None
    if eval_set is None:
        log(Notice("The eval split is empty: training without evaluation, early stopping or best-checkpoint "
                   "selection."))

    model, peft_config, targets = _start_model(base, settings, init_from)
    rid = run_id(settings, base, data, init_from)
    checkpoints = runs_dir / rid / "checkpoints"
    args = sft_config(settings, checkpoints, has_eval=eval_set is not None)
    all_callbacks: list[TrainerCallback] = [LogProgress(log), *callbacks]
    if eval_set is not None and settings.early_stopping_patience:
        all_callbacks.append(EarlyStoppingCallback(early_stopping_patience=settings.early_stopping_patience))
    trainer = MochiSFTTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer,
        peft_config=peft_config, callbacks=all_callbacks,
    )
    use_packed_rows(trainer, settings.packing)
    trainer.remove_callback(PrinterCallback)  # LogProgress reports the same lines through `log`
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    main_process = trainer.is_world_process_zero()
    last = last_complete_checkpoint(checkpoints, remove_incomplete=main_process)
    log(
        f"Training {settings.method} on {base.name}"
        + (f" continuing {init_from}" if init_from else " from the base")
        + f": {len(train_set)} train examples, {len(eval_set or [])} of {len(data['eval'])} eval examples scored "
        f"per eval step, "
        f"{trainable:,} of {total:,} parameters trainable" + (f"; resuming from {last}" if last else "")
    )
    trainer.train(resume_from_checkpoint=last)

    history = _history(trainer.state.log_history)
    train_losses = [h["loss"] for h in history if "loss" in h]
    eval_losses = [h["eval_loss"] for h in history if "eval_loss" in h]
    final = runs_dir / rid / FINAL_DIR
    result = TrainingResult(
        output_dir=str(final), method=settings.method, run_id=rid, global_step=trainer.state.global_step,
        epochs=round(float(trainer.state.epoch or 0.0), 3), n_train=len(train_set), n_eval=len(eval_set or []),
        trainable_parameters=trainable, total_parameters=total, target_modules=targets,
        first_train_loss=train_losses[0] if train_losses else None,
        last_train_loss=train_losses[-1] if train_losses else None,
        best_eval_loss=min(eval_losses) if eval_losses else None,
        resumed_from=last or "", seconds=round(time.monotonic() - started, 1),
        warm_start_from=str(init_from or ""), base_path=base.path,
        lora_rank=settings.lora_rank if settings.method != "full" else 0, processes=trainer.args.world_size,
        history=history,
    )
    if result.last_train_loss is not None and not math.isfinite(result.last_train_loss):
        raise TrainingError(f"Training diverged (loss {result.last_train_loss}); lower training.learning_rate.")
    # Several launched processes (distributed.py): rank 0 alone writes. The others only join save_model's
    # gathering (FSDP) and wait at the barrier, so rank 0 removes the checkpoints only once every rank has
    # written its last piece of them (its RNG state): no process writes into a folder another removes.
    if not main_process:
        trainer.save_model(str(checkpoints))  # writes nothing on this rank
        trainer.accelerator.wait_for_everyone()
        return result
    with atomic_directory(final) as tmp:
        trainer.save_model(str(tmp))  # the best checkpoint's weights when an eval split exists
        tokenizer.save_pretrained(str(tmp))
        atomic_write_text(tmp / HISTORY_FILE, json.dumps(history, indent=1))
        atomic_write_bytes(tmp / CURVE_FILE, loss_curve_png(history, f"{settings.method} on {base.name}"))
        atomic_write_text(tmp / RESULT_FILE, result.to_json())
    trainer.accelerator.wait_for_everyone()
    shutil.rmtree(checkpoints, ignore_errors=True)  # the final weights are whole: nothing left to resume
    log(
        f"Training done at step {result.global_step}: train loss {result.first_train_loss} -> "
        f"{result.last_train_loss}, best eval loss {result.best_eval_loss}"
    )
    return result
