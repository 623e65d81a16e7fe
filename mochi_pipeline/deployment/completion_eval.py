"""How well the exported model completes held-out code, next to its base: next line and fill-in-the-middle.

Cases come from the eval split (later commits' files), in a seeded sample: a ``next_line`` example's
code before and its real next line; a FIM example's prefix and suffix and its real middle. Each model
(the exported GGUF and the base's) completes greedily in llama.cpp, as `mochi serve` answers a
``/v1/completions`` prompt (the code before, read as its own tokens, the format training used; the
line ends at the first newline) and ``/infill`` (the model's FIM tokens, PSM). A prompt keeps the last
``CONTEXT`` tokens of its code (as the server cuts /infill's), so a long file costs no more than a
short one. All cases of one model are queued at once, so the engine decodes them side by side.

Exact match is the line (or middle) as written, trailing whitespace aside; edit similarity is
1 - Levenshtein distance / the longer length. The tuned model's gain over the base is tested with a one-sided
exact sign test on the cases only one of the two got exactly right.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from mochi_pipeline.deployment.engine import Sampling
from mochi_pipeline.deployment.server import InfillRequest, ModelServer
from mochi_pipeline.deployment.significance import sign_test
from mochi_pipeline.records import Record
from mochi_pipeline.training.fim import is_fim_task

CONTEXT = 320  # tokens each case's prompt may take (the end of the code before is kept): the 256 trained on and more
LINE_TOKENS = 48  # a generated next line stops at its newline or here
MIDDLE_SLACK = 16  # a middle may run this many tokens past the real one's length
SAMPLES = 4  # cases per task shown side by side


class CompletionCase(BaseModel):
    task: str = Field(description="next_line or fim.")
    source: str = Field(description="Path (and commit) of the example.")
    before: str = Field(description="The code before (next_line) or the prefix (fim).")
    after: str = Field("", description="The suffix (fim).")
    expected: str


class CompletionScore(BaseModel):
    task: str
    n: int
    exact_match: float
    edit_similarity: float
    base_exact_match: float | None = None
    base_edit_similarity: float | None = None
    p_value_vs_base: float | None = Field(
        None, description="One-sided exact sign test of the cases only one model matched exactly: that the "
        "fine-tuned model wins them more often than the base.")


class CompletionReport(Record):
    scores: list[CompletionScore] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict, description="Task -> why it was not measured.")
    base_skipped: str = Field("", description="Why the base model was not measured, when it was not.")
    samples: list[dict] = Field(default_factory=list, description="A few cases with both models' completions.")

    def score(self, task: str) -> CompletionScore | None:
        return next((s for s in self.scores if s.task == task), None)

    def markdown(self) -> str:
        lines = ["**Completion of held-out code** (greedy, llama.cpp; exact match, trailing whitespace aside)", "",
                 "| task | cases | exact match base | exact match fine-tuned | edit similarity base | "
                 "edit similarity fine-tuned | p (fine-tuned > base) |", "|---|---:|---:|---:|---:|---:|---:|"]

        def num(x: float | None, digits: str = ".3f") -> str:
            return "not measured" if x is None else format(x, digits)

        for s in self.scores:
            lines.append(f"| {s.task} | {s.n} | {num(s.base_exact_match)} | {s.exact_match:.3f} | "
                         f"{num(s.base_edit_similarity)} | {s.edit_similarity:.3f} | {num(s.p_value_vs_base, '.2g')} |")
        lines += [f"\n{task}: not measured, {why}." for task, why in self.skipped.items()]
        if self.base_skipped:
            lines.append(f"\nBase model not measured: {self.base_skipped}.")
        for sample in self.samples:
            lines += ["", f"`{sample['source']}` ({sample['task']}), the code before:", "```",
                      sample["before"], "```", f"- real: `{sample['expected']}`", f"- base: `{sample['base']}`",
                      f"- fine-tuned: `{sample['fine_tuned']}`"]
        return "\n".join(lines) + "\n"


def edit_similarity(a: str, b: str) -> float:
    """1 - Levenshtein(a, b) / max(len): 1.0 for equal strings, 0.0 for nothing in common."""
    if not a and not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))


def completion_cases(rows: Sequence[dict], max_cases: int, seed: int) -> dict[str, list[CompletionCase]]:
    """Up to ``max_cases`` cases per task from held-out ``rows``, a seeded sample."""
    out: dict[str, list[CompletionCase]] = {"next_line": [], "fim": []}
    for row in rows:
        source = " @ ".join(x for x in (row.get("path") or "", (row.get("commit") or "")[:12]) if x) or row["id"]
        if row["task"] == "next_line" and row["context"].strip():
            expected = row["response"].split("\n", 1)[0].rstrip()
            if expected.strip():
                out["next_line"].append(CompletionCase(task="next_line", source=source, before=row["context"],
                                                       expected=expected))
        elif is_fim_task(row["task"]) and row["response"].strip():
            out["fim"].append(CompletionCase(task="fim", source=source, before=row["prefix"], after=row["suffix"],
                                             expected=row["response"].rstrip()))
    rng = random.Random(seed)
    return {task: rng.sample(cases, min(max_cases, len(cases))) for task, cases in out.items()}


def complete_all(server: ModelServer, cases: Sequence[CompletionCase]) -> list[str]:
    """Each case's greedy completion by ``server`` (started with ``n_ctx=CONTEXT``), all queued at once."""
    streams = []
    head = 1 if server.add_bos else 0
    for case in cases:
        if case.task == "fim":
            n = len(server.tokenize(case.expected, bos=False)) + MIDDLE_SLACK
            tokens, _ = server.infill_prompt(InfillRequest(input_prefix=case.before, input_suffix=case.after,
                                                           n_predict=n))
            streams.append(server.engine.submit(tokens, Sampling(max_tokens=n), pieces=False))
        else:
            tokens = server.tokenize(case.before)
            room = server.n_ctx() - LINE_TOKENS - 1 - head
            if len(tokens) - head > room:  # the code's end matters most: its start goes (the BOS stays)
                tokens = tokens[:head] + tokens[len(tokens) - room:]
            streams.append(server.engine.submit(tokens, Sampling(max_tokens=LINE_TOKENS, stop=["\n"]),
                                                pieces=False))
    return [s.result().text.rstrip() for s in streams]


def evaluate_completion(tuned: ModelServer, rows: Sequence[dict], base: ModelServer | None = None,
                        max_cases: int = 120, seed: int = 0, log: Callable[[str], None] = print) -> CompletionReport:
    """Next-line and FIM exact match and edit similarity of ``tuned`` (and ``base``) on held-out ``rows``."""
    scores: list[CompletionScore] = []
    skipped: dict[str, str] = {}
    samples: list[dict] = []
    for task, cases in completion_cases(rows, max_cases, seed).items():
        if task == "fim" and not {"pre", "suf", "mid"} <= tuned.fim.keys():
            skipped[task] = "the model has no fill-in-the-middle tokens"
            continue
        if not cases:
            skipped[task] = f"no held-out {task} examples (raise generation.eval_time_share or add history)"
            continue
        log(f"completing {len(cases)} held-out {task} cases with the fine-tuned model")
        got = complete_all(tuned, cases)
        if base is not None:
            log(f"completing {len(cases)} held-out {task} cases with the base model")
        base_got: list = complete_all(base, cases) if base is not None else [None] * len(cases)
        kept = list(zip(cases, got, base_got, strict=True))
        exact = [g == c.expected for c, g, _ in kept]
        score = CompletionScore(task=task, n=len(kept), exact_match=round(sum(exact) / len(kept), 4),
                                edit_similarity=round(sum(edit_similarity(g, c.expected) for c, g, _ in kept)
                                                      / len(kept), 4))
        if base is not None:
            base_exact = [b == c.expected for c, _, b in kept]
            wins = sum(t and not b for t, b in zip(exact, base_exact, strict=True))
            losses = sum(b and not t for t, b in zip(exact, base_exact, strict=True))
            score = score.model_copy(update={
                "base_exact_match": round(sum(base_exact) / len(kept), 4),
                "base_edit_similarity": round(sum(edit_similarity(b, c.expected) for c, _, b in kept) / len(kept), 4),
                "p_value_vs_base": sign_test(wins, losses)})
        scores.append(score)
        samples += [{"task": task, "source": c.source, "before": "\n".join(c.before.splitlines()[-4:]),
                            "expected": c.expected, "base": b if b is not None else "(base not measured)",
                            "fine_tuned": g} for c, g, b in kept[:SAMPLES]]
    return CompletionReport(scores=scores, skipped=skipped, samples=samples,
                            base_skipped="" if base is not None else "no base GGUF")
