"""Tiny random stand-ins for each base-model family: the family's own transformers class, its real tokenizer.

The llama.cpp release mochi pins ships vocabulary-only GGUFs of real models (``models/ggml-vocab-*.gguf``).
Each stand-in here pairs one of them with a small, randomly initialised model of the class the family's
checkpoints use, so the whole fine-tune → merge → GGUF → serve path runs per family without the hub:

- ``llama``: ``LlamaForCausalLM`` + the StarCoder vocabulary (the ``tiny`` preset);
- ``qwen2``: ``Qwen2ForCausalLM`` + the Qwen2 vocabulary, with Qwen2.5-Coder's FIM and repository tokens
  written over the placeholders at the ids Qwen2.5-Coder gives them (the qwen2 vocabulary predates them);
- ``phi3``: ``Phi3ForCausalLM`` + the Phi-3 vocabulary, plus the SentencePiece ``tokenizer.model`` llama.cpp's
  Phi-3 converter reads, rebuilt from the vocabulary's own pieces, scores and types;
- ``gemma4``: ``Gemma4ForCausalLM`` + the Gemma 4 vocabulary (the only Gemma vocabulary the release ships).

Each build is cached under ``$MOCHI_CACHE/test-models/<family>-<hash>``; the hash covers this file's source,
the family's settings and the versions of transformers and llama.cpp, so any change rebuilds it.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mochi_pipeline.llama_cpp_vendor import LLAMA_CPP_PYTHON_VERSION, cache_root, vocab_gguf
from mochi_pipeline.storage import build_key, build_once
from mochi_pipeline.training.base_models import PRESETS, ResolvedBase

# llama.cpp's names for the fill-in-the-middle roles (``llama_vocab_fim_<role>``).
FIM_ROLES = ("pre", "suf", "mid", "pad", "rep", "sep")

# Sizes every stand-in shares: seconds to convert and run, big enough for real attention and MLP blocks.
SMALL = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
SEED = 0


@dataclass(frozen=True)
class Family:
    name: str
    vocab: str  # llama.cpp's models/ggml-vocab-<vocab>.gguf
    model_class: str  # the transformers class of the family's checkpoints
    config_class: str
    config: dict[str, Any]  # beyond SMALL
    preset: str  # the preset whose LoRA targets (and, unless overridden below, template and turn end) apply
    # The tokenizer's native fill-in-the-middle tokens, by llama.cpp role; ``fim_in_llama_cpp``: the roles
    # llama.cpp finds in the exported GGUF (it matches known token texts), the others it does not know.
    fim: dict[str, str]
    fim_in_llama_cpp: tuple[str, ...]
    eos: str  # the tokenizer's (and the GGUF's) end-of-sequence token
    turn_end: str  # the token closing an assistant turn in the chat template used for training
    # Special tokens written over placeholder ids of the vocabulary (id → text), as the real family has them.
    replace_tokens: dict[int, str] = field(default_factory=dict)
    # Added tokens that swallow the whitespace after them in the real tokenizer.json (``rstrip``).
    rstrip: tuple[str, ...] = ()
    # When set, the preset's template and turn end are not this vocabulary's (see ``gemma4``).
    chat_template_override: tuple[str | None, str | None] | None = None

    @property
    def stops(self) -> list[str]:
        """Where generation must stop: the turn end, then the eos token (once if they are the same)."""
        return list(dict.fromkeys([self.turn_end, self.eos]))

    def signature(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items()}, sort_keys=True, default=str)


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family(
        "llama", "starcoder", "LlamaForCausalLM", "LlamaConfig", {}, preset="tiny",
        fim={"pre": "<fim_prefix>", "suf": "<fim_suffix>", "mid": "<fim_middle>", "pad": "<fim_pad>",
             "rep": "<repo_name>", "sep": "<file_sep>"},
        # llama.cpp knows StarCoder's <fim_*> tokens but not its <repo_name> / <file_sep> spelling.
        fim_in_llama_cpp=("pre", "suf", "mid", "pad"),
        eos="<|endoftext|>", turn_end="<|endoftext|>",
    ),
    Family(
        "qwen2", "qwen2", "Qwen2ForCausalLM", "Qwen2Config", {}, preset="qwen2.5-coder-0.5b",
        fim={"pre": "<|fim_prefix|>", "suf": "<|fim_suffix|>", "mid": "<|fim_middle|>", "pad": "<|fim_pad|>",
             "rep": "<|repo_name|>", "sep": "<|file_sep|>"},
        fim_in_llama_cpp=FIM_ROLES,
        eos="<|endoftext|>", turn_end="<|im_end|>",
        # Qwen2.5(-Coder)'s tokenizer: these ids are [PAD151659]..[PAD151664] in the older qwen2 vocabulary.
        replace_tokens={151659: "<|fim_prefix|>", 151660: "<|fim_middle|>", 151661: "<|fim_suffix|>",
                        151662: "<|fim_pad|>", 151663: "<|repo_name|>", 151664: "<|file_sep|>"},
    ),
    Family(
        "phi3", "phi-3", "Phi3ForCausalLM", "Phi3Config",
        # Phi-3 mini: no grouped-query attention; the converter reads original_max_position_embeddings.
        {"num_key_value_heads": 4, "original_max_position_embeddings": 512, "tie_word_embeddings": False},
        preset="phi-3-mini", fim={}, fim_in_llama_cpp=(), eos="<|endoftext|>", turn_end="<|end|>",
        # Phi-3's chat tokens (all control tokens but <unk>, <s>, <|endoftext|>) and </s> strip the
        # whitespace after them, which llama.cpp reproduces for Phi-3 GGUFs (llama-vocab.cpp).
        rstrip=("</s>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
                "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>"),
    ),
    Family(
        "gemma4", "gemma-4", "Gemma4ForCausalLM", "Gemma4TextConfig",
        # One sliding-window layer then one global layer (Gemma 4's interleaving, last layer global), the
        # global one with its own wider head and proportional RoPE (the config's defaults), final logit
        # soft-capping as Gemma 4 ships; no per-layer input embeddings (a feature of the E2B/E4B sizes only).
        {"head_dim": 16, "global_head_dim": 32, "layer_types": ["sliding_attention", "full_attention"],
         "sliding_window": 8, "hidden_size_per_layer_input": 0, "final_logit_softcapping": 30.0},
        # No preset uses the Gemma 4 vocabulary: the gemma presets' LoRA targets, with the vocabulary's own
        # chat template and its turn end (their GEMMA_TEMPLATE's <start_of_turn> is no token here).
        preset="gemma-2b", fim={}, fim_in_llama_cpp=(), eos="<eos>", turn_end="<turn|>",
        chat_template_override=(None, "<turn|>"),
    ),
)}


def resolved_base(family: Family, model_dir: Path) -> ResolvedBase:
    """``model_dir`` as mochi resolves the family's preset: its LoRA targets, chat template and turn end."""
    preset = PRESETS[family.preset]
    template, end = family.chat_template_override or (preset.chat_template, preset.end_of_turn)
    return ResolvedBase(preset.name, str(model_dir), "", preset.target_modules, template, end)


def load_vocab_tokenizer(family: Family):
    """The family's tokenizer as transformers builds it from the vocabulary GGUF."""
    from transformers import AutoTokenizer, GemmaTokenizer

    vocab = vocab_gguf(family.vocab)
    # AutoTokenizer also builds a model config from the GGUF, which fails on Gemma 4's per-layer head counts.
    if family.name != "gemma4":
        return AutoTokenizer.from_pretrained(str(vocab.parent), gguf_file=vocab.name)
    tokenizer = GemmaTokenizer.from_pretrained(str(vocab.parent), gguf_file=vocab.name)
    tokenizer.add_bos_token = True  # as the GGUF says (add_bos_token) and Gemma's own tokenizer does
    return tokenizer


def _edit_added_tokens(tokenizer, replace: dict[int, str], rstrip: tuple[str, ...]):
    """``tokenizer`` with special tokens written over the placeholders at ``replace``'s ids, and the
    ``rstrip`` tokens swallowing the whitespace after them; both are flags a GGUF does not record."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        path = Path(tmp) / "tokenizer.json"
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data["model"]["vocab"]
        by_id = {i: t for t, i in vocab.items()}
        added = {a["id"]: a for a in data["added_tokens"]}
        for token_id, text in replace.items():
            vocab[text] = vocab.pop(by_id[token_id])
            added[token_id].update(content=text, special=True)
        for entry in added.values():
            if entry["content"] in rstrip:
                entry["rstrip"] = True
        path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        return AutoTokenizer.from_pretrained(tmp)


def _list_special_tokens(tokenizer) -> None:
    """Name every special added token in ``extra_special_tokens``, as the real tokenizer configs do.

    transformers' GGUF loader marks the vocabulary's control tokens special but lists only bos/eos/unk/pad,
    and llama.cpp's Gemma 4 converter types as control only the tokens in ``all_special_tokens``.
    """
    named = set(tokenizer.all_special_tokens)
    added = sorted(tokenizer.added_tokens_decoder.items())
    extra = [t.content for _, t in added if t.special and t.content not in named]
    tokenizer.add_special_tokens({"extra_special_tokens": extra}, replace_extra_special_tokens=False)


def sentencepiece_model(vocab_path: Path, size: int) -> bytes:
    """A SentencePiece BPE model (Llama style, byte fallback) of the first ``size`` pieces of a vocab GGUF.

    The pieces, scores and byte/control types are the vocabulary's own; tokens past ``size`` (Phi-3's
    chat tokens) are added tokens, which llama.cpp's converter takes from tokenizer.json, as for the real
    model. unk/bos/eos are typed as in Llama's tokenizer.model (the GGUF holds the types after the
    converter applied tokenizer.json's special flags, which it will apply again).
    """
    import gguf
    from transformers.utils import sentencepiece_model_pb2_new as sp_pb2  # sentencepiece's own needs newer protobuf

    reader = gguf.GGUFReader(str(vocab_path))
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    piece = sp_pb2.ModelProto.SentencePiece
    model = sp_pb2.ModelProto()
    spec = model.trainer_spec
    spec.model_type, spec.vocab_size, spec.byte_fallback = sp_pb2.TrainerSpec.BPE, size, True
    spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id = 0, 1, 2, -1
    norm = model.normalizer_spec
    norm.name, norm.add_dummy_prefix, norm.remove_extra_whitespaces, norm.escape_whitespaces = (
        "identity", True, False, True)
    for i in range(size):
        kind = {0: piece.UNKNOWN, 1: piece.CONTROL, 2: piece.CONTROL}.get(
            i, piece.BYTE if types[i] == piece.BYTE else piece.NORMAL)
        model.pieces.add(piece=tokens[i], score=scores[i], type=kind)
    return model.SerializeToString()


def build_family_model(family: Family, dest: Path) -> Path:
    """Save the random model, its tokenizer (and tokenizer.model where llama.cpp needs one) to ``dest``."""
    import torch
    import transformers

    tokenizer = load_vocab_tokenizer(family)
    _list_special_tokens(tokenizer)  # first: adding special tokens again resets their rstrip flags
    if family.replace_tokens or family.rstrip:
        tokenizer = _edit_added_tokens(tokenizer, family.replace_tokens, family.rstrip)
    config = getattr(transformers, family.config_class)(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **{**SMALL, **family.config},
    )
    torch.manual_seed(SEED)
    model = getattr(transformers, family.model_class)(config).eval()  # seeded init (std 0.02)
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    if family.name == "phi3":
        (dest / "tokenizer.model").write_bytes(sentencepiece_model(vocab_gguf(family.vocab), 32000))
    return dest


def family_model_dir(name: str) -> Path:
    """The cached stand-in of family ``name``, built on first use."""
    import transformers

    family = FAMILIES[name]
    key = build_key([__file__], family.signature(), transformers.__version__, LLAMA_CPP_PYTHON_VERSION)
    return build_once(cache_root() / "test-models" / f"{name}-{key}", lambda d: (d / "config.json").is_file(),
                      lambda tmp: build_family_model(family, tmp))
