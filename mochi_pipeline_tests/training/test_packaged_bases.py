"""Real pretrained bases from the package registry (packaged_bases.py): converted once, offline, into a
training folder whose weights are the GGUF's, with the family's turns, stop token and FIM tokens."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from llama_cpp import Llama
from transformers import AutoModelForCausalLM

from mochi_pipeline.training import packaged_bases
from mochi_pipeline.training.base_models import end_of_turn, load_tokenizer, resolve_base
from mochi_pipeline.training.fim import fim_tokens

pytestmark = pytest.mark.slow

CODE = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fib"


def test_gemma_is_the_packaged_gguf_with_gemma_turns_and_fim_tokens_in_reserved_slots(gemma_base):
    source = json.loads((Path(gemma_base.path) / packaged_bases.SOURCE_FILE).read_text())
    assert source["gguf_sha256"] == packaged_bases.PACKAGED["gemma3-270m"].sha256
    assert (Path(gemma_base.path) / "GEMMA_TERMS.html").is_file()  # the licence travels with the weights
    config = json.loads((Path(gemma_base.path) / "config.json").read_text())
    assert config["architectures"] == ["Gemma3ForCausalLM"] and config["vocab_size"] == 262144

    tokenizer = load_tokenizer(gemma_base)
    assert len(tokenizer) == 262144  # FIM took reserved slots: the vocabulary did not grow
    fim = fim_tokens(tokenizer)
    assert fim is not None and fim.prefix == "<|fim_prefix|>"
    ids = tokenizer(fim.prompt("def f(x):\n    ", "\n    return y\n"), add_special_tokens=False)["input_ids"]
    assert [i for i in ids if i in (6, 7, 8)] == [6, 7, 8]  # each marker is one token, the renamed <unusedN>
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           tokenize=False)
    assert prompt == "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n"
    assert end_of_turn(gemma_base, tokenizer) == "<end_of_turn>"


def _llama_cpp_logits(gguf: Path, ids: list[int]) -> np.ndarray:
    llm = Llama(str(gguf), n_ctx=256, logits_all=True, verbose=False, n_threads=2)
    try:
        assert llm.tokenize(CODE.encode(), add_bos=True, special=True) == ids  # the same tokenizer
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


@pytest.mark.parametrize("preset", ["gemma3-270m", "smollm2-135m-instruct"])
def test_the_converted_weights_are_the_ggufs(preset, tmp_path):
    """transformers on the converted folder predicts what llama.cpp predicts from the package's own GGUF (llama.cpp
    multiplies with 8-bit activations, hence a tolerance); the three FIM rows are new and left out."""
    base = resolve_base(preset, 0)
    tokenizer = load_tokenizer(base)
    ids = tokenizer(CODE)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    theirs = _llama_cpp_logits(packaged_bases.PACKAGED[preset].gguf(tmp_path), ids)
    keep = np.ones(ours.shape[1], bool)
    keep[[6, 7, 8] if preset == "gemma3-270m" else []] = False
    ours, theirs = ours[:, keep], theirs[:, keep]
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.9
    assert np.abs(ours - theirs).mean() < 0.05 * np.abs(theirs).max()  # measured: 0.33 and 0.21 of 35 and 44


def test_smollm2_keeps_its_own_chat_template_and_has_no_fim(tmp_path):
    base = resolve_base("smollm2-135m-instruct", 0)
    tokenizer = load_tokenizer(base)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                           tokenize=False)
    assert prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert end_of_turn(base, tokenizer) == "<|im_end|>"
    assert fim_tokens(tokenizer) is None  # its vocabulary has none and no reserved slots: FIM rows are left out


def test_two_commands_wanting_one_base_convert_it_once(tmp_path):
    """Two `mochi` processes that need the same packaged base at once: one converts, the other waits and reuses
    the folder (a second conversion would replace the folder under the first one's reader)."""
    env = {**os.environ, "MOCHI_CACHE": str(tmp_path / "cache")}
    code = ("from mochi_pipeline.training.base_models import resolve_base; "
            "print('PATH', resolve_base('smollm2-135m-instruct', 0).path)")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    paths = {line.split(" ", 1)[1] for out in outputs for line in out.splitlines() if line.startswith("PATH ")}
    assert len(paths) == 1
    assert sum(out.count("Converting the smollm2-135m-instruct base") for out in outputs) == 1
    assert sorted(p.name for p in Path(next(iter(paths))).parent.iterdir() if not p.name.endswith(".lock")) == [
        Path(next(iter(paths))).name]  # no second, temporary or old folder

