"""The fine-tuned model as one standalone checkpoint: adapter merged into the base weights.

Written as safetensors + tokenizer (with the chat template used in training) + a model card, so
``AutoModelForCausalLM.from_pretrained`` loads it and llama.cpp's converter accepts it (a model
still wrapped by PEFT has ``base_layer`` tensors the converter rejects).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer

from mochi_pipeline.storage import atomic_directory
from mochi_pipeline.training import base_models
from mochi_pipeline.training.base_models import ResolvedBase


def merged_model(base: ResolvedBase, final_dir: Path, method: str) -> torch.nn.Module:
    """Base + adapter merged (or the fully fine-tuned weights), unquantized, ready to save."""
    as_base = ResolvedBase(base.name, str(final_dir), "", (), None, None)
    if method == "full":
        return base_models.load_model(as_base)
    from peft import PeftModel

    # A QLoRA adapter is merged into the unquantized base: 4-bit weights cannot absorb it exactly.
    model = PeftModel.from_pretrained(base_models.load_model(base), str(final_dir))
    return model.merge_and_unload()


def model_card(base: ResolvedBase, method: str, data_description: str, metrics: dict) -> str:
    origin = base.hf_id or ("mochi's offline `tiny` base (Llama, StarCoder tokenizer)" if base.name == "tiny"
                            else base.path)
    lines = [
        "---",
        "library_name: transformers",
        *( [f"base_model: {base.hf_id}"] if base.hf_id else [] ),
        "tags: [mochi, code, fine-tuned]",
        "---",
        "",
        f"# {base.name} fine-tuned by mochi",
        "",
        f"- **Base model:** {origin}",
        f"- **Method:** {method} (merged into the base weights)",
        f"- **Data:** {data_description}",
        "",
        "## Held-out metrics",
        "",
        "```json",
        json.dumps(metrics, indent=1),
        "```",
        "",
        "Load with `AutoModelForCausalLM.from_pretrained(<this folder>)`; prompts use the tokenizer's chat template.",
    ]
    return "\n".join(lines) + "\n"


def merge(
    base: ResolvedBase, final_dir: Path, method: str, out_dir: Path, data_description: str, metrics: dict,
) -> Path:
    """Write the merged model to ``out_dir`` atomically; returns ``out_dir``."""
    model = merged_model(base, final_dir, method)
    tokenizer = AutoTokenizer.from_pretrained(str(final_dir))
    with atomic_directory(out_dir) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        # save_pretrained writes tokenizer.json only; llama.cpp's converters for SentencePiece vocabularies
        # (Phi-3, Llama 2, Mistral) read the base's tokenizer.model, so it travels with the merged model.
        sentencepiece = Path(base.path) / "tokenizer.model"
        if sentencepiece.is_file() and not (tmp / "tokenizer.model").exists():
            shutil.copy2(sentencepiece, tmp / "tokenizer.model")
        (tmp / "README.md").write_text(model_card(base, method, data_description, metrics), encoding="utf-8")
    return out_dir
