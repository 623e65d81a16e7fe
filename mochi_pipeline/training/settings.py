"""Settings of the training layer (``training`` section of mochi.yaml).

One model, with help text and validation in one place (trl style): every knob of the base model,
the adapter, the optimiser, the data layout, checkpointing and evaluation lives here. A base
preset's own defaults (``PRESET_DEFAULTS``) fill the keys mochi.yaml leaves out, once, when the
config is read, so every later reader sees the values that will be used.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from mochi_pipeline.settings_base import Section

# Training keys a base preset sets unless mochi.yaml does.
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    # Small enough to fine-tune on 2 CPU cores in minutes; a tiny model wants a larger learning rate. Full, not
    # LoRA: at 7M parameters the 49k-token head costs the same either way, and only a full fine-tune moves held-out
    # perplexity far (pallets/click, 100 steps: 0.36x the base against 0.89x for LoRA on q/v).
    "tiny": {"method": "full", "max_steps": 100, "learning_rate": 1e-3, "max_seq_length": 256, "batch_size": 8,
             "eval_steps": 50, "save_steps": 50, "eval_max_examples": 120},
    # Sized for a CPU: float32, 1 x 256 tokens a step (3-11 s a step on 2 cores; 40 steps took 2m54s on
    # pallets/click). A LoRA on every projection, 40 such steps, took held-out perplexity on this repository's code
    # from 70 to 14. Losses logged as 10-step means: single rows of code vary too much to compare one with another.
    "gemma3-270m": {"method": "lora", "lora_rank": 16, "lora_alpha": 32.0, "learning_rate": 3e-4, "max_steps": 40,
                    "batch_size": 1, "max_seq_length": 256, "eval_steps": 20, "save_steps": 20,
                    "eval_during_training": 8, "eval_max_examples": 48, "logging_steps": 10},
    "smollm2-135m-instruct": {"method": "lora", "lora_rank": 16, "lora_alpha": 32.0, "learning_rate": 3e-4,
                              "max_steps": 40, "batch_size": 2, "max_seq_length": 256, "eval_steps": 20,
                              "save_steps": 20, "eval_during_training": 8, "eval_max_examples": 48,
                              "logging_steps": 10},
}
# Settings that change how a model is judged or kept, not the weights training produces.
EVAL_ONLY = ("eval_max_examples", "quality_gate", "gate_tolerance", "keep_runs",
             "main_process_port")


class TrainingSettings(Section):
    base_model: str = Field(
        "gemma3-270m",
        description="Preset name (gemma3-270m, smollm2-135m-instruct and tiny work offline; qwen2.5-coder-0.5b, "
        "phi-3-mini, ... come from the Hugging Face hub), Hugging Face id or local path.",
    )
    method: str = Field(
        "lora", pattern="^(lora|qlora|full)$",
        description="lora (adapter on a frozen base), qlora (adapter on a 4-bit base; CUDA GPU only) or full.",
    )
    seed: int = Field(0, description="Seed of weight init, data order and dropout.")

    # Adapter (lora / qlora)
    lora_rank: int = Field(16, ge=1, le=1024, description="LoRA rank r.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scaling alpha (update scale = alpha / r).")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    lora_targets: list[str] = Field(
        default_factory=list,
        description="Module names to adapt (e.g. [q_proj, v_proj]); [] = the base model preset's list, "
        "or every attention/MLP projection found in the model.",
    )

    # Optimisation
    learning_rate: float = Field(2e-4, gt=0, lt=1, description="Peak learning rate (LoRA ~2e-4, full ~2e-5).")
    lr_scheduler: str = Field(
        "cosine", pattern="^(linear|cosine|constant|constant_with_warmup)$",
        description="Learning-rate schedule after warm-up.",
    )
    warmup_ratio: float = Field(0.05, ge=0.0, lt=1.0, description="Share of the steps spent warming up.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training split (ignored when max_steps > 0).")
    max_steps: int = Field(
        -1, description="Stop after this many optimiser steps; -1 = run `epochs` epochs.",
    )
    batch_size: int = Field(4, ge=1, description="Sequences per device per step.")
    grad_accumulation: int = Field(1, ge=1, description="Micro-batches accumulated per optimiser step.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass (less memory, ~30% slower).",
    )

    # Several GPUs (distributed.py)
    processes: int = Field(
        1, ge=1, description="GPUs to train on, one process each, under `accelerate launch` (DDP for lora/qlora, "
        "FSDP for full; batch_size is per GPU). 1 = train in the step's own process.",
    )
    main_process_port: int = Field(29500, ge=1024, le=65535, description="Port the launched processes meet on "
                                   "(processes > 1); change it when two trainings share a machine.")

    # Data layout
    max_seq_length: int = Field(512, ge=16, le=131072, description="Tokens per training sequence (packed block size).")
    packing: bool = Field(
        True, description="Pack several examples per sequence (best-fit decreasing, no cross-example attention).",
    )

    fim: str = Field(
        "native", pattern="^(native|off)$",
        description="native: fill-in-the-middle examples in the base model's own FIM tokens (StarCoder, "
        "Qwen2.5-Coder, CodeGemma, DeepSeek-Coder), the format `mochi serve`'s /infill sends; a base without FIM "
        "tokens (Phi-3, Gemma base) leaves them out and says so. off: leave them out.",
    )

    # Checkpoints, evaluation during training, early stopping
    logging_steps: int = Field(5, ge=1, description="Log the training loss every this many steps.")
    eval_steps: int = Field(25, ge=1, description="Evaluate on the eval split every this many steps.")
    eval_during_training: int = Field(
        500, ge=1, description="Eval examples scored at each eval step (a seeded sample of the eval split): the loss "
        "that picks the best checkpoint and stops early. A large held-out split (eval_since_tag) stays cheap.",
    )
    save_steps: int = Field(25, ge=1, description="Checkpoint every this many steps (a multiple of eval_steps).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept on disk (the best one is always kept).")
    early_stopping_patience: int = Field(
        3, ge=0, description="Stop after this many evaluations without a better eval loss; 0 = never stop early.",
    )

    # Retraining
    warm_start: bool = Field(
        True, description="Continue from the last accepted model when the base model and method are unchanged "
        "(else every retraining starts from the base).",
    )
    keep_runs: int = Field(3, ge=1, description="Finished training runs kept on disk besides the accepted one.")

    # Held-out evaluation and the quality gate (evaluation_report)
    eval_max_examples: int = Field(200, ge=1, description="Eval examples scored per model (seeded sample).")
    quality_gate: bool = Field(
        True, description="Block merge and export of a model with a higher held-out perplexity than its base, or "
        "than the model it would replace (beyond gate_tolerance); the exported model then stays in place.",
    )
    gate_tolerance: float = Field(
        0.02, ge=0.0, lt=1.0, description="Relative held-out perplexity a new model may lose against the model it "
        "replaces (evaluation noise) and still pass the gate.",
    )

    # The offline `tiny` base
    tiny_pretrain_steps: int = Field(
        200, ge=1,
        description="Optimiser steps of the `tiny` base's pre-training on Python's standard library "
        "(8 x 256 tokens each; about 3 s per step on 2 free cores, so the default takes about 10 min). "
        "Each value is built once and cached.",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = PRESET_DEFAULTS.get(data.get("base_model", cls.model_fields["base_model"].default), {})
            data = {**preset, **data}
        return data

    def weights_signature(self) -> str:
        """Signature of what changes the trained weights (not how they are judged or kept)."""
        return self.signature(*(name for name in type(self).model_fields if name not in EVAL_ONLY))

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSettings:
        if self.save_steps % self.eval_steps:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({self.eval_steps}) so the best "
                "checkpoint by eval loss is on disk; e.g. set save_steps to the same value."
            )
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps must be -1 (use epochs) or a positive step count, got {self.max_steps}.")
        return self
