"""enhance / rerank / verify on the sample repository's real chunks and conventions, with the tiny base in llama.cpp."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from transformers import AutoModelForCausalLM, AutoTokenizer

from mochi_pipeline.deployment.assist import Assistant, AssistError, line_surprise
from mochi_pipeline.deployment.assist_api import assist_router
from mochi_pipeline.deployment.assist_eval import evaluate_rerank
from mochi_pipeline.deployment.server import create_app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def assistant(project, model) -> Assistant:
    return Assistant.from_artifacts(project / ".mochi", model)


def test_missing_artifacts_say_what_to_run(tmp_path, model):
    with pytest.raises(AssistError, match="No deduplicated_chunks under .*mochi run"):
        Assistant.from_artifacts(tmp_path, model)


def test_enhance_retrieves_the_code_signatures_and_conventions(assistant):
    block = assistant.enhance("Compute the centroid of a list of points", k=3)
    assert block.chunks[0].path == "pkg/core.py" and "def centroid" in block.chunks[0].text
    assert "def centroid(points: list[Point]) -> Point" in block.signatures
    assert "function names: snake_case" in block.conventions
    assert block.note.strip()  # written by the model, ended at its turn's stop string
    text = block.markdown()
    assert text.index("## Signatures involved") < text.index("## pkg/core.py:")
    widened = assistant.enhance("centroid", k=3, rewrite=True, note=False)
    assert widened.search_query.startswith("centroid\n") and len(widened.search_query) > len("centroid\n")
    assert widened.note == ""


def _reference_mean_logprob(base_dir: Path, prompt: str, candidate: str) -> float:
    """Mean log-probability of ``candidate`` after ``prompt``, computed by transformers (independent of llama.cpp)."""
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    hf = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tail = tokenizer(candidate, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([[tokenizer.bos_token_id, *head, *tail]])
    with torch.no_grad():
        logprobs = torch.log_softmax(hf(ids).logits[0].float(), dim=-1)
    start = 1 + len(head)
    return sum(logprobs[i - 1, ids[0, i]].item() for i in range(start, ids.shape[1])) / len(tail)


def test_rerank_orders_by_the_models_likelihood(assistant, base_dir):
    prompt = "def add(a, b):\n"
    candidates = ["    ) ] zq ~~ ;; 0x0x }{ ??\n", "    return a + b\n", "    return a - b\n"]
    ranked = assistant.rerank(prompt, candidates)
    reference = [_reference_mean_logprob(base_dir, prompt, c) for c in candidates]
    assert [r.index for r in ranked] == sorted(range(3), key=lambda i: -reference[i])
    for r in ranked:
        assert r.candidate == candidates[r.index]
        assert math.isclose(r.score, reference[r.index], abs_tol=2e-3)
    assert ranked[-1].index == 0  # the token salad is least likely code
    with pytest.raises(AssistError, match="empty"):
        assistant.rerank(prompt, ["x", ""])


def test_verify_finds_convention_departures_and_the_surprising_line(assistant, project):
    real = (project / "pkg" / "core.py").read_text()
    lines = real.splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if "n = len(points)" in ln)
    # Runes: byte-level tokens the base never saw in Python's standard library.
    code = "".join(lines[: at + 1]) + "    ᚠᛇᚻᛒᛦᚦꙮᚱᚷ\n" + "".join(lines[at + 1:])
    code += "\n\ndef computeArea(points):\n    return 0.0\n"
    findings = assistant.verify(code, path="pkg/core.py")
    naming = [f for f in findings if f.rule == "function_naming"]
    assert [f.line for f in naming] == [code.splitlines().index("def computeArea(points):") + 1]
    assert naming[0].suggestion == "rename to compute_area"
    surprises = [f for f in findings if f.kind == "surprise"]
    assert surprises and surprises[0].line == at + 2  # the planted line, 1-based
    assert "nats/token" in surprises[0].reason and surprises[0].suggestion


def test_line_surprise_assigns_tokens_to_their_lines():
    scores = [("def", -1.0), (" f", -3.0), ("():\n", -2.0), ("    ", -9.0), ("return", -4.0), ("\n", -1.0),
              ("\nx", -6.0)]
    assert line_surprise("def f():\n    return\n\nx", scores) == [(1, 2.0, 3), (2, 4.0, 1), (4, 6.0, 1)]


def test_http_endpoints(assistant, model):
    with TestClient(create_app(model, routers=[assist_router(assistant)])) as client:
        r = client.post("/assist/context", json={"query": "load settings from a JSON file", "k": 2, "note": False})
        top = r.json()["chunks"][0]
        assert r.status_code == 200 and "def load_settings" in top["text"]  # util.py or its near-copy dup.py
        assert r.json()["rendered"].startswith("# Project context for: load settings")
        r = client.post("/assist/rerank", json={"prompt": "import ", "candidates": ["os\n", "}{ ]] ~~\n"]})
        assert [c["index"] for c in r.json()["ranked"]] == [0, 1]
        r = client.post("/assist/verify", json={"code": "def getX():\n    return 1\n", "path": "a.py"})
        assert any(f["rule"] == "function_naming" for f in r.json()["findings"])
        bad = client.post("/assist/rerank", json={"prompt": "x", "candidates": []})
        assert bad.status_code == 400 and "candidates" in bad.json()["error"]["message"]
        assert client.post("/assist/verify", json={"code": "   "}).json()["error"]["message"] == "No code to verify."


def test_rerank_evaluation_leaves_out_cases_longer_than_the_context(assistant, model):
    """A held-out diff longer than the model's context is counted and left out, not a failed asset."""
    lines = ["    return total\n", "    raise ValueError(name)\n", "    yield from items\n", "    del cache[key]\n",
             "    print(message)\n"]
    rows = [{"task": "next_line", "path": f"pkg/m{i}.py", "language": "python", "id": str(i),
             "context": f"def f{i}(name, total, items, cache, key, message):\n", "response": line}
            for i, line in enumerate(lines)]
    huge = "x = 1\n" * model.n_ctx()  # one token a line at least: no room left
    rows.append({**rows[0], "id": "long", "path": "pkg/long.py", "context": huge})
    report = evaluate_rerank(assistant, rows, k=3, seed=1, log=lambda _m: None)
    assert report.too_long == 1 and report.n_cases == len(lines)
    assert "longer than the context left out" in report.markdown()


def test_rerank_evaluation_scores_the_base_on_the_same_cases(assistant, project, model):
    """The base is measured on the very cases the fine-tuned model was: the same model as both gives the same top-1
    and no case that only one of them got right (sign test p = 1)."""
    rows = [{"task": "next_line", "path": f"pkg/m{i}.py", "language": "python", "id": str(i),
             "context": f"def f{i}(name, total, items, cache, key, message):\n", "response": line}
            for i, line in enumerate(["    return total\n", "    raise ValueError(name)\n", "    yield from items\n",
                                      "    del cache[key]\n", "    print(message)\n"])]
    same = evaluate_rerank(assistant, rows, k=3, seed=1, log=lambda _m: None,
                           baseline=Assistant.from_artifacts(project / ".mochi", model))
    assert same.base_accuracy == same.accuracy and same.base_mrr == same.mrr and same.p_value_vs_base == 1.0
    assert "The base model, on the same cases" in same.markdown()
    alone = evaluate_rerank(assistant, rows, k=3, seed=1, log=lambda _m: None)
    assert alone.base_accuracy is None and alone.accuracy == same.accuracy
