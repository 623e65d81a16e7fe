"""Deployment fixtures: the tiny Llama + LoRA (cached), and the deployment assets materialized once."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_materialize import materialize_deployment
from deploy_tiny_llama import cached_tiny_llama_and_adapter


@pytest.fixture(scope="session")
def tiny_model() -> tuple[Path, Path]:
    """(model dir, LoRA adapter dir) of the random tiny Llama with the StarCoder tokenizer."""
    return cached_tiny_llama_and_adapter()


@pytest.fixture(scope="session")
def exported(tiny_model, tmp_path_factory):
    """gguf_model (f32, f16, q8_0, q4_k_m) + its check + ollama_modelfile, materialized once."""
    model_dir, adapter_dir = tiny_model
    return materialize_deployment(
        tmp_path_factory.mktemp("deploy"), model_dir, adapter_dir,
        {"quantizations": ["f32", "f16", "q8_0", "q4_k_m"], "model_name": "tiny", "system_prompt": "You are terse."},
        ["gguf_model", "ollama_modelfile"],
    )
