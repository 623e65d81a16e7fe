"""Verify on planted faults: the faults are the realistic ones named, on the line said, and the hit rate counts
the cases whose planted line verify flags (a real model in llama.cpp), next to a random pick's."""

from __future__ import annotations

import random

import pytest

from mochi_pipeline.deployment.assist import Assistant
from mochi_pipeline.deployment.fault_eval import TOP, evaluate_faults, fault_cases, plant_fault
from mochi_pipeline.preprocessing.conventions import ProjectConventions

FUNCTION = '''def restock(levels, item, amount):
    """Add ``amount`` of ``item``."""
    current = levels.get(item, 0)
    if amount < 1:
        raise ValueError(item)
    levels[item] = current + amount
    return levels
'''


def test_each_kind_of_fault_is_planted_where_it_says():
    known = {"restock", "levels", "item", "amount", "current", "get", "ValueError"}
    kinds = {}
    for seed in range(60):
        faulty, fault = plant_fault(FUNCTION, random.Random(seed), known)
        lines, original = faulty.split("\n"), FUNCTION.split("\n")
        changed = [i + 1 for i, (a, b) in enumerate(zip(lines, original, strict=True)) if a != b]
        assert changed == [fault.line] and lines[fault.line - 1] == fault.after  # one line, the one reported
        assert fault.line not in (1, 2)  # never the signature or the docstring
        kinds[fault.kind] = (fault.before, fault.after)
    assert set(kinds) == {"swapped_identifiers", "off_by_one", "unknown_call"}
    before, after = kinds["off_by_one"]
    assert after in (before.replace("0", "1"), before.replace("< 1", "< 0"), before.replace("< 1", "< 2"))
    before, after = kinds["unknown_call"]
    called = after.split("(")[0].split()[-1].split(".")[-1]
    assert called not in known and called not in before
    before, after = kinds["swapped_identifiers"]
    assert sorted(before) == sorted(after) and before != after  # the same names, two of them traded
    assert plant_fault(FUNCTION, random.Random(7), known) == plant_fault(FUNCTION, random.Random(7), known)


def _rows(n: int) -> list[dict]:
    return [{"id": str(i), "task": "implement", "path": "README.md",
             "context": f"# File: store/stock_{i}.py\nimport os\n",
             "response": FUNCTION.replace("restock", f"restock_{i}")} for i in range(n)]


def test_cases_are_seeded_and_skip_short_functions():
    rows = [*_rows(10), {"id": "short", "task": "implement", "path": "a.py", "context": "", "response": "x = 1\n"}]
    a, b = fault_cases(rows, 5, seed=3), fault_cases(rows, 5, seed=3)
    assert [(r["id"], f) for r, _, f in a] == [(r["id"], f) for r, _, f in b] and len(a) == 5
    assert all(r["id"] != "short" for r, _, _ in fault_cases(rows, 20, seed=3))


@pytest.mark.slow  # a real GGUF model in llama.cpp
def test_the_hit_rate_counts_the_flagged_planted_lines(model):
    assistant = Assistant([], ProjectConventions(), model)
    rows = _rows(12)
    report = evaluate_faults(assistant, rows, base=assistant, max_cases=12)
    assert report.n == 12 and report.top == TOP
    hits = 0
    for row, code, fault in fault_cases(rows, 12, seed=0):  # the same cases, flagged one by one
        flagged, _ = assistant.surprising_lines(code, row["context"].split()[2], TOP)
        hits += fault.line in [line for line, _ in flagged]
    assert report.hit_rate == pytest.approx(hits / 12, abs=1e-4)
    lines = len([t for t in FUNCTION.split("\n") if t.strip()])
    assert report.random_hit_rate == pytest.approx(TOP / lines, abs=1e-4)
    assert report.base_hit_rate == report.hit_rate and report.p_value_vs_base == 1.0  # the same model: no gain
    assert sum(v["n"] for v in report.by_kind.values()) == 12
    assert "**Verify on planted faults**" in report.markdown()
    assert evaluate_faults(assistant, [], max_cases=5).skipped
