"""The offline ``tiny`` base model: a small Llama that already knows generic code.

Built once per pre-training budget and cached under ``cache_root()/tiny-base-s<steps>-<key>``, the key a
hash of this module's code, the tokenizer's release and template, the corpus and the library versions:
the StarCoder tokenizer (from llama.cpp's vocabulary GGUF, so llama.cpp converts the result), a
~7M-parameter ``LlamaForCausalLM``, pre-trained (seeded) on Python's own standard library so that
fine-tuning gains measured later are gains over a model that can already read code. Like
StarCoder, half of the files are seen in fill-in-the-middle order, so the FIM sentinel tokens the
training data uses are known tokens, not untrained embeddings.
"""

from __future__ import annotations

import json
import math
import random
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from mochi_pipeline.llama_cpp_vendor import LLAMA_CPP_PYTHON_VERSION, cache_root, vocab_gguf
from mochi_pipeline.progress import Progress
from mochi_pipeline.storage import atomic_write_text, build_key, build_once
from mochi_pipeline.training import fim
from mochi_pipeline.training.fim import STARCODER_FIM

SEQ_LEN = 256
BATCH = 8
EVAL_BLOCKS = 16
PRETRAIN_FILE = "pretrain.json"
EOS = "<|endoftext|>"
FIM_RATE = 0.5


def tiny_base_key(steps: int, seed: int = 0) -> str:
    """What makes the tiny base: the code here and in ``fim``, the chat template, the vocabulary's release, the
    corpus (this interpreter's standard library), torch and transformers, the budget and the seed."""
    from mochi_pipeline.training.base_models import PLAIN_TEMPLATE

    return build_key([__file__, fim.__file__], PLAIN_TEMPLATE, LLAMA_CPP_PYTHON_VERSION, sys.version,
                     sysconfig.get_paths()["stdlib"], torch.__version__, transformers.__version__, steps, seed)


def tiny_base_dir(steps: int, seed: int = 0) -> Path:
    return cache_root() / f"tiny-base-s{steps}-{tiny_base_key(steps, seed)}"


def build_tiny_base(steps: int, seed: int = 0, log: Callable[[object], None] = print) -> Path:
    """Directory of the pre-trained tiny base (built on first use; later calls return at once)."""
    dest = tiny_base_dir(steps, seed)

    def build(tmp: Path) -> None:
        log(f"Building the tiny base model ({steps} pre-training steps) in {dest}")
        _build(tmp, steps, seed, log)

    return build_once(dest, lambda d: (d / PRETRAIN_FILE).is_file(), build)


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    gguf = vocab_gguf("starcoder")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.eos_token = tokenizer.bos_token = tokenizer.pad_token = tokenizer.unk_token = EOS
    tokenizer.model_max_length = 1024
    from mochi_pipeline.training.base_models import PLAIN_TEMPLATE

    tokenizer.chat_template = PLAIN_TEMPLATE
    return tokenizer


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    eos = tokenizer.convert_tokens_to_ids(EOS)
    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=384, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, rms_norm_eps=1e-5,
    )


def stdlib_sources(seed: int) -> list[Path]:
    """Python files of the running interpreter's standard library (tests and vendored packages left out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idle_test", "__pycache__", "lib2to3"}
    files = sorted(p for p in root.rglob("*.py") if not skip.intersection(p.relative_to(root).parts))
    random.Random(seed).shuffle(files)
    return files


def fim_document(text: str, rng: random.Random) -> str:
    """The file in prefix-suffix-middle order with StarCoder's sentinels (cut at two random characters)."""
    a, b = sorted(rng.randrange(len(text) + 1) for _ in range(2))
    return STARCODER_FIM.prompt(text[:a], text[b:]) + text[a:b]


def _token_blocks(tokenizer: PreTrainedTokenizerBase, files: list[Path], n_blocks: int, seed: int) -> torch.Tensor:
    """``n_blocks`` rows of SEQ_LEN tokens from consecutive files, separated by the eos token."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    need = n_blocks * SEQ_LEN
    rng = random.Random(seed)
    ids: list[int] = []
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        if text and rng.random() < FIM_RATE:
            text = fim_document(text, rng)
        # Whole files, longer than the model reads at once: cut into blocks below (no length warning).
        ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] + [eos])
        if len(ids) >= need:
            break
    if len(ids) < need:
        raise RuntimeError(f"The standard library under {files[0].parent} gave {len(ids)} tokens; {need} needed.")
    return torch.tensor(ids[:need]).view(n_blocks, SEQ_LEN)


@torch.no_grad()
def _mean_loss(model: LlamaForCausalLM, blocks: torch.Tensor) -> float:
    model.eval()
    losses = [model(input_ids=b, labels=b).loss.item() for b in blocks.split(BATCH)]
    model.train()
    return sum(losses) / len(losses)


def _build(out: Path, steps: int, seed: int, log: Callable[[object], None]) -> None:
    started = time.monotonic()
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer()
    model = LlamaForCausalLM(tiny_config(tokenizer))
    files = stdlib_sources(seed)
    # Held-out files come first in the shuffled order, training files after them: no overlap.
    held_out = _token_blocks(tokenizer, files[:40], EVAL_BLOCKS, seed)
    train = _token_blocks(tokenizer, files[40:], steps * BATCH, seed + 1)
    loss_before = _mean_loss(model, held_out)

    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.01)
    warmup = max(1, steps // 10)

    def lr_factor(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    history: list[dict[str, float]] = []
    for step, batch in enumerate(train.split(BATCH)):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        history.append({"step": step + 1, "loss": round(loss.item(), 4)})
        if (step + 1) % 10 == 0 or step + 1 == steps:
            log(Progress("pre-training the tiny base", step + 1, steps, {"loss": round(loss.item(), 3)}))
    loss_after = _mean_loss(model, held_out)

    model.generation_config.eos_token_id = model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {
        "key": tiny_base_key(steps, seed),
        "steps": steps,
        "tokens": steps * BATCH * SEQ_LEN,
        "seconds": round(time.monotonic() - started, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
        "random_loss": round(math.log(len(tokenizer)), 3),
        "held_out_loss_before": round(loss_before, 4),
        "held_out_loss_after": round(loss_after, 4),
        "corpus": f"Python {sysconfig.get_python_version()} standard library, {FIM_RATE:.0%} of files in FIM order",
        "history": history,
    }
    atomic_write_text(out / PRETRAIN_FILE, json.dumps(report, indent=1))
    log(
        f"tiny base ready: held-out loss {loss_before:.2f} -> {loss_after:.2f} "
        f"(uniform guess {report['random_loss']}) in {report['seconds']} s"
    )


def pretrain_report(path: str | Path) -> dict:
    return json.loads((Path(path) / PRETRAIN_FILE).read_text(encoding="utf-8"))
