"""How well ``rerank`` picks the real change among distractors, on the held-out (later) part of the history.

Each case is an eval-split example (a later commit's change, else a later file's next block or line):
its prompt, the real answer and ``k - 1`` answers of other held-out examples of the same task
(other commits, same language where there are enough), shuffled with a seeded generator. The
domain model ranks them with ``Assistant.rerank``; top-1 accuracy is compared with chance (1/k).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from itertools import zip_longest

from pydantic import BaseModel, Field

from mochi_pipeline.deployment.assist import Assistant, DomainModel
from mochi_pipeline.deployment.engine import ContextLengthError
from mochi_pipeline.deployment.fault_eval import FaultReport
from mochi_pipeline.deployment.significance import binomial_tail, sign_test
from mochi_pipeline.records import Record

TASKS = ("commit_change", "next_block", "next_line")  # taken in turn
MIN_CASES = 3


class RerankCase(BaseModel):
    task: str
    source: str = Field(description="Commit or path of the example.")
    prompt: str
    candidates: list[str]
    answer: int = Field(description="Index of the real answer in ``candidates``.")


class RerankReport(Record):
    n_cases: int
    candidates: int = Field(description="Candidates per case (k).")
    accuracy: float | None = Field(description="Share of cases where the real answer ranked first.")
    chance: float = Field(description="1/k: what picking at random scores.")
    mrr: float | None = Field(description="Mean reciprocal rank of the real answer.")
    p_value: float | None = Field(None, description="One-sided binomial p-value of the top-1 hits against chance.")
    base_accuracy: float | None = Field(None, description="The base model's top-1 on the same cases.")
    base_mrr: float | None = None
    p_value_vs_base: float | None = Field(
        None, description="One-sided exact sign test of the cases only one of the two models got right: that the "
        "fine-tuned model wins them more often than the base.")
    base_skipped: str = Field("", description="Why the base model was not measured, when it was not.")
    too_long: int = Field(0, description="Cases left out: prompt and candidate longer than the model's context.")
    by_task: dict[str, dict[str, float]] = Field(default_factory=dict)
    skipped: str = Field("", description="Why there is no measurement, when there is none.")
    example: dict = Field(default_factory=dict, description="One case with its ranking, for a person to read.")
    verify: FaultReport | None = Field(None, description="How often verify flags a fault planted in held-out "
                                       "functions (fault_eval.py).")

    def markdown(self) -> str:
        verify = f"\n{self.verify.markdown()}" if self.verify is not None else ""
        return self._rerank_markdown() + verify

    def _rerank_markdown(self) -> str:
        if self.skipped:
            return f"Rerank not measured: {self.skipped}\n"
        rows = "\n".join(f"| {t} | {v['n']:.0f} | {v['accuracy']:.2f} | {v['mrr']:.2f} |" for t, v in
                         self.by_task.items())
        return (f"**Rerank on held-out changes**: the real answer ranked first in {self.accuracy:.0%} of "
                f"{self.n_cases} cases with {self.candidates} candidates each (chance {self.chance:.0%}, one-sided "
                f"binomial p = {self.p_value:.2g}); MRR {self.mrr:.2f}"
                f"{f'; {self.too_long} longer than the context left out' if self.too_long else ''}."
                f" {self.base_line()}"
                f"\n\n| task | cases | top-1 | MRR |\n|---|---:|---:|---:|\n{rows}\n")

    def base_line(self) -> str:
        if self.base_accuracy is None:
            return f"Base model not measured: {self.base_skipped}." if self.base_skipped else ""
        return (f"The base model, on the same cases: top-1 {self.base_accuracy:.0%}, MRR {self.base_mrr:.2f} "
                f"(fine-tuned better than the base: one-sided sign test p = {self.p_value_vs_base:.2g}).")


def _prompt(row: dict, model: DomainModel) -> str:
    if row["task"] in ("next_block", "next_line"):
        return row["context"]
    messages = [dict(m) for m in row["messages"]]
    return model.chat_prompt(messages[:-1])


def _source(row: dict) -> str:
    return row.get("commit") or row.get("path") or row["id"]


def rerank_cases(rows: list[dict], model: DomainModel, k: int, max_cases: int, seed: int) -> list[RerankCase]:
    """Cases from held-out ``rows``: each real answer among ``k - 1`` from other sources of its task, the tasks
    taken in turn (so a cap on cases leaves each its share)."""
    rng = random.Random(seed)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if row["task"] in TASKS and row["response"].strip():
            by_task[row["task"]].append(row)
    per_task: list[list[RerankCase]] = []
    for task in TASKS:
        pool = by_task[task]
        cases: list[RerankCase] = []
        for row in rng.sample(pool, len(pool)):
            others = [r for r in pool if _source(r) != _source(row) and r["response"] != row["response"]]
            same_language = [r for r in others if r.get("language") == row.get("language")]
            others = same_language if len(same_language) >= k - 1 else others
            if len(others) < k - 1:
                continue
            candidates = [r["response"] for r in rng.sample(others, k - 1)]
            answer = rng.randrange(k)
            candidates.insert(answer, row["response"])
            cases.append(RerankCase(task=task, source=_source(row), prompt=_prompt(row, model),
                                    candidates=candidates, answer=answer))
        per_task.append(cases)
    in_turn = [case for turn in zip_longest(*per_task) for case in turn if case is not None]
    return in_turn[:max_cases]


def _answer_rank(ranked: list, case: RerankCase) -> int:
    return next(pos for pos, r in enumerate(ranked, 1) if r.index == case.answer)


def evaluate_rerank(assistant: Assistant, rows: list[dict], k: int = 4, max_cases: int = 40, seed: int = 0,
                    log: Callable[[str], None] = print, baseline: Assistant | None = None) -> RerankReport:
    """Top-1 and MRR of ``assistant`` on held-out cases, and of ``baseline`` (the base model) on the same ones."""
    if assistant.model is None:
        raise ValueError("evaluate_rerank needs the domain model.")
    chance = 1.0 / k
    hits: dict[str, list[float]] = defaultdict(list)
    reciprocal: dict[str, list[float]] = defaultdict(list)
    pairs: list[tuple[int, int]] = []  # (fine-tuned rank, base rank) of the real answer, per case
    example: dict = {}
    too_long = 0
    # Every possible case, measured until max_cases fit the model's context (a long diff may not).
    for case in rerank_cases(rows, assistant.model, k, len(rows), seed):
        if sum(len(v) for v in hits.values()) == max_cases:
            break
        try:
            ranked = assistant.rerank(case.prompt, case.candidates)
            base_ranked = baseline.rerank(case.prompt, case.candidates) if baseline is not None else None
        except ContextLengthError:
            too_long += 1
            continue
        rank = _answer_rank(ranked, case)
        hits[case.task].append(float(rank == 1))
        reciprocal[case.task].append(1.0 / rank)
        if base_ranked is not None:
            pairs.append((rank, _answer_rank(base_ranked, case)))
        if not example:
            example = {"task": case.task, "source": case.source, "real_answer_rank": rank,
                       "scores": [{"candidate": r.candidate[:200], "score": r.score, "real": r.index == case.answer}
                                  for r in ranked]}
        if (done := sum(len(v) for v in hits.values())) % 10 == 0:
            log(f"reranked {done} held-out cases")
    all_hits = [h for v in hits.values() for h in v]
    left_out = f"; {too_long} left out, longer than the model's context" if too_long else ""
    if len(all_hits) < MIN_CASES:
        return RerankReport(n_cases=len(all_hits), candidates=k, accuracy=None, chance=chance, mrr=None,
                            too_long=too_long,
                            skipped=f"only {len(all_hits)} held-out examples with {k - 1} distractors each "
                                    f"(at least {MIN_CASES} needed{left_out}); raise generation.eval_time_share "
                                    "or add history")
    all_rr = [r for v in reciprocal.values() for r in v]
    base: dict = {}
    if pairs:
        wins = sum(1 for tuned, base_rank in pairs if tuned == 1 < base_rank)
        losses = sum(1 for tuned, base_rank in pairs if base_rank == 1 < tuned)
        base = {"base_accuracy": round(sum(b == 1 for _, b in pairs) / len(pairs), 4),
                "base_mrr": round(sum(1 / b for _, b in pairs) / len(pairs), 4),
                "p_value_vs_base": sign_test(wins, losses)}
    return RerankReport(
        n_cases=len(all_hits), candidates=k, chance=round(chance, 4), too_long=too_long,
        accuracy=round(sum(all_hits) / len(all_hits), 4), mrr=round(sum(all_rr) / len(all_rr), 4),
        p_value=binomial_tail(round(sum(all_hits)), len(all_hits), chance), **base,
        by_task={t: {"n": len(hits[t]), "accuracy": round(sum(hits[t]) / len(hits[t]), 4),
                     "mrr": round(sum(reciprocal[t]) / len(reciprocal[t]), 4)} for t in hits},
        example=example,
    )
