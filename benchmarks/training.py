"""mochi's trainer against a bare PyTorch LoRA loop and the padded Hugging Face recipe: tokens/s and peak memory.

    .venv/bin/python benchmarks/training.py [--base gemma3-270m] [--steps 8] [--seq 256] [--batch 1]
                                            [--tiny-steps 20] [--dataset DIR]

Every mode fine-tunes the same base (the default gemma3-270m, or --base tiny) with the same LoRA settings
on the same examples: next-line prefixes cut from Python's standard library (5-60 lines each, like
completion_pairs makes), or the training rows of a real training_dataset (--dataset). The baseline
pads every example to the sequence length (the usual `tokenizer(..., padding="max_length")` +
`Trainer` recipe); mochi packs whole examples into full sequences (TRL best-fit decreasing,
attention kept within each example, batched as rows); TRL's own flattened padding-free batches are
timed too ("packed_flat"), and so is a bare PyTorch loop ("bare": the PEFT model, AdamW, forward with
labels, backward, step; full rows of the same texts), the floor any trainer adds overhead to: target
mochi >= 0.9x of it. Each mode runs in its own process so its peak RSS is its own.
Speed = real (non-pad) tokens per second of training. The gain over padding is bounded by how full the
padded rows are: short examples against a long sequence length gain most. With --dataset, chat rows'
prompts carry no loss, and mochi's trainer skips the output head there (trainer.MochiSFTTrainer).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/secrets.py would hide the standard library's `secrets` (numpy imports it): this folder
# comes off the import path before anything imports numpy.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

TARGET = 2.0  # packed against padded
BARE_TARGET = 0.9  # mochi's trainer against the bare loop


def examples(n: int, seed: int) -> list[str]:
    from mochi_pipeline.training.tiny_base import stdlib_sources

    rng = random.Random(seed)
    texts = []
    for path in stdlib_sources(seed):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
        if len(lines) < 70:
            continue
        start = rng.randrange(0, len(lines) - 60)
        texts.append("".join(lines[start:start + rng.randint(5, 60)]))
        if len(texts) == n:
            return texts
    return texts


def dataset_texts(path: str, tokenizer) -> list[str]:
    """The training split of a mochi training_dataset, each row as the text the trainer sees."""
    from mochi_pipeline.training.fim import fim_tokens
    from mochi_pipeline.training.sft_data import Formatter, load_dataset_dict

    formatter = Formatter(tokenizer, tokenizer.eos_token, fim_tokens(tokenizer))
    return ["".join(formatter.training_pair(row)) for row in load_dataset_dict(path)["train"] if formatter.usable(row)]


def run_mode(mode: str, steps: int, seq: int, batch: int, tiny_steps: int, dataset: str, base_name: str) -> dict:
    import datasets
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from mochi_pipeline.training import base_models
    from mochi_pipeline.training.lora_config import lora_config, sft_config
    from mochi_pipeline.training.settings import TrainingSettings

    torch.manual_seed(0)
    base = base_models.resolve_base(base_name, tiny_steps)
    tokenizer = base_models.load_tokenizer(base)
    model = base_models.load_model(base)
    settings = TrainingSettings(max_steps=steps, max_seq_length=seq, batch_size=batch, packing=True,
                                eval_steps=10_000, save_steps=10_000, logging_steps=steps, warmup_ratio=0.0,
                                tiny_pretrain_steps=tiny_steps)
    texts = dataset_texts(dataset, tokenizer) if dataset else examples(400, seed=0)
    out = Path(tempfile.mkdtemp(prefix=f"mochi-bench-{mode}-"))
    if mode in ("packed", "packed_flat"):
        from trl import SFTTrainer

        from mochi_pipeline.training.trainer import MochiSFTTrainer, use_packed_rows

        args = sft_config(settings, out, has_eval=False)
        args.save_strategy = "no"
        data = datasets.Dataset.from_dict({"prompt": [""] * len(texts), "completion": texts})
        cls = MochiSFTTrainer if mode == "packed" else SFTTrainer
        trainer = cls(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                             peft_config=lora_config(settings, list(base.target_modules)))
        if mode == "packed":
            use_packed_rows(trainer, packing=True)
        rows = trainer.train_dataset
        real_per_row = sum(len(r) for r in rows["input_ids"]) / len(rows)
    elif mode == "bare":
        return bare_loop(model, tokenizer, texts, settings, list(base.target_modules))
    else:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config(settings, list(base.target_modules)))
        enc = tokenizer([t + tokenizer.eos_token for t in texts], padding="max_length", truncation=True,
                        max_length=seq)
        rows = datasets.Dataset.from_dict(dict(enc))
        real_per_row = sum(sum(m) for m in enc["attention_mask"]) / len(rows)
        args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps,
                                 learning_rate=settings.learning_rate, logging_steps=steps, save_strategy="no",
                                 report_to="none", disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    real_tokens = real_per_row * batch * steps
    return {
        "mode": mode, "seconds": round(seconds, 2), "real_tokens": int(real_tokens),
        "tokens_per_s": round(real_tokens / seconds, 1), "real_tokens_per_row": round(real_per_row, 1),
        "rows": len(rows), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def bare_loop(model, tokenizer, texts: list[str], settings, targets: list[str]) -> dict:
    """The plainest LoRA fine-tune: full rows cut from the texts' tokens, AdamW, no Trainer."""
    import torch
    from peft import get_peft_model

    from mochi_pipeline.training.lora_config import lora_config

    model = get_peft_model(model, lora_config(settings, targets)).train()
    flat = [t for text in texts for t in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]
    seq, batch, steps = settings.max_seq_length, settings.batch_size, settings.max_steps
    rows = torch.tensor(flat[: len(flat) // seq * seq]).view(-1, seq)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    started = time.perf_counter()
    for step in range(steps):
        ids = rows[(step * batch) % len(rows):][:batch]
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - started
    real_tokens = seq * batch * steps
    return {"mode": "bare", "seconds": round(seconds, 2), "real_tokens": real_tokens,
            "tokens_per_s": round(real_tokens / seconds, 1), "real_tokens_per_row": seq, "rows": len(rows),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="gemma3-270m", help="base preset (tiny: seconds instead of minutes)")
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps per mode")
    parser.add_argument("--seq", type=int, default=256, help="sequence length (the gemma3-270m preset's)")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step (the gemma3-270m preset's)")
    parser.add_argument("--tiny-steps", type=int, default=20,
                        help="pre-training steps of the tiny base (speed does not depend on it; 20 = the tests' cache)")
    parser.add_argument("--dataset", default="", help="a training_dataset directory to use instead of stdlib cuts")
    parser.add_argument("--mode", choices=["packed", "packed_flat", "padded", "bare"], help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.mode:  # child process: one mode, one JSON line
        print(json.dumps(run_mode(a.mode, a.steps, a.seq, a.batch, a.tiny_steps, a.dataset, a.base)))
        return
    results = {}
    for mode in ("bare", "padded", "packed_flat", "packed"):
        cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(a.steps), "--seq", str(a.seq),
               "--batch", str(a.batch), "--tiny-steps", str(a.tiny_steps), "--dataset", a.dataset, "--base", a.base]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{mode} run failed:\n{proc.stderr[-3000:]}")
        results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(results[mode]))
    ratio = results["packed"]["tokens_per_s"] / results["padded"]["tokens_per_s"]
    flat = results["packed_flat"]["tokens_per_s"] / results["padded"]["tokens_per_s"]
    print(f"(TRL's flattened padding-free packing without FlashAttention: {flat:.2f}x)")
    print(f"packed {results['packed']['tokens_per_s']} tok/s vs padded baseline "
          f"{results['padded']['tokens_per_s']} tok/s: {ratio:.2f}x (target >= {TARGET}x); peak RSS "
          f"{results['packed']['peak_rss_mb']} MB vs {results['padded']['peak_rss_mb']} MB")
    bare = results["packed"]["tokens_per_s"] / results["bare"]["tokens_per_s"]
    print(f"mochi's trainer {results['packed']['tokens_per_s']} tok/s vs a bare PyTorch LoRA loop "
          f"{results['bare']['tokens_per_s']} tok/s on {a.base}: {bare:.2f}x (target >= {BARE_TARGET}x); peak RSS "
          f"{results['packed']['peak_rss_mb']} MB vs {results['bare']['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
