"""``TrainingSettings`` translated into PEFT's ``LoraConfig`` and TRL's ``SFTConfig``."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig
from trl import SFTConfig

from mochi_pipeline.training.settings import TrainingSettings


def lora_config(settings: TrainingSettings, target_modules: list[str]) -> LoraConfig:
    return LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def use_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def sft_config(settings: TrainingSettings, output_dir: Path, has_eval: bool) -> SFTConfig:
    steps = "steps" if has_eval else "no"
    return SFTConfig(
        output_dir=str(output_dir),
        seed=settings.seed,
        data_seed=settings.seed,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accumulation,
        activation_checkpointing=settings.gradient_checkpointing,  # transformers 5's name for it
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a share of the total steps
        weight_decay=settings.weight_decay,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        max_length=settings.max_seq_length,
        packing=settings.packing,
        packing_strategy="bfd",  # whole examples, each attending only to itself (position_ids restart)
        # Prompt-completion rows: loss on the completion only (raw-text rows have an empty prompt).
        completion_only_loss=True,
        logging_steps=settings.logging_steps,
        # Log a NaN/inf loss as it is: transformers' default filter logs it as the window's average (0.0 at a
        # window's start), which hides a diverged run from train()'s check and from training_loss_decreased.
        logging_nan_inf_filter=False,
        eval_strategy=steps,
        eval_steps=settings.eval_steps,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        load_best_model_at_end=has_eval,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False if has_eval else None,
        bf16=use_bf16(),
        fp16=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinned memory only helps copies to a GPU
        # Without an accelerator, processes launched together (distributed.py) only form one group (gloo) when
        # told they run on the CPU; otherwise each trains the whole job alone and every one writes as rank 0.
        use_cpu=not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        ddp_find_unused_parameters=False,  # several processes (distributed.py): every trainable weight gets a gradient
    )
