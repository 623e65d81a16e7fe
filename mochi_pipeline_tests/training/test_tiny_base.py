"""The offline tiny base: built once, a real tokenizer, and pre-training that left random init behind."""

from __future__ import annotations

import os
import random
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from mochi_pipeline.training.tiny_base import fim_document, pretrain_report, tiny_base_dir, tiny_base_key
from mochi_pipeline_tests.training.store_project import TEST_TINY_STEPS


def test_tiny_base_learned_code_in_pretraining(tiny_base):
    report = pretrain_report(tiny_base.path)
    assert report["steps"] == TEST_TINY_STEPS
    assert report["held_out_loss_before"] > report["random_loss"] - 0.5  # starts near a uniform guess
    assert report["held_out_loss_after"] < report["held_out_loss_before"] - 1.5  # and learned from the corpus
    assert Path(tiny_base.path) == tiny_base_dir(TEST_TINY_STEPS)
    assert report["key"] == tiny_base_key(TEST_TINY_STEPS)  # written by the code under test, not an older one


def test_the_session_builds_in_its_own_cache_never_the_users(tiny_base):
    root = Path(os.environ["MOCHI_CACHE"])
    assert Path(tiny_base.path).is_relative_to(root)
    assert not root.is_relative_to(Path.home() / ".cache" / "mochi")


def test_tiny_base_is_a_standard_checkpoint(tiny_base):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base.path)
    model = AutoModelForCausalLM.from_pretrained(tiny_base.path)
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.tie_word_embeddings
    assert tokenizer.is_fast and len(tokenizer) == 49152
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    ids = tokenizer("<fim_prefix>def f():<fim_suffix>\n<fim_middle>")["input_ids"]
    assert [tokenizer.convert_ids_to_tokens(i) for i in ids if i < 5] == ["<fim_prefix>", "<fim_suffix>",
                                                                           "<fim_middle>"]
    assert "### Response" in tokenizer.chat_template


def test_fim_document_keeps_every_character():
    text = "def area(r):\n    return 3.14 * r * r\n"
    doc = fim_document(text, random.Random(3))
    prefix, rest = doc.removeprefix("<fim_prefix>").split("<fim_suffix>")
    suffix, middle = rest.split("<fim_middle>")
    assert prefix + middle + suffix == text
