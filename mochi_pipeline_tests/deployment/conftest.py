"""Deployment fixtures: the tiny Llama + LoRA (cached), the deployment assets materialized once, and the tiny
base in llama.cpp beside the sample project's chunks and conventions (assist, MCP)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mochi_pipeline.deployment.gguf_export import convert_hf_to_gguf
from mochi_pipeline.deployment.server import ModelServer
from mochi_pipeline.training.base_models import resolve_base
from mochi_pipeline_tests.cli_runner import mochi
from mochi_pipeline_tests.deployment.deploy_materialize import materialize_deployment
from mochi_pipeline_tests.deployment.deploy_tiny_llama import cached_tiny_llama_and_adapter
from mochi_pipeline_tests.training.store_project import TEST_TINY_STEPS


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


@pytest.fixture(scope="session")
def lora_exported(tiny_model, tmp_path_factory):
    """gguf_lora_adapter (f32) + its check, materialized once for the tests that read it."""
    model_dir, adapter_dir = tiny_model
    return materialize_deployment(tmp_path_factory.mktemp("lora"), model_dir, adapter_dir, {"lora_outtype": "f32"},
                                  ["gguf_lora_adapter"])


@pytest.fixture(scope="session")
def base_dir() -> Path:
    """The tiny base (pre-trained on Python's standard library: it knows generic code)."""
    return Path(resolve_base("tiny", TEST_TINY_STEPS).path)


@pytest.fixture(scope="session")
def model(base_dir, tmp_path_factory):
    gguf = convert_hf_to_gguf(base_dir, tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", "f32")
    server = ModelServer(gguf, model_id="tiny", n_ctx=1024)
    yield server
    server.close()


@pytest.fixture(scope="session")
def project(sample_repo, tmp_path_factory) -> Path:
    """The sample repository with its chunks and conventions made by the real pipeline (`mochi run --select`)."""
    repo = tmp_path_factory.mktemp("assist") / "repo"
    shutil.copytree(sample_repo, repo)
    (repo / ".gitignore").write_text(".mochi/\n")
    mochi(repo, "run", "--select", "+deduplicated_chunks", "+project_conventions")
    return repo
