"""What fine-tuning a real base on a repository buys, every figure next to the base model's from the same run.

    .venv/bin/python benchmarks/model_quality.py REPO [--base gemma3-270m] [--steps 40] [--cases 40]

REPO (a git repository) is cloned into a temporary directory and `mochi run` builds the whole pipeline on it
with the packaged real base (offline; converted once into the model cache). Printed from what the run stored:

- held-out perplexity of the time split, tuned / base, and bits per byte (comparable between tokenizers);
- next-token accuracy; perplexity of the fill-in-the-middle rows (the base's reserved-slot FIM tokens);
- next-line and fill-in-the-middle exact match and edit similarity in llama.cpp (completion_evaluation), with
  their n and the sign test against the base;
- rerank top-1 of held-out later changes among distractors from other commits, for the fine-tuned and the base
  model on the same cases: n, chance, the one-sided binomial p-value against chance and the sign test against
  the base;
- a few held-out lines with the real line, the base's and the fine-tuned model's.
Targets (issue 12): perplexity <= 0.5x the base on this repository, <= 0.7x on a public one; rerank top-1 >= 0.85
against a chance of 0.25 with p < 0.01, not below the base's; next-line exact match above the base's, n >= 100.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import yaml


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path)
    parser.add_argument("--base", default="gemma3-270m", help="a packaged base preset (or any base_model value)")
    parser.add_argument("--steps", type=int, default=0, help="training steps (0 = the preset's)")
    parser.add_argument("--cases", type=int, default=40, help="rerank cases (assist_max_cases)")
    parser.add_argument("--eval-examples", type=int, default=0, help="eval examples (0 = the preset's)")
    parser.add_argument("--completions", type=int, default=100, help="completion cases per task")
    args = parser.parse_args()

    from mochi_pipeline.io_manager import read_asset_file

    work = Path(tempfile.mkdtemp(prefix="mochi-quality-"))
    repo = work / "repo"
    subprocess.run(["git", "clone", "--quiet", str(args.repo.resolve()), str(repo)], check=True)
    training = {"base_model": args.base}
    if args.steps:
        training["max_steps"] = args.steps
    if args.eval_examples:
        training["eval_max_examples"] = args.eval_examples
    config = work / "mochi.yaml"
    config.write_text(yaml.safe_dump({"repo": {"source": str(repo)}, "artifacts_root": str(work / "artifacts"),
                                      "training": training, "export": {"assist_max_cases": args.cases,
                                                                    "completion_max_cases": args.completions}}))
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "mochi_pipeline.cli", "--config", str(config), "run"])
    seconds = time.monotonic() - started
    assets = work / "artifacts" / "assets"
    if not (assets / "evaluation_report.json").is_file():
        print(f"mochi run stopped before the evaluation (exit {run.returncode}); see its output above.")
        return 1

    report = read_asset_file(assets / "evaluation_report.json").metrics
    base, tuned = report["base"], report["fine_tuned"]
    print(f"\n{args.repo} with {args.base}: the whole run took {seconds / 60:.1f} min (exit {run.returncode})\n")
    print(f"{'held-out (time split)':<34}{'base':>10}{'tuned':>10}{'tuned/base':>12}   n")
    b, t = base["overall"], tuned["overall"]
    for label, key in (("perplexity", "perplexity"), ("bits per byte", "bits_per_byte"),
                       ("next-token accuracy", "token_accuracy")):
        ratio = t[key] / b[key] if b.get(key) and t.get(key) is not None else None
        print(f"{label:<34}{_fmt(b[key]):>10}{_fmt(t[key]):>10}{_fmt(ratio):>12}   {b['n']}")
    for task in sorted(k for k in base["by_task"] if k.startswith("fim")):
        bt, tt = base["by_task"][task], tuned["by_task"].get(task, {})
        print(f"{'perplexity, ' + task:<34}{_fmt(bt['perplexity']):>10}{_fmt(tt.get('perplexity')):>10}"
              f"{'':>12}   {bt['n']}")

    rerank = read_asset_file(assets / "assist_evaluation.json")
    print(f"\nrerank of held-out changes: {rerank.n_cases} cases, {rerank.candidates} candidates, chance "
          f"{rerank.chance:.2f}")
    if rerank.accuracy is None:
        print(f"  not measured: {rerank.skipped}")
    else:
        print(f"  fine-tuned top-1 {rerank.accuracy:.3f} (MRR {rerank.mrr:.3f}), p = {rerank.p_value:.2g} against "
              "chance (one-sided binomial)")
        if rerank.base_accuracy is not None:
            print(f"  base       top-1 {rerank.base_accuracy:.3f} (MRR {rerank.base_mrr:.3f}); fine-tuned better "
                  f"than base: p = {rerank.p_value_vs_base:.2g} (one-sided sign test)")
        else:
            print(f"  base not measured: {rerank.base_skipped}")
    if rerank.verify is not None:  # verify on a fault planted in each held-out function
        print("\n" + rerank.verify.markdown().strip())
    completion_file = assets / "completion_evaluation.json"
    completion = read_asset_file(completion_file) if completion_file.is_file() else None
    if completion is not None:
        print(f"\n{'completion (llama.cpp, greedy)':<34}{'base':>10}{'tuned':>10}{'p vs base':>12}   n")
        for s in completion.scores:
            p = "–" if s.p_value_vs_base is None else f"{s.p_value_vs_base:.2g}"
            base_em, base_sim = _fmt(s.base_exact_match), _fmt(s.base_edit_similarity)
            print(f"{s.task + ' exact match':<34}{base_em:>10}{_fmt(s.exact_match):>10}{p:>12}   {s.n}")
            print(f"{s.task + ' edit similarity':<34}{base_sim:>10}{_fmt(s.edit_similarity):>10}{'':>12}   {s.n}")
        for task, why in completion.skipped.items():
            print(f"{task}: not measured, {why}")
        for sample in completion.samples[:3]:
            print(f"\n{sample['source']} ({sample['task']}), after:\n{sample['before']}\n  real : "
                  f"{sample['expected']}\n  base : {sample['base']}\n  tuned: {sample['fine_tuned']}")
    print(f"\nArtifacts: {work / 'artifacts'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
