"""The real pretrained base end to end, as a user runs it: `mochi run` with `gemma3-270m` on a small repository,
then the model it made behind `mochi serve` (chat with Gemma's turns, completions, /infill with the FIM tokens
the conversion put into Gemma's reserved slots).

A few training steps; everything else is the real pipeline: LoRA on the converted Gemma 3 270M → evaluation
and quality gate → merge → GGUF (f16, q8_0) verified against transformers → Modelfile → rerank.
"""

from __future__ import annotations

import shutil

import httpx
import pytest
import yaml

from mochi_pipeline.deployment.server import ModelServer, create_app
from mochi_pipeline.io_manager import read_asset_file
from mochi_pipeline_tests.cli_runner import check_results, mochi
from mochi_pipeline_tests.deployment.served_app import Running
from mochi_pipeline_tests.repo_factory import LATER_COMMITS, commit

pytestmark = pytest.mark.slow

# The preset's LoRA (every projection, r16, lr 3e-4) cut to a few short steps.
GEMMA_TRAINING = {"base_model": "gemma3-270m", "max_steps": 12, "max_seq_length": 128, "logging_steps": 1,
                  "eval_steps": 6, "save_steps": 6, "eval_during_training": 4, "eval_max_examples": 16}


@pytest.fixture(scope="module")
def gemma_project(sample_repo, tmp_path_factory):
    repo = tmp_path_factory.mktemp("gemma") / "repo"
    shutil.copytree(sample_repo, repo)
    for message, date, files in LATER_COMMITS:
        commit(repo, message, date, files)
    (repo / ".gitignore").write_text(".mochi/\n")
    (repo / "mochi.yaml").write_text(yaml.safe_dump({
        "generation": {"eval_time_share": 0.3}, "training": GEMMA_TRAINING,
        "export": {"quantizations": ["f16", "q8_0"], "assist_max_cases": 16, "completion_max_cases": 12},
    }))
    commit(repo, "Add the mochi config", "2024-06-06T10:00:00+00:00", {})
    run = mochi(repo, "run", check=False, timeout=1800)
    return repo, run


def test_the_real_base_fine_tunes_below_its_base_and_reranks_above_chance(gemma_project):
    repo, run = gemma_project
    art = repo / ".mochi" / "assets"
    report = read_asset_file(art / "evaluation_report.json")
    base, tuned = (report.metrics[m]["overall"] for m in ("base", "fine_tuned"))
    assert report.accepted and tuned["perplexity"] < base["perplexity"], report.markdown
    assert tuned["bits_per_byte"] < base["bits_per_byte"]
    rerank = read_asset_file(art / "assist_evaluation.json")
    assert rerank.n_cases >= 8 and rerank.accuracy > rerank.chance, rerank.markdown()
    completion = read_asset_file(art / "completion_evaluation.json")
    for task in ("next_line", "fim"):  # both measured on the exported model and its base, FIM through /infill
        score = completion.score(task)
        assert score is not None and score.n >= 3 and score.base_exact_match is not None, completion.markdown()
    checks = check_results(repo)
    assert checks["gguf_model:gguf_matches_transformers"]  # llama.cpp runs the Gemma GGUFs like transformers
    assert checks["evaluation_report:quality_gate"]
    # The run's exit status tells the rerank check's verdict (an ERROR on a real base).
    assert (run.returncode == 0) == checks["assist_evaluation:rerank_beats_chance"], run.stdout + run.stderr


def test_the_modelfile_and_the_server_speak_gemma(gemma_project):
    repo, _ = gemma_project
    modelfile = (repo / ".mochi" / "gguf" / "model" / "Modelfile").read_text()
    assert "<start_of_turn>model" in modelfile and 'PARAMETER stop "<end_of_turn>"' in modelfile
    gguf = read_asset_file(repo / ".mochi" / "assets" / "gguf_model.json").file("q8_0").path
    server = ModelServer(gguf, model_id="gemma", n_ctx=512, parallel=2)
    try:
        assert server.chat_stops == ["<end_of_turn>"]
        assert server.llm.metadata.get("gemma3.context_length") == "32768"  # llama.cpp knows the training context
        assert server.fim_template() is not None  # llama.cpp found the FIM tokens in the GGUF
        with Running(create_app(server)) as url, httpx.Client(base_url=url, timeout=300) as client:
            chat = client.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "What does restock do?"}], "max_tokens": 8,
                "temperature": 0})
            assert chat.status_code == 200, chat.text
            assert chat.json()["usage"]["completion_tokens"] >= 1
            done = client.post("/v1/completions", json={"prompt": "def out_of_stock(levels", "max_tokens": 8,
                                                        "temperature": 0})
            assert done.status_code == 200 and done.json()["choices"][0]["text"], done.text
            infill = client.post("/infill", json={"input_prefix": "def celsius_to_fahrenheit(celsius):\n    ",
                                                  "input_suffix": "\n", "n_predict": 12})
            assert infill.status_code == 200, infill.text
            prompt_tokens = server.infill_tokens(_infill_request())
            assert [t for t in prompt_tokens if t in (6, 7, 8)] == [6, 7, 8]  # Gemma's reserved slots as FIM
    finally:
        server.close()


def _infill_request():
    from mochi_pipeline.deployment.server import InfillRequest

    return InfillRequest(input_prefix="def celsius_to_fahrenheit(celsius):\n    ", input_suffix="\n", n_predict=12)
