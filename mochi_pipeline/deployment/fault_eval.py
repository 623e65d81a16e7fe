"""How well ``verify`` points at a planted fault: one realistic mistake per held-out function.

Each case is an eval-split ``implement`` example (a later file's function).
One line of the function gets one fault, chosen with a seeded generator among those the line takes:
two identifiers swapped (``a - b`` -> ``b - a``), an off-by-one (an integer literal moved by one, or
``<`` / ``<=`` traded), or a call to a name the project never uses. ``Assistant.surprising_lines``,
what ``verify`` reports, flags the faulty function's lines (read after a ``# path`` line); a case is a
hit when the planted line is among them. A random pick of ``top`` lines hits with probability
``top / lines``; the report gives that expectation next to the models'
hit rates, and a one-sided sign test of the fine-tuned model against the base.
"""

from __future__ import annotations

import keyword
import random
import re
from collections.abc import Sequence

from pydantic import BaseModel, Field

from mochi_pipeline.deployment.assist import Assistant
from mochi_pipeline.deployment.engine import ContextLengthError
from mochi_pipeline.deployment.significance import sign_test

TOP = 3  # lines verify reports as surprising
MIN_LINES = 5  # a function shorter than this leaves a random pick little to miss
_IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_INT = re.compile(r"(?<![\w.])\d+(?![\w.])")
_CALL = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\(")
_COMPARE = (("<=", "<"), (">=", ">"), ("<", "<="), (">", ">="))
_STRANGER_PARTS = ("legacy", "fetch", "sync", "resolve", "apply", "compute", "dispatch", "wrap", "flush", "probe")


class PlantedFault(BaseModel):
    line: int = Field(description="1-based line of the function that carries the fault.")
    kind: str = Field(description="swapped_identifiers, off_by_one or unknown_call.")
    before: str
    after: str


class FaultReport(BaseModel):
    n: int
    top: int = TOP
    hit_rate: float = Field(description="Share of cases with the planted line among the top lines flagged.")
    random_hit_rate: float = Field(description="What a random pick of `top` lines hits, on the same functions.")
    base_hit_rate: float | None = None
    p_value_vs_base: float | None = None
    by_kind: dict[str, dict[str, float]] = Field(default_factory=dict)
    skipped: str = ""
    example: dict = Field(default_factory=dict)

    def markdown(self) -> str:
        if self.skipped:
            return f"Verify not measured: {self.skipped}."
        base = (f"; the base model {self.base_hit_rate:.0%} (fine-tuned better: one-sided sign test p = "
                f"{self.p_value_vs_base:.2g})" if self.base_hit_rate is not None else "")
        rows = "\n".join(f"| {k} | {v['n']:.0f} | {v['hit_rate']:.2f} |" for k, v in self.by_kind.items())
        return (f"**Verify on planted faults**: the faulty line among the {self.top} lines flagged in "
                f"{self.hit_rate:.0%} of {self.n} held-out functions (a random pick: {self.random_hit_rate:.0%})"
                f"{base}.\n\n| fault | cases | hit rate |\n|---|---:|---:|\n{rows}\n")


def _code_line(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith(("#", '"""', "'''", "@", "def ", "class ", "async def "))


def plant_fault(code: str, rng: random.Random, known_names: set[str]) -> tuple[str, PlantedFault] | None:
    """``code`` with one fault planted on one of its lines, or None when no line takes one."""
    lines = code.split("\n")
    options: list[tuple[int, str, str]] = []  # (index, kind, new line)
    for i, text in enumerate(lines):
        if not _code_line(text):
            continue
        names = [m for m in _IDENT.finditer(text) if not keyword.iskeyword(m.group())]
        distinct = list(dict.fromkeys(m.group() for m in names))
        if len(distinct) >= 2:
            a, b = rng.sample(distinct, 2)
            swapped = _IDENT.sub(lambda m, a=a, b=b: {a: b, b: a}.get(m.group(), m.group()), text)
            if swapped != text:
                options.append((i, "swapped_identifiers", swapped))
        if (number := _INT.search(text)) is not None:
            moved = str(int(number.group()) + rng.choice((-1, 1)) if number.group() != "0" else 1)
            options.append((i, "off_by_one", text[:number.start()] + moved + text[number.end():]))
        else:
            for old, new in _COMPARE:
                if f" {old} " in text:
                    options.append((i, "off_by_one", text.replace(f" {old} ", f" {new} ", 1)))
                    break
        if (call := _CALL.search(text)) is not None and not keyword.iskeyword(call.group(1)):
            stranger = _stranger(rng, known_names)
            options.append((i, "unknown_call", text[:call.start(1)] + stranger + text[call.end(1):]))
    if not options:
        return None
    i, kind, new = rng.choice(options)
    faulty = lines.copy()
    faulty[i] = new
    return "\n".join(faulty), PlantedFault(line=i + 1, kind=kind, before=lines[i], after=new)


def _stranger(rng: random.Random, known_names: set[str]) -> str:
    while True:
        name = "_".join(rng.sample(_STRANGER_PARTS, 2))
        if name not in known_names:
            return name


def fault_cases(rows: Sequence[dict], max_cases: int, seed: int) -> list[tuple[dict, str, PlantedFault]]:
    """(row, faulty function, fault) for a seeded sample of held-out ``implement`` rows."""
    known = {m.group() for row in rows for text in (row["context"], row["response"]) for m in _IDENT.finditer(text)}
    rng = random.Random(seed)
    functions = [r for r in rows if r["task"] == "implement" and len(r["response"].strip().splitlines()) >= MIN_LINES]
    cases = []
    for row in rng.sample(functions, len(functions)):
        planted = plant_fault(row["response"].rstrip("\n"), rng, known)
        if planted is not None:
            cases.append((row, *planted))
        if len(cases) == max_cases:
            break
    return cases


def _hit(assistant: Assistant, path: str, code: str, line: int, top: int) -> bool | None:
    """Whether verify flags ``line`` among its ``top`` surprising lines (None: longer than the model's context)."""
    try:
        flagged, _ = assistant.surprising_lines(code, path, top)
    except ContextLengthError:
        return None
    return line in [ln for ln, _ in flagged]


def evaluate_faults(tuned: Assistant, rows: Sequence[dict], base: Assistant | None = None, max_cases: int = 40,
                    seed: int = 0, top: int = TOP) -> FaultReport:
    """Hit rate of ``tuned`` (and ``base``) at flagging the planted line, against a random pick."""
    results = []  # (kind, tuned hit, base hit or None, lines scored)
    example: dict = {}
    for row, code, fault in fault_cases(rows, max_cases, seed):
        path = m.group(1) if (m := re.match(r"# File: (\S+)", row["context"])) else row.get("path", "")
        got = _hit(tuned, path, code, fault.line, top)
        base_got = _hit(base, path, code, fault.line, top) if base is not None else None
        if got is None or (base is not None and base_got is None):
            continue
        lines = sum(1 for text in code.split("\n") if text.strip())  # the lines a random pick chooses among
        results.append((fault.kind, got, base_got, lines))
        if not example:
            example = {"path": path, **fault.model_dump(), "flagged": got}
    if not results:
        return FaultReport(n=0, hit_rate=0.0, random_hit_rate=0.0,
                           skipped="no held-out function of at least "
                                   f"{MIN_LINES} lines takes a fault (raise generation.eval_time_share)")
    n = len(results)
    report = {"n": n, "top": top, "hit_rate": round(sum(r[1] for r in results) / n, 4),
              "random_hit_rate": round(sum(min(top, r[3]) / r[3] for r in results) / n, 4),
              "by_kind": {k: {"n": len(v), "hit_rate": round(sum(v) / len(v), 4)}
                          for k in sorted({r[0] for r in results}) for v in [[r[1] for r in results if r[0] == k]]},
              "example": example}
    if base is not None:
        wins = sum(1 for r in results if r[1] and not r[2])
        losses = sum(1 for r in results if r[2] and not r[1])
        report.update(base_hit_rate=round(sum(bool(r[2]) for r in results) / n, 4),
                      p_value_vs_base=sign_test(wins, losses))
    return FaultReport(**report)
