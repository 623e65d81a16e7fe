"""completion_evaluation's measure: next-line and FIM exact match of a real GGUF model in llama.cpp, against the
model's own greedy answers (so the right figure is known) and against a base."""

from __future__ import annotations

import pytest

from mochi_pipeline.deployment.completion_eval import completion_cases, edit_similarity, evaluate_completion
from mochi_pipeline.deployment.server import ModelServer

slow = pytest.mark.slow  # a real GGUF model in llama.cpp

CONTEXTS = ["def add(a, b):\n", "import os\nimport sys\n", "class Stack:\n    def __init__(self):\n",
            "for i in range(10):\n", "# parse the arguments\n", "with open(path) as f:\n"]


def _rows(server: ModelServer, own: list[bool]) -> tuple[list[dict], int]:
    """Held-out rows whose expected next line is the model's own greedy answer where ``own`` says so (and the answer
    is not blank), else one it does not write, and how many are its own; FIM rows whose middle it does not write
    (the 20-step tiny base never ends a middle, so no budget lets it write a real one exactly)."""
    rows, lines = [], 0
    for i, (context, mine) in enumerate(zip(CONTEXTS, own, strict=True)):
        line = server.complete(context, max_tokens=48, stop=["\n"]).rstrip()
        lines += (is_own := mine and bool(line.strip()))
        rows.append({"id": f"n{i}", "task": "next_line", "path": f"pkg/m{i}.py", "context": context,
                     "response": (line if is_own else "    raise NotImplementedError('mochi')") + "\nrest\n"})
        rows.append({"id": f"f{i}", "task": "fim_psm", "path": f"pkg/m{i}.py", "prefix": context,
                     "suffix": "\nreturn None\n", "response": "x = 'mochi'\n"})
    return rows, lines


@slow
def test_exact_match_counts_the_answers_that_are_the_real_ones(model):
    rows, lines = _rows(model, [True, True, False, True, False, False])
    assert lines >= 2  # the tiny base writes something after most of these
    report = evaluate_completion(model, rows, base=model, max_cases=50, log=lambda _: None)
    line = report.score("next_line")
    assert line.n == len(CONTEXTS) and line.exact_match == pytest.approx(lines / len(CONTEXTS), abs=1e-4)
    assert line.base_exact_match == line.exact_match and line.p_value_vs_base == 1.0  # the same model: no gain
    assert 0 < line.edit_similarity < 1
    fim = report.score("fim")  # through /infill's prompt, with the model's FIM tokens
    assert fim.n == len(CONTEXTS) and fim.exact_match == 0.0 and fim.edit_similarity < 1
    assert report.samples and {s["task"] for s in report.samples} == {"next_line", "fim"}
    assert "| next_line | 6 |" in report.markdown()


@slow
def test_a_better_model_wins_the_sign_test(model, exported):
    """The answers are the tiny base's own: it beats a random model on them, and the test says so."""
    contexts = [*CONTEXTS, *(f"# again\n{c}" for c in CONTEXTS)]
    rows = [{"id": str(i), "task": "next_line", "path": "a.py", "context": c,
             "response": model.complete(c, max_tokens=48, stop=["\n"]).rstrip() + "\n"}
            for i, c in enumerate(contexts)]
    rows = [r for r in rows if r["response"].strip()]
    assert len(rows) >= 8
    random_model = ModelServer(exported[1]["gguf_model"].file("f32").path, n_ctx=256)
    try:
        report = evaluate_completion(model, rows, base=random_model, max_cases=50, log=lambda _: None)
    finally:
        random_model.close()
    line = report.score("next_line")
    assert line.exact_match == 1.0 and line.base_exact_match < 0.5
    assert line.p_value_vs_base < 0.05
    assert report.skipped == {"fim": "no held-out fim examples (raise generation.eval_time_share or add history)"}


@slow
def test_cases_are_a_seeded_sample_and_a_long_context_keeps_its_end(model):
    rows = [{"id": str(i), "task": "next_line", "path": "a.py", "context": f"x = {i}\n", "response": "y\n"}
            for i in range(30)]
    a, b = completion_cases(rows, 10, seed=1)["next_line"], completion_cases(rows, 10, seed=1)["next_line"]
    assert a == b and len(a) == 10 and a != completion_cases(rows, 10, seed=2)["next_line"]
    tail = "def add(a, b):\n"
    expected = model.complete(tail, max_tokens=48, stop=["\n"]).rstrip()
    assert expected.strip()
    short = ModelServer(model.model_path, n_ctx=128)  # 2,000 lines of code before do not fit: their end is kept
    try:
        long_row = {"id": "long", "task": "next_line", "path": "a.py", "context": "x = 1\n" * 2000 + tail,
                    "response": f"{expected}\n"}
        report = evaluate_completion(short, [*rows[:3], long_row], max_cases=10, log=lambda _: None)
    finally:
        short.close()
    assert report.score("next_line").n == 4
    assert report.base_skipped == "no base GGUF" and report.score("next_line").base_exact_match is None


@pytest.mark.parametrize(("a", "b", "want"), [("", "", 1.0), ("abc", "abc", 1.0), ("abc", "abd", 2 / 3),
                                              ("abc", "", 0.0), ("kitten", "sitting", 1 - 3 / 7)])
def test_edit_similarity(a, b, want):
    assert edit_similarity(a, b) == pytest.approx(want)
