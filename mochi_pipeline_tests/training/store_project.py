"""A small project dataset in training_dataset's schema, and fast training settings for tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import datasets

from mochi_pipeline.training.settings import TrainingSettings

# Pre-training budget of the tiny base in tests: enough to leave random init, small enough for CI.
TEST_TINY_STEPS = 20
# The `training:` keys that pin a test to the tiny base (mochi's default is the real, slower gemma3-270m).
TINY_BASE = {"base_model": "tiny", "tiny_pretrain_steps": TEST_TINY_STEPS}

# A small "project": a store service whose code follows house conventions a generic model cannot know.
ENTITIES = [
    "order", "invoice", "customer", "parcel", "coupon", "refund", "basket", "ticket", "voucher", "payment",
    "shipment", "review", "account", "address", "product", "supplier",
]
HELD_OUT = {"ticket", "voucher", "supplier", "review"}


def _module(entity: str) -> str:
    cls = entity.capitalize()
    return (
        f"from mochi_store.ledger import ledger\n"
        f"from mochi_store.errors import StoreError\n\n\n"
        f"class {cls}Service:\n"
        f"    def get_{entity}(self, {entity}_id: int) -> dict:\n"
        f"        record = ledger.fetch('{entity}', {entity}_id)\n"
        f"        if record is None:\n"
        f"            raise StoreError('{entity} not found', {entity}_id)\n"
        f"        return record\n\n"
        f"    def delete_{entity}(self, {entity}_id: int) -> None:\n"
        f"        ledger.remove('{entity}', {entity}_id)\n"
        f"        ledger.audit('{entity}.deleted', {entity}_id)\n"
    )


def _rows(entity: str, rng: random.Random) -> list[dict]:
    code = _module(entity)
    lines = code.splitlines(keepends=True)
    base = {"generator": "completion_pairs", "path": f"mochi_store/{entity}.py", "commit": "", "language": "python",
            "date": "2024-05-01" if entity in HELD_OUT else "2024-01-01"}
    rows = []
    for cut in range(6, len(lines)):
        if not lines[cut].strip():
            continue
        prefix, target = "".join(lines[:cut]), lines[cut]
        rows.append({**base, "instruction": f"Continue `{base['path']}` with the next line of code.",
                     "context": prefix, "response": target, "task": "next_line", "text": prefix + target})
    cut = rng.randrange(7, len(lines) - 1)
    prefix, middle, suffix = "".join(lines[:cut]), lines[cut], "".join(lines[cut + 1:])
    rows.append({**base, "instruction": "Fill in the missing code.", "context": prefix + "<missing>\n" + suffix,
                 "response": middle, "task": "fim_psm", "prefix": prefix, "suffix": suffix,
                 "text": prefix + middle + suffix})
    rows.append({**base, "generator": "doc_code_mapping", "task": "implement",
                 "instruction": f"Write the service class for {entity} records in mochi_store.", "context": "",
                 "response": code, "text": f"Write the service class for {entity} records in mochi_store.\n\n{code}"})
    for row in rows:
        row.setdefault("prefix", "")
        row.setdefault("suffix", "")
        row["id"] = f"{entity}-{len(row['context'])}-{row['task']}"
        row["messages"] = [
            {"role": "system", "content": "You are a coding assistant for this project."},
            {"role": "user", "content": f"{row['instruction']}\n\n{row['context']}".rstrip()},
            {"role": "assistant", "content": row["response"]},
        ]
        row["n_tokens"] = len(row["text"].split())
    return rows


def make_store_dataset(out: Path) -> Path:
    """Write a DatasetDict (save_to_disk under out/hf) plus one JSONL per split, like training_dataset does."""
    rng = random.Random(0)
    splits: dict[str, list[dict]] = {"train": [], "eval": []}
    for entity in ENTITIES:
        splits["eval" if entity in HELD_OUT else "train"].extend(_rows(entity, rng))
    dd = datasets.DatasetDict({name: datasets.Dataset.from_list(rows) for name, rows in splits.items()})
    dd.save_to_disk(str(out / "hf"))
    for name, rows in splits.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def fast_settings(**overrides) -> TrainingSettings:
    """Few, short steps: seconds per run on 2 CPU cores."""
    # LoRA unless a test says otherwise: the tiny preset's own default is a full fine-tune.
    knobs = dict(method="lora", max_steps=8, max_seq_length=192, batch_size=4, learning_rate=3e-3, lora_rank=8,
                 lora_alpha=16, lora_dropout=0.0, eval_steps=4, save_steps=4, logging_steps=1, warmup_ratio=0.0,
                 lr_scheduler="constant", **TINY_BASE, eval_max_examples=40)
    knobs.update(overrides)
    return TrainingSettings(**knobs)
