"""Hugging Face model / PEFT adapter → GGUF, with llama.cpp's own converters from the pinned release.

f32, f16, bf16 and q8_0 come straight from ``convert_hf_to_gguf.py --outtype``; q4_k_m is made
from a float GGUF by the installed runtime's ``llama_model_quantize`` (the converter has no k-quants).
Every file is written under a temporary name and renamed into place, so a failed run leaves the
previous export intact.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from mochi_pipeline.llama_cpp_vendor import converter_script, llama_cpp_dir, lora_converter_script
from mochi_pipeline.progress import Notice, Progress
from mochi_pipeline.records import Record

CONVERTER_TYPES = ("f32", "f16", "bf16", "q8_0")
RUNTIME_TYPES = {"q4_k_m": 15}  # llama_ftype LLAMA_FTYPE_MOSTLY_Q4_K_M
SUPPORTED_TYPES = (*CONVERTER_TYPES, *RUNTIME_TYPES)
K_QUANT_BLOCK = 256  # QK_K: k-quant super-block width; rows must be a multiple of it

# Substrings of converter stderr → what usually causes them and how to fix it.
_LIKELY_CAUSES = (
    ("base_layer", "the model still holds unmerged PEFT/LoRA tensors (`...base_layer.weight`); "
                   "merge the adapter first (`merge_and_unload()`, the `merged_model` asset) and export that."),
    ("BPE pre-tokenizer was not recognized", "llama.cpp does not know this tokenizer's pre-tokenizer; use a "
                                             "base model whose tokenizer llama.cpp supports (e.g. StarCoder's)."),
    ("is not supported", "llama.cpp has no converter for this architecture; pick a base model llama.cpp supports "
                         "(Llama, Qwen2, Phi-3, Gemma, StarCoder2, ...)."),
    ("not supported!", "llama.cpp has no converter for this architecture; pick a supported base model."),
    ("Can not map tensor", "a tensor name is unknown to llama.cpp for this architecture (extra heads or "
                           "unmerged adapters); export a plain merged causal-LM checkpoint."),
    ("config.json", "the directory is not a Hugging Face model (config.json missing or unreadable)."),
    ("adapter_config.json", "the directory is not a PEFT adapter (adapter_config.json missing or unreadable)."),
)


class GGUFExportError(RuntimeError):
    """A conversion failed; the message quotes llama.cpp and names the likely cause."""


class GGUFFile(Record):
    quantization: str = Field(description="f32, f16, bf16, q8_0 or q4_k_m")
    path: str = Field(description="Absolute path of the .gguf file")
    size_bytes: int


class GGUFExport(Record):
    directory: str = Field("", description="Folder holding the .gguf files")
    source_model: str = Field("", description="The Hugging Face model directory they were converted from")
    base_name: str = Field("", description="training.base_model of the model they hold ('' when not known)")
    files: list[GGUFFile] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict, description="quantization → why it was not produced")

    def file(self, quantization: str) -> GGUFFile:
        for f in self.files:
            if f.quantization == quantization:
                return f
        raise KeyError(f"No {quantization} GGUF in this export (have: {[f.quantization for f in self.files]}).")


def _likely_cause(stderr: str) -> str:
    for needle, cause in _LIKELY_CAUSES:
        if needle in stderr:
            return cause
    return "see the converter output above."


def _run_converter(script: Path, args: list[str], what: str) -> None:
    # The converter must use its own release's gguf-py, not the `gguf` package installed in the venv.
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    env["PYTHONPATH"] = str(llama_cpp_dir() / "gguf-py")
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
        raise GGUFExportError(
            f"llama.cpp's {script.name} failed on {what} (exit {proc.returncode}):\n{tail}\n"
            f"Likely cause: {_likely_cause(proc.stderr + proc.stdout)}"
        )


@contextlib.contextmanager
def _atomic_file(dest: Path):
    """Yield a temporary sibling path; renamed to ``dest`` when the block succeeds."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp.gguf")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _check_model_dir(model_dir: Path) -> None:
    if (model_dir / "adapter_config.json").is_file():
        raise GGUFExportError(
            f"{model_dir} is a PEFT adapter, not a full model. Export the merged model (`merged_model` asset), "
            "or convert the adapter with convert_lora_to_gguf."
        )
    if not (model_dir / "config.json").is_file():
        raise GGUFExportError(f"{model_dir} is not a Hugging Face model directory (no config.json).")


def _gguf_name(model_dir: Path, model_name: str | None) -> str | None:
    """The ``general.name`` to write. llama.cpp keys one tokenizer rule on it: Phi-3's chat tokens swallow the
    whitespace after them (as Phi-3's tokenizer.json says, and training saw) only when the name contains
    "phi3" or "phi-3" (llama-vocab.cpp), so a Phi-3 export keeps that in its name."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    sentencepiece_phi3 = "Phi3ForCausalLM" in (config.get("architectures") or []) and (
        model_dir / "tokenizer.model").is_file()  # Phi-4-mini shares the class with a GPT-2 vocabulary
    if sentencepiece_phi3 and not any(key in (model_name or "").lower() for key in ("phi3", "phi-3")):
        return f"{model_name}-phi3" if model_name else "phi3"
    return model_name


def convert_hf_to_gguf(model_dir: Path, dest: Path, outtype: str, model_name: str | None = None) -> Path:
    """Run ``convert_hf_to_gguf.py --outtype outtype`` on ``model_dir``; write ``dest`` atomically."""
    if outtype not in CONVERTER_TYPES:
        raise GGUFExportError(f"The converter makes {CONVERTER_TYPES}, not {outtype!r}.")
    model_dir = Path(model_dir)
    _check_model_dir(model_dir)
    model_name = _gguf_name(model_dir, model_name)
    with _atomic_file(Path(dest)) as tmp:
        args = [str(model_dir), "--outtype", outtype, "--outfile", str(tmp)]
        if model_name:
            args += ["--model-name", model_name]
        _run_converter(converter_script(), args, f"{model_dir} ({outtype})")
    return Path(dest)


def k_quant_skip_reason(model_dir: Path) -> str | None:
    """Why k-quants (q4_k_m) do not fit this architecture, or None when every weight row is a multiple of 256."""
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    dims = {k: config.get(k) for k in ("hidden_size", "intermediate_size") if isinstance(config.get(k), int)}
    bad = {k: v for k, v in dims.items() if v % K_QUANT_BLOCK}
    if bad:
        shown = ", ".join(f"{k}={v}" for k, v in bad.items())
        return f"k-quants need weight rows divisible by {K_QUANT_BLOCK}; this model has {shown}."
    return None


def quantize_gguf(source: Path, dest: Path, quantization: str, threads: int = 0) -> Path:
    """Quantize a float GGUF with the installed llama.cpp runtime (``llama_model_quantize``)."""
    import llama_cpp

    if quantization not in RUNTIME_TYPES:
        raise GGUFExportError(f"Runtime quantization supports {tuple(RUNTIME_TYPES)}, not {quantization!r}.")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = RUNTIME_TYPES[quantization]
    params.nthread = threads
    with _atomic_file(Path(dest)) as tmp:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), llama_cpp.byref(params))
        if rc != 0:
            raise GGUFExportError(f"llama_model_quantize({source.name} → {quantization}) failed with code {rc}.")
    return Path(dest)


def export_gguf(
    model_dir: Path,
    out_dir: Path,
    quantizations: list[str],
    name: str = "model",
    log: Callable[[object], None] = lambda _msg: None,
) -> GGUFExport:
    """Write ``<out_dir>/<name>-<quant>.gguf`` for each requested quantization (unknown types are errors)."""
    unknown = sorted(set(quantizations) - set(SUPPORTED_TYPES))
    if unknown:
        raise GGUFExportError(f"Unknown GGUF quantization(s) {unknown}; choose from {SUPPORTED_TYPES}.")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    _check_model_dir(model_dir)
    skipped: dict[str, str] = {}
    made: dict[str, Path] = {}
    wanted = len(set(quantizations))

    def done() -> None:
        log(Progress("GGUF export", len(made) + len(skipped), wanted, unit="file"))

    for q in [q for q in quantizations if q in CONVERTER_TYPES]:
        log(f"Converting {model_dir} to GGUF {q}")
        made[q] = convert_hf_to_gguf(model_dir, out_dir / f"{name}-{q}.gguf", q, model_name=name)
        done()
    for q in [q for q in quantizations if q in RUNTIME_TYPES]:
        reason = k_quant_skip_reason(model_dir)
        if reason:
            log(Notice(f"GGUF {q} skipped: {reason}"))
            skipped[q] = reason
            done()
            continue
        source = made.get("f32") or made.get("f16") or made.get("bf16")
        temp_source = None
        if source is None:  # k-quants need a float input; make one and drop it afterwards
            temp_source = convert_hf_to_gguf(model_dir, out_dir / f".{name}-f16-for-{q}.gguf", "f16")
            source = temp_source
        try:
            log(f"Quantizing {source.name} to {q}")
            made[q] = quantize_gguf(source, out_dir / f"{name}-{q}.gguf", q)
            done()
        finally:
            if temp_source is not None:
                temp_source.unlink(missing_ok=True)
    files = [GGUFFile(quantization=q, path=str(made[q].resolve()), size_bytes=made[q].stat().st_size)
             for q in quantizations if q in made]
    return GGUFExport(directory=str(out_dir.resolve()), source_model=str(model_dir.resolve()), files=files,
                      skipped=skipped)


def convert_lora_to_gguf(adapter_dir: Path, base_model_dir: Path, dest: Path, outtype: str = "f16") -> Path:
    """Run ``convert_lora_to_gguf.py`` on a PEFT adapter dir (``--base`` = the HF base model dir)."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise GGUFExportError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json).")
    if not (Path(base_model_dir) / "config.json").is_file():
        raise GGUFExportError(f"Base model {base_model_dir} has no config.json; the LoRA converter needs it.")
    if outtype not in ("f32", "f16", "bf16", "q8_0"):
        raise GGUFExportError(f"LoRA GGUF type must be f32, f16, bf16 or q8_0, not {outtype!r}.")
    with _atomic_file(Path(dest)) as tmp:
        args = [str(adapter_dir), "--base", str(base_model_dir), "--outtype", outtype, "--outfile", str(tmp)]
        _run_converter(lora_converter_script(), args, f"adapter {adapter_dir}")
    return Path(dest)


class GGUFLoraAdapter(Record):
    path: str = Field("", description="The LoRA adapter as GGUF (llama.cpp `--lora`, llama-cpp-python `lora_path=`)")
    base_gguf_path: str = Field("", description="The base model as GGUF, which the adapter applies to")
    outtype: str = ""
    size_bytes: int = 0
    base_size_bytes: int = 0
    source_adapter: str = Field("", description="The PEFT adapter directory it was converted from")
    skipped: str = Field("", description="Why nothing was exported (full fine-tuning has no adapter); '' = exported")


def export_lora(adapter_dir: Path, base_model_dir: Path, out_dir: Path, name: str = "model", outtype: str = "f16",
                log: Callable[[str], None] = lambda _msg: None) -> GGUFLoraAdapter:
    """Write ``<name>-lora-<type>.gguf`` and the base it applies to, ``<name>-base-<type>.gguf``."""
    out_dir = Path(out_dir)
    log(f"Converting the base model {base_model_dir} to GGUF {outtype}")
    base = convert_hf_to_gguf(Path(base_model_dir), out_dir / f"{name}-base-{outtype}.gguf", outtype)
    log(f"Converting the adapter {adapter_dir} to GGUF {outtype}")
    lora_dest = out_dir / f"{name}-lora-{outtype}.gguf"
    lora = convert_lora_to_gguf(Path(adapter_dir), Path(base_model_dir), lora_dest, outtype)
    return GGUFLoraAdapter(path=str(lora.resolve()), base_gguf_path=str(base.resolve()), outtype=outtype,
                           size_bytes=lora.stat().st_size, base_size_bytes=base.stat().st_size,
                           source_adapter=str(Path(adapter_dir).resolve()))
