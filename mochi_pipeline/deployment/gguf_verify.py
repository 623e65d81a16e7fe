"""Does the GGUF behave like the transformers model it came from?

llama.cpp (through the installed llama-cpp-python) and transformers are given the same held-out
prompts; per quantization we compare token ids, next-token logits at every position, the chat
template stored in the GGUF, and the end-of-sequence token. Float exports must match within a
tolerance, which grows with the logits' magnitude beyond 5: f16 rounding errors grow with it (Gemma 3's
logits reach 35-55, and its f16 exports differ by 0.6-0.7% of the largest). Quantized ones must nearly
everywhere pick transformers' top-1 token or one that transformers scores within ``NEAR_TIE`` of the logit
scale below it: a near-tie flips under any rounding, and on a 262k vocabulary near-ties are common.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from mochi_pipeline.deployment.settings import ExportSettings

# Held-out prompts: code and prose the model never trains on as such, covering indentation,
# punctuation, digits, non-ASCII text and FIM sentinel tokens.
HELD_OUT_PROMPTS = (
    "def fibonacci(n: int) -> int:\n    if n < 2:\n        return n\n",
    "import os\nfrom pathlib import Path\n\nROOT = Path(__file__).parent\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):",
    "// Copyright 2024 — élan vital, naïve café\nfn main() { println!(\"{}\", 42); }\n",
    "## Installation\n\nRun `pip install mochi` and then `mochi init` in your repository.",
    "<fim_prefix>def add(a, b):\n    <fim_suffix>\n    return c<fim_middle>",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;\n",
    "for (let i = 0; i < 10; i++) {\n  console.log(i * 3.14159);\n}\n",
)

class QuantizationCheck(BaseModel):
    quantization: str
    path: str
    prompts: int
    positions: int = Field(description="Token positions whose logits were compared")
    max_abs_diff: float
    top1_agreement: float = Field(description="Share of positions where llama.cpp picks transformers' top-1 "
                                              "token or a near-tie of it (NEAR_TIE)")
    tokens_identical: bool
    chat_template_preserved: bool
    eos_matches: bool
    max_abs_diff_allowed: float | None
    top1_required: float
    problems: list[str] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


class VerificationReport(BaseModel):
    checks: list[QuantizationCheck] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def markdown(self) -> str:
        rows = [
            "| quantization | max abs diff (allowed) | top-1 agreement (required) | tokens | template | eos | ok |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            allowed = "—" if c.max_abs_diff_allowed is None else f"{c.max_abs_diff_allowed:g}"
            rows.append(
                f"| {c.quantization} | {c.max_abs_diff:.3g} ({allowed}) "
                f"| {c.top1_agreement:.1%} ({c.top1_required:.0%}) "
                f"| {'same' if c.tokens_identical else 'DIFFER'} | {'kept' if c.chat_template_preserved else 'LOST'} "
                f"| {'same' if c.eos_matches else 'DIFFER'} | {'yes' if c.passed else 'NO: ' + '; '.join(c.problems)} |"
            )
        return "\n".join(rows)


GGML_TYPE_F32 = 0
LOGIT_SCALE = 5.0  # float tolerances hold as given up to this |logit|, and grow in proportion beyond it
NEAR_TIE = 0.01  # share of the largest |logit|: a pick this close to transformers' top-1 agrees with it
_TANH_GELU = ("GELUTanh", "NewGELUActivation")  # transformers' tanh-approximation GELU modules


@contextlib.contextmanager
def llama_cpp_gelu(model):
    """GELU computed as llama.cpp's CPU backend does, while the block runs.

    ggml looks the tanh GELU up in a table indexed by the input rounded to f16 (``GGML_GELU_FP16`` in
    ggml-cpu/vec.h), so an exact f32 conversion of a GELU model (Gemma) differs from transformers' f32 GELU
    by ~1e-3 in the logits; the reference rounds the same way, so the f32 check still measures the conversion.
    """
    import torch

    class F16TableGelu(torch.nn.Module):
        def __init__(self, exact: torch.nn.Module):
            super().__init__()
            self.exact = exact

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.exact(x.half().float()).half().float()
            return torch.where(x >= 10, x, torch.where(x <= -10, torch.zeros_like(x), y))  # outside the table

    swapped = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
               if type(child).__name__ in _TANH_GELU]
    for parent, name, child in swapped:
        setattr(parent, name, F16TableGelu(child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def load_llama(gguf_path: Path, n_ctx: int = 256, logits_all: bool = False, **kwargs):
    """A llama-cpp-python model on the CPU, quiet, seeded."""
    from llama_cpp import Llama

    return Llama(model_path=str(gguf_path), n_ctx=n_ctx, logits_all=logits_all, n_gpu_layers=0, seed=0,
                 verbose=False, **kwargs)


class Reference:
    """The transformers side, run once and reused for every quantization."""

    def __init__(self, model, tokenizer, prompts: tuple[str, ...] = HELD_OUT_PROMPTS):
        import torch

        self.prompts = prompts
        # As the model reads text: with BOS where its tokenizer adds one (Gemma without it is far out of
        # distribution: its logits at the first positions run to the hundreds and quantization flips them).
        self.token_ids = [tokenizer(p)["input_ids"] for p in prompts]
        with torch.no_grad(), llama_cpp_gelu(model):
            self.logits = [model(torch.tensor([ids])).logits[0].float().numpy() for ids in self.token_ids]
        self.chat_template = tokenizer.chat_template
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> Reference:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        return cls(model, AutoTokenizer.from_pretrained(model_dir))

    @classmethod
    def from_adapter(cls, base_model_dir: Path, adapter_dir: Path) -> Reference:
        """The base model with the PEFT adapter merged in: what base GGUF + LoRA GGUF must reproduce."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload().eval()
        return cls(merged, AutoTokenizer.from_pretrained(base_model_dir))


def verify_gguf(reference: Reference, gguf_path: Path, quantization: str,
                tolerances: dict[str, tuple[float | None, float]] | None = None,
                lora_path: Path | None = None) -> QuantizationCheck:
    """Compare ``gguf_path`` (with ``lora_path`` applied, if given) against ``reference``."""
    max_allowed, top1_required = (tolerances or ExportSettings().tolerances()).get(quantization, (None, 0.8))
    longest = max(len(ids) for ids in reference.token_ids)
    extra = {"lora_path": str(lora_path)} if lora_path else {}
    # An f32 KV cache (llama.cpp's default is f16), so only the weights' conversion is measured.
    llm = load_llama(gguf_path, n_ctx=max(64, longest + 8), logits_all=True, type_k=GGML_TYPE_F32,
                     type_v=GGML_TYPE_F32, **extra)
    try:
        tokens_identical = True
        diffs: list[float] = []
        agree = positions = 0
        for text, ids, ref_logits in zip(reference.prompts, reference.token_ids, reference.logits, strict=True):
            if llm.tokenize(text.encode("utf-8"), add_bos=True, special=True) != ids:
                tokens_identical = False
            llm.reset()
            llm.eval(ids)
            got = np.asarray(llm.scores[: len(ids)], dtype=np.float32)
            diffs.append(float(np.abs(got - ref_logits).max()))
            picked = ref_logits[np.arange(len(ids)), got.argmax(-1)]  # what transformers thinks of llama.cpp's pick
            agree += int((ref_logits.max(-1) - picked <= NEAR_TIE * np.abs(ref_logits).max()).sum())
            positions += len(ids)
        stored_template = llm.metadata.get("tokenizer.chat_template")
        eos_id = llm.token_eos()
    finally:
        llm.close()
    if max_allowed is not None:
        max_allowed *= max(1.0, max(float(np.abs(r).max()) for r in reference.logits) / LOGIT_SCALE)
    check = QuantizationCheck(
        quantization=quantization, path=str(gguf_path), prompts=len(reference.prompts), positions=positions,
        max_abs_diff=max(diffs), top1_agreement=agree / positions, tokens_identical=tokens_identical,
        chat_template_preserved=stored_template == reference.chat_template, eos_matches=eos_id in reference.eos_ids,
        max_abs_diff_allowed=max_allowed, top1_required=top1_required,
    )
    problems = check.problems
    if not tokens_identical:
        problems.append("llama.cpp tokenizes the prompts differently")
    if max_allowed is not None and check.max_abs_diff > max_allowed:
        problems.append(f"logits differ by {check.max_abs_diff:.3g} > {max_allowed:g}")
    if check.top1_agreement < top1_required:
        problems.append(f"top-1 agreement {check.top1_agreement:.1%} < {top1_required:.0%}")
    if not check.chat_template_preserved:
        problems.append("the GGUF's tokenizer.chat_template differs from the tokenizer's")
    if not check.eos_matches:
        problems.append(f"GGUF eos id {eos_id} is not the model's eos {sorted(reference.eos_ids)}")
    return check


def verify_export(model_dir: Path, files: dict[str, Path],
                  tolerances: dict[str, tuple[float | None, float]] | None = None) -> VerificationReport:
    """Check every exported file (quantization → path) against the transformers model in ``model_dir``."""
    reference = Reference.from_model_dir(Path(model_dir))
    return VerificationReport(checks=[verify_gguf(reference, Path(p), q, tolerances) for q, p in files.items()])
