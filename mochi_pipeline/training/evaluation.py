"""Base vs fine-tuned (and the model it would replace) on the held-out eval split, and the quality gate.

- perplexity of the expected answer given its context, per task and per language (token-weighted),
  and bits per byte of the same answers (the same loss per UTF-8 byte, comparable across tokenizers);
- next-token accuracy: the share of answer tokens the model ranks first (moves long before exact
  match does at small scale).
Completion as users meet it (next line, fill-in-the-middle: exact match, edit similarity) is measured
on the exported GGUF in llama.cpp, where it costs far less (deployment/completion_eval.py).
The report is a markdown table plus a PNG; the numbers are kept as JSON for asset checks.
``gate`` decides whether the fine-tuned model may replace what is exported. The base model's scores
are kept in ``cache_dir`` under a key of everything they depend on (the base's files, the tokenizer,
the rows, the settings that shape scoring), so a retraining on an unchanged eval split scores only
the new model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from mochi_pipeline.progress import Progress
from mochi_pipeline.storage import atomic_write_bytes, atomic_write_text, content_hash
from mochi_pipeline.training import base_models
from mochi_pipeline.training.base_models import ResolvedBase
from mochi_pipeline.training.plots import comparison_png
from mochi_pipeline.training.settings import TrainingSettings
from mochi_pipeline.training.sft_data import Formatter, encode_pair, fit_to_length, leading_bos

REPORT_MD = "evaluation.md"
REPORT_PNG = "evaluation.png"
REPORT_JSON = "evaluation.json"
BASE_SCORES_VERSION = "2"  # bump when scoring changes what it measures


@dataclass
class Tally:
    """Sums for one group of examples (a task, a language, or everything)."""

    n: int = 0
    nll: float = 0.0
    tokens: int = 0
    bytes: int = 0  # UTF-8 bytes of the scored answer tokens
    top1: int = 0

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else float("nan")

    @property
    def bits_per_byte(self) -> float:
        return self.nll / math.log(2) / self.bytes if self.bytes else float("nan")

    @property
    def token_accuracy(self) -> float:
        return self.top1 / self.tokens if self.tokens else float("nan")

    def summary(self) -> dict[str, float | None]:
        return {"n": self.n, "perplexity": _num(self.perplexity), "bits_per_byte": _num(self.bits_per_byte),
                "token_accuracy": _num(self.token_accuracy)}


def _num(x: float) -> float | None:
    """JSON has no NaN: a metric with nothing to measure is None."""
    return None if math.isnan(x) else round(x, 4)



@dataclass
class ModelScores:
    overall: Tally = field(default_factory=Tally)
    by_task: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    by_language: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))

    def groups(self, row: dict) -> list[Tally]:
        return [self.overall, self.by_task[row["task"]], self.by_language[row.get("language") or "unknown"]]

    def to_json(self) -> str:
        # not dataclasses.asdict: it rebuilds a defaultdict without its factory
        return json.dumps({"overall": dataclasses.asdict(self.overall),
                           **{name: {k: dataclasses.asdict(v) for k, v in getattr(self, name).items()}
                              for name in ("by_task", "by_language")}})

    @classmethod
    def from_json(cls, text: str) -> ModelScores:
        d = json.loads(text)
        return cls(overall=Tally(**d["overall"]),
                   by_task=defaultdict(Tally, {k: Tally(**v) for k, v in d["by_task"].items()}),
                   by_language=defaultdict(Tally, {k: Tally(**v) for k, v in d["by_language"].items()}))

    def summary(self) -> dict:
        return {
            "overall": self.overall.summary(),
            "by_task": {k: v.summary() for k, v in sorted(self.by_task.items())},
            "by_language": {k: v.summary() for k, v in sorted(self.by_language.items())},
        }


def _encode(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str, max_len: int) -> tuple[list[int], int]:
    """Token ids of prompt+completion cut to max_len and where the completion starts: the same ids, split
    at the same seam and cut the same way, as training (``encode_pair``, ``fit_to_length``)."""
    ids, start = fit_to_length(*encode_pair(tokenizer, prompt, completion), max_len, len(leading_bos(tokenizer)))
    return ids, max(1, start)  # the first id has nothing before it to be predicted from


@torch.no_grad()
def completion_nll(model: PreTrainedModel, ids: list[int], start: int) -> tuple[float, int, int]:
    """Summed negative log-likelihood of ids[start:] given what precedes, its token count, and how many
    of those tokens the model ranked first."""
    x = torch.tensor([ids], device=model.device)
    logits = model(input_ids=x).logits[0, :-1].float()[start - 1:]
    targets = x[0, 1:][start - 1:]
    nll = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    return nll.item(), len(ids) - start, int((logits.argmax(-1) == targets).sum())


def score(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, formatter: Formatter, rows: list[dict],
    settings: TrainingSettings, log: Callable[[object], None], name: str = "model",
) -> ModelScores:
    model.eval()
    scores = ModelScores()
    for i, row in enumerate(rows, 1):
        prompt, completion = formatter.scoring_pair(row)
        ids, start = _encode(tokenizer, prompt, completion, settings.max_seq_length)
        nll, n_tokens, top1 = completion_nll(model, ids, start) if start < len(ids) else (0.0, 0, 0)
        n_bytes = len(tokenizer.decode(ids[start:]).encode("utf-8")) if start < len(ids) else 0
        for tally in scores.groups(row):
            tally.n += 1
            tally.nll += nll
            tally.tokens += n_tokens
            tally.bytes += n_bytes
            tally.top1 += top1
        if i % 10 == 0 or i == len(rows):
            log(Progress(f"scoring the {name}", i, len(rows), unit="example"))
    return scores


def sample_indices(n_rows: int, at_most: int, seed: int) -> list[int]:
    """A seeded sample of at most ``at_most`` of ``range(n_rows)``, in order."""
    picked = list(range(n_rows))
    return sorted(random.Random(seed).sample(picked, at_most)) if n_rows > at_most else picked


def eval_rows(split: datasets.Dataset, settings: TrainingSettings) -> list[dict]:
    """A seeded sample of at most ``eval_max_examples`` rows, in dataset order."""
    return [split[i] for i in sample_indices(len(split), settings.eval_max_examples, settings.seed)]


def load_tuned(base: ResolvedBase, model_dir: Path, method: str) -> PreTrainedModel:
    """A fine-tuned model: the adapter in ``model_dir`` put onto a freshly loaded base, or the full weights."""
    if method == "full":
        return base_models.load_model(ResolvedBase(base.name, str(model_dir), "", (), None, None))
    from peft import PeftModel

    return PeftModel.from_pretrained(base_models.load_model(base, quantize_4bit=method == "qlora"), str(model_dir))


def _files_signature(directory: Path) -> list:
    """Name, size and modification time of every file under ``directory``: a change of any shows (cheap, unlike
    hashing gigabytes of weights)."""
    return sorted([str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns]
                  for p in directory.rglob("*") if p.is_file())


def base_scores_key(base: ResolvedBase, tokenizer_dir: Path, rows: list[dict], settings: TrainingSettings,
                    method: str) -> str:
    """What the base model's scores depend on: its files, the tokenizer, the rows and the scoring settings."""
    tokenizer = [(tokenizer_dir / f).read_text(encoding="utf-8") for f in ("tokenizer.json", "tokenizer_config.json")
                 if (tokenizer_dir / f).is_file()]
    return content_hash(BASE_SCORES_VERSION, base.name, base.path, json.dumps(_files_signature(Path(base.path))),
                        *tokenizer, json.dumps(rows, sort_keys=True, default=str),
                        str(settings.max_seq_length),
                        settings.fim, str(method == "qlora"))


def evaluate(
    data: datasets.DatasetDict, base: ResolvedBase, final_dir: Path, method: str, settings: TrainingSettings,
    out_dir: Path, log: Callable[[object], None] = print, previous: Path | None = None, previous_method: str = "",
    cache_dir: Path | None = None, previous_base: ResolvedBase | None = None,
) -> dict:
    """Score the base, the fine-tuned model and ``previous`` (the model it would replace) on the eval split.

    Writes markdown, PNG and JSON into ``out_dir`` and returns the report (``previous`` is None without one).
    With ``cache_dir``, the base's scores are reused from an earlier evaluation with the same inputs.
    ``previous_base``: the base ``previous`` was trained on, when it is another one: it is scored with its own
    tokenizer on the same rows, and ``gate`` then compares bits per byte (perplexities of two tokenizers do not).
    """
    tokenizer = base_models.load_tokenizer(ResolvedBase(base.name, str(final_dir), "", (), None, None))
    formatter = Formatter.for_base(base, tokenizer, settings.fim)
    rows = [r for r in eval_rows(data["eval"], settings) if formatter.usable(r)]
    if not rows:
        raise ValueError("The eval split is empty, so base and fine-tuned cannot be compared; "
                         "raise generation.eval_time_share or add history to the repository.")
    cached = cache_dir / f"{base_scores_key(base, final_dir, rows, settings, method)}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        log(f"The base model's scores on these {len(rows)} eval examples are reused from {cached}")
        base_scores = ModelScores.from_json(cached.read_text(encoding="utf-8"))
    else:
        log(f"Scoring the base model on {len(rows)} eval examples")
        base_scores = score(base_models.load_model(base, quantize_4bit=method == "qlora"), tokenizer, formatter,
                            rows, settings, log, "base model")
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cached, base_scores.to_json())
    log("Scoring the fine-tuned model")
    tuned_scores = score(load_tuned(base, final_dir, method), tokenizer, formatter, rows, settings, log,
                         "fine-tuned model")
    report = {"base": base_scores.summary(), "fine_tuned": tuned_scores.summary(), "previous": None,
              "previous_path": str(previous or ""), "n_examples": len(rows)}
    if previous is not None:
        log(f"Scoring the model it would replace ({previous})")
        p_base, p_tokenizer, p_formatter, p_rows = base, tokenizer, formatter, rows
        if previous_base is not None:
            p_base = previous_base
            p_tokenizer = base_models.load_tokenizer(ResolvedBase(p_base.name, str(previous), "", (), None, None))
            p_formatter = Formatter.for_base(p_base, p_tokenizer, settings.fim)
            p_rows = [r for r in rows if p_formatter.usable(r)]
            report["previous_base"] = p_base.path or "(unrecorded)"
        report["previous"] = score(load_tuned(p_base, previous, previous_method), p_tokenizer, p_formatter, p_rows,
                                   settings, log, "model it would replace").summary()
    b, t = report["base"]["overall"], report["fine_tuned"]["overall"]
    report["fine_tuned_better"] = t["perplexity"] is not None and t["perplexity"] < (b["perplexity"] or math.inf)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / REPORT_JSON, json.dumps(report, indent=1))
    atomic_write_text(out_dir / REPORT_MD, to_markdown(report))
    tasks = sorted(report["base"]["by_task"])
    png = comparison_png(
        tasks, [report["base"]["by_task"][k]["perplexity"] or 0.0 for k in tasks],
        [report["fine_tuned"]["by_task"][k]["perplexity"] or 0.0 for k in tasks], "perplexity (lower is better)",
        "Held-out perplexity per task",
    )
    atomic_write_bytes(out_dir / REPORT_PNG, png)
    log(f"Perplexity base {b['perplexity']} -> fine-tuned {t['perplexity']}")
    return report


def gate(report: dict, tolerance: float) -> tuple[bool, str]:
    """Whether the fine-tuned model may replace what is exported, and why (held-out perplexity)."""
    base = report["base"]["overall"]["perplexity"]
    tuned = report["fine_tuned"]["overall"]["perplexity"]
    if tuned is None or not math.isfinite(tuned):
        return False, "the fine-tuned model's held-out perplexity is not a finite number (training diverged?)"
    if base is not None and tuned >= base:
        return False, (f"held-out perplexity {tuned:.4g} is not below the base model's {base:.4g}: the fine-tuned "
                       "model is worse than the model it started from")
    replaced = (report.get("previous") or {}).get("overall", {})
    if report.get("previous_base"):  # trained on another base: bits per byte compare across tokenizers
        mine, theirs = report["fine_tuned"]["overall"].get("bits_per_byte"), replaced.get("bits_per_byte")
        if mine is not None and theirs is not None and mine > theirs * (1 + tolerance):
            return False, (f"held-out bits per byte {mine:.4g} is worse than {theirs:.4g} of the model it would "
                           f"replace, trained on another base (by more than gate_tolerance {tolerance:.0%})")
        than = (f" and bits per byte {mine:.4g} against {theirs:.4g} of the replaced model (another base)"
                if mine is not None and theirs is not None else " (the replaced model, on another base: no bits per "
                "byte to compare)")
        return True, f"held-out perplexity {tuned:.4g} beats the base model's {base:.4g}{than}"
    previous = replaced.get("perplexity")
    if previous is not None and tuned > previous * (1 + tolerance):
        return False, (f"held-out perplexity {tuned:.4g} is worse than {previous:.4g} of the model it would replace "
                       f"(by more than gate_tolerance {tolerance:.0%})")
    than = f" and the replaced model's {previous:.4g}" if previous is not None else ""
    return True, f"held-out perplexity {tuned:.4g} beats the base model's {base:.4g}{than}"


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def to_markdown(report: dict) -> str:
    models = [("base", report["base"]), ("tuned", report["fine_tuned"])]
    if report.get("previous"):
        models.append(("replaced", report["previous"]))
    metrics = [("ppl", "perplexity"), ("bits/byte", "bits_per_byte"), ("tok acc", "token_accuracy")]
    lines = [
        f"**Held-out evaluation** ({report['n_examples']} examples; perplexity and bits per byte: lower is better; "
        "next-token accuracy: higher is better"
        + ("; *replaced* = the model now exported" if report.get("previous") else "")
        + ("; it was trained on another base, with another tokenizer: compare bits per byte, not perplexity"
           if report.get("previous_base") else "") + ")",
        "",
        "| group | n | " + " | ".join(f"{m} {name}" for m, _ in metrics for name, _ in models) + " |",
        "|---|---:|" + "---:|" * (len(metrics) * len(models)),
    ]

    def row(label: str, pick) -> str:
        groups = [pick(scores) for _, scores in models]
        cells = [_fmt((g or {}).get(key)) for _, key in metrics for g in groups]
        return f"| {label} | {groups[0]['n']} | " + " | ".join(cells) + " |"

    lines.append(row("**all**", lambda s: s["overall"]))
    for task in report["base"]["by_task"]:
        lines.append(row(f"task: {task}", lambda s, t=task: s["by_task"].get(t)))
    for lang in report["base"]["by_language"]:
        lines.append(row(f"language: {lang}", lambda s, g=lang: s["by_language"].get(g)))
    return "\n".join(lines) + "\n"
