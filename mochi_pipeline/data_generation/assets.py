"""Dagster assets of the data_generation layer (thin wrappers over the logic modules beside this file).

``build_defs`` makes them from the ``generation`` section of mochi.yaml; each asset's code version
names its logic and the part of the section it reads.
"""

import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import datasets
import orjson

from mochi_pipeline.data_generation import commit_pairs as commit_logic
from mochi_pipeline.data_generation import completion_pairs as completion_logic
from mochi_pipeline.data_generation import dataset_builder, leak_scan, tracker_pairs
from mochi_pipeline.data_generation.doc_code_mapping import doc_code_pairs as map_docs_to_code
from mochi_pipeline.data_generation.llm_client import QALLM, OfflineQA, OpenAICompatibleQA, QAEndpointError
from mochi_pipeline.data_generation.qa_generator import qa_pairs as ask_qa_pairs
from mochi_pipeline.data_generation.settings import GenerationSettings, QASettings
from mochi_pipeline.incremental import checked, reuse
from mochi_pipeline.metadata import md_table, png_markdown, records_hash
from mochi_pipeline.paths import ProjectPaths
from mochi_pipeline.preprocessing.cleaning import CLEANER_VERSION
from mochi_pipeline.preprocessing.minhash import text_key
from mochi_pipeline.preprocessing.settings import ScrubSettings
from mochi_pipeline.records import Chunk, CIFailure, Commit, DocSection, IssueThread, TrainingExample
from mochi_pipeline.storage import atomic_write_bytes

GROUP = "data_generation"
# An endpoint that is down now may be up in a minute; a refused key is not retried (Failure(allow_retries=False)).
NETWORK_RETRIES = dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
LOGIC_VERSION = "3"
NO_CODE = (
    "no code chunks: deduplicated_chunks is empty, so the repository has no files in supported languages "
    "(python, javascript, typescript, java, go, rust, c, c++) under sources.include; check sources.include/exclude"
)


def _preview(examples: list[TrainingExample], n: int = 3) -> str:
    if not examples:
        return "_no examples_"
    parts = []
    for ex in examples[:n]:
        instruction = ex.instruction[:300].replace("\n", " ")
        response = ex.response[:500].replace("```", "'''")
        parts.append(f"**{ex.task}** · `{ex.path or '-'}`\n\n> {instruction}\n\n```\n{response}\n```")
    return "\n\n---\n\n".join(parts)


def _examples_output(
    context: dg.AssetExecutionContext, examples: list[TrainingExample], missing: str, **metadata: object
) -> dg.Output:
    if missing:
        context.log.warning(f"{missing}; produced {len(examples)} examples.")  # Dagster names the step
    else:
        context.log.info(f"Produced {len(examples)} examples.")
    return dg.Output(
        examples,
        data_version=dg.DataVersion(records_hash(examples)),
        metadata={
            "n_examples": len(examples),
            "by_task": dg.MetadataValue.json(dict(Counter(ex.task for ex in examples))),
            "missing": missing or "nothing",
            "preview": dg.MetadataValue.md(_preview(examples)),
            **metadata,
        },
    )


CHECKS = {
    "no_secrets_in_training_data": "Every text of the splits, the generators' outputs and the Q&A reply cache "
    "passes the scrubber's detector (blocking: training never starts on a leak).",
    "schema_valid": "Every row of both splits has the dataset's columns; the HF copy loads with the same columns.",
    "no_train_eval_overlap": "No eval item appears in train (same id, or the same prompt and response, whitespace "
    "aside).",
    "mix_within_proportions": "No generator exceeds its generation.dataset.max_generator_share of the training split.",
}


# Generators that are empty unless a tracker or CI system is set: not worth a warning.
OPTIONAL_SOURCES = ("issue_pairs", "ci_fix_pairs")


def _why_empty(sources: dict[str, list[TrainingExample]]) -> str:
    reasons = {
        "completion_pairs": NO_CODE,
        "doc_code_pairs": "no doc section names a code symbol and no definition has a docstring",
        "commit_pairs": "no usable commit (none, or only merges, bot and trivial commits; see commit_pairs metadata)",
        "qa_pairs": "no named definitions to ask about",
    }
    lines = [f"  - {name}: 0 examples ({reasons[name]})" for name, ex in sources.items() if name in reasons and not ex]
    return "The training dataset would be empty:\n" + "\n".join(lines)


SOURCES = {
    "completion_pairs": "code", "doc_code_mapping": "docs + code", "commit_pairs": "git history",
    "qa_generator": "code (Q&A)", "issue_pairs": "issue trackers", "ci_fix_pairs": "CI logs",
}


def _by_source(counts: dict[str, dict[str, int]]) -> str:
    """Examples per generator and split, with where they come from (a table for the UI and `mochi report`)."""
    rows = [(gen, SOURCES.get(gen, gen), split.get("train", 0), split.get("eval", 0)) for gen, split in counts.items()]
    return md_table(["generator", "source", "train", "eval"], rows)


def _histogram_png(rows: dict[str, list[dict]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=80)
    for split, items in rows.items():
        if items:
            ax.hist([r["n_tokens"] for r in items], bins=30, alpha=0.6, label=f"{split} ({len(items)})")
    ax.set_xlabel("approximate tokens per example")
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _read_jsonl(path: str) -> list[dict]:
    with open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def _check_results(artifact: dataset_builder.TrainingDatasetArtifact,
                   max_share: dict[str, float]) -> Iterator[dg.AssetCheckResult]:
    rows = {s: _read_jsonl(artifact.jsonl[s]) for s in dataset_builder.SPLITS}
    columns = set(dataset_builder.FEATURES)
    bad_schema = [
        f"{s}:{r.get('id', '?')}"
        for s, items in rows.items()
        for r in items
        if set(r) != columns or [m["role"] for m in r["messages"]] != ["system", "user", "assistant"]
    ]
    loaded = datasets.load_from_disk(artifact.hf_path)
    hf_columns_ok = set(loaded) == {s for s, n in artifact.n_examples.items() if n} and all(
        set(loaded[s].column_names) == columns for s in loaded
    )
    yield dg.AssetCheckResult(
        check_name="schema_valid",
        passed=not bad_schema and hf_columns_ok,
        metadata={
            "bad_rows": len(bad_schema),
            "first_bad": ", ".join(bad_schema[:5]) or "none",
            "hf_columns_ok": hf_columns_ok,
        },
    )

    def keys(items: list[dict]) -> set[str]:
        """Ids, and each row's prompt (instruction, context, FIM prefix and suffix) with its response, whitespace
        aside: decontamination compares rendered texts, so two generators' templates around one example escape it."""
        prompts = {"\x1f".join(" ".join(r[c].split()) for c in ("instruction", "context", "prefix", "suffix",
                                                                  "response")) for r in items}
        return {r["id"] for r in items} | prompts

    overlap = keys(rows["train"]) & keys(rows["eval"])
    yield dg.AssetCheckResult(
        check_name="no_train_eval_overlap", passed=not overlap, metadata={"overlapping": len(overlap)}
    )
    violations = dataset_builder.mix_violations(rows["train"], max_share)
    yield dg.AssetCheckResult(
        check_name="mix_within_proportions",
        passed=not violations,
        metadata={"violations": dg.MetadataValue.json(violations), "limits": dg.MetadataValue.json(max_share)},
    )


def qa_writer(settings: QASettings) -> QALLM:
    """The question/answer writer generation.qa asks for: an OpenAI-compatible endpoint, or offline templates."""
    return OpenAICompatibleQA.from_settings(settings) if settings.base_url else OfflineQA()


def _scanned_as(generator: str, path: str) -> str:
    """The path a text is scanned as: its file's for a completion row (one file's code, scrubbed upstream with that
    path), none for the rest, which mix texts scrubbed each with its own path or none (a commit's message and the
    diffs of "a.py, setup.cfg": read as one, the config rules of the last name would misfire on all of it)."""
    return path if generator == completion_logic.GENERATOR else ""


def _final_texts(rows: dict[str, list[dict]], sources: dict[str, list[TrainingExample]], qa_cache: Path):
    """(where, text, source path) of every text that can reach the model: split rows, generator outputs, replies."""
    for split, items in rows.items():
        for r in items:
            for column in ("instruction", "context", "response", "text"):
                yield f"{split} row {r['id']} ({column})", r[column], _scanned_as(r["generator"], r["path"])
    for name, examples in sources.items():
        for i, ex in enumerate(examples):
            for column in ("instruction", "context", "response", "raw_text"):
                yield f"{name} #{i} ({column})", getattr(ex, column), _scanned_as(ex.generator, ex.path)
    for reply in sorted(qa_cache.glob("*.json")) if qa_cache.is_dir() else []:
        yield f"qa cache {reply.name}", reply.read_text(encoding="utf-8", errors="replace"), ""


def _leak_check(report: leak_scan.LeakReport) -> dg.AssetCheckResult:
    where = "; ".join(report.where)
    return dg.AssetCheckResult(
        check_name="no_secrets_in_training_data", passed=report.clean, severity=dg.AssetCheckSeverity.ERROR,
        metadata={"texts_scanned": report.scanned, "hits_by_type": dg.MetadataValue.json(dict(report.by_type)),
                  "where": where or "nowhere"},
        description=None if report.clean else (
            f"{sum(report.by_type.values())} possible secret(s) or personal data in the final training texts "
            f"({where}). Training is blocked. Add the missing rule or value to the scrub section of mochi.yaml "
            "(scrub.allow for a false positive) and run again."),
    )


def build_defs(gen: GenerationSettings, scrub: ScrubSettings, paths: ProjectPaths) -> dg.Definitions:
    root = paths.artifacts

    @dg.asset(group_name=GROUP, kinds={"python"},
              code_version=f"{LOGIC_VERSION}-{gen.signature('seed', 'fim_rate', 'spm_rate', 'completion')}")
    def completion_pairs(context: dg.AssetExecutionContext, deduplicated_chunks: list[Chunk]) -> Iterator:
        """Next-line, next-block and fill-in-the-middle (PSM/SPM, StarCoder sentinels) examples cut from code chunks."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        result = completion_logic.completion_pairs(
            deduplicated_chunks, gen.completion, gen.seed, gen.fim_rate, gen.spm_rate
        )
        yield _examples_output(
            context, result.examples, "" if deduplicated_chunks else NO_CODE,
            n_chunks=len(deduplicated_chunks), skipped_chunks=dg.MetadataValue.json(dict(result.skipped)),
        )

    @dg.asset(group_name=GROUP, kinds={"python"}, code_version=LOGIC_VERSION)
    def doc_code_pairs(context: dg.AssetExecutionContext, doc_sections: list[DocSection],
                       deduplicated_chunks: list[Chunk]) -> Iterator:
        """Doc sections and docstrings linked to the code they name: "Explain `X`" and "Implement `X` as documented"."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        result = map_docs_to_code(doc_sections, deduplicated_chunks)
        missing = []
        if not doc_sections:
            missing.append("no doc sections (no README/docs found): only docstrings were used")
        if not deduplicated_chunks:
            missing.append(NO_CODE)
        yield _examples_output(
            context, result.examples, "; ".join(missing), n_doc_sections=len(doc_sections),
            links=dg.MetadataValue.json(dict(result.links)), skipped=dg.MetadataValue.json(dict(result.skipped)),
        )

    @dg.asset(group_name=GROUP, kinds={"python", "git"},
              code_version=f"{LOGIC_VERSION}-{commit_logic.PAIRS_VERSION}-{gen.signature('commits')}")
    def commit_pairs(context: dg.AssetExecutionContext, clean_commits: list[Commit]) -> Iterator:
        """Diff -> message and message + code before -> code after; merges, bots, trivial and huge diffs dropped."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        result = commit_logic.commit_pairs(clean_commits, gen.commits)
        missing = ""
        if not clean_commits:
            missing = "no commit history (a shallow clone, or repo.max_commits: 0)"
        elif not result.used_commits:
            missing = f"none of the {len(clean_commits)} commits was usable ({dict(result.dropped)})"
        yield _examples_output(
            context, result.examples, missing, n_commits=len(clean_commits),
            used_commits=result.used_commits, dropped_commits=dg.MetadataValue.json(dict(result.dropped)),
        )

    # What changes the pairs written (not timeouts, retries or concurrency).
    qa_content = gen.qa.signature("base_url", "model", "temperature", "max_tokens", "max_subjects", "pairs_per_subject")

    @dg.asset(group_name=GROUP, kinds={"python", "openai"}, code_version=f"{LOGIC_VERSION}-{qa_content}",
              retry_policy=NETWORK_RETRIES if gen.qa.base_url else None)
    def qa_pairs(context: dg.AssetExecutionContext, qa_llm: QALLM, deduplicated_chunks: list[Chunk],
                 doc_sections: list[DocSection]) -> Iterator:
        """Question/answer pairs about code symbols, from an OpenAI-compatible endpoint or offline templates."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        try:
            examples, batch = ask_qa_pairs(
                deduplicated_chunks, doc_sections, qa_llm, max_subjects=gen.qa.max_subjects,
                pairs_per_subject=gen.qa.pairs_per_subject, cache_dir=root / "cache" / "qa", log=context.log,
            )
        except QAEndpointError as err:
            raise dg.Failure(description=str(err), allow_retries=err.retryable) from None
        missing = "" if examples else (
            NO_CODE if not deduplicated_chunks else "no named definitions found in the code chunks")
        yield _examples_output(context, examples, missing, backend=type(qa_llm).__name__,
                               outcomes=dg.MetadataValue.json(dict(batch.outcomes)))

    @dg.asset(group_name=GROUP, kinds={"python", "git"},
              code_version=f"{LOGIC_VERSION}-{tracker_pairs.PAIRS_VERSION}-{gen.trackers.signature()}")
    def issue_pairs(context: dg.AssetExecutionContext, clean_issue_threads: list[IssueThread],
                    clean_commits: list[Commit]) -> Iterator:
        """Closed issues -> the change that resolved them, merged pull/merge requests -> their change, and
        discussions with an accepted answer -> question and answer."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        resolutions, skipped = tracker_pairs.issue_resolution_pairs(clean_issue_threads, clean_commits, gen.trackers)
        answers, unanswered = tracker_pairs.discussion_qa_pairs(clean_issue_threads, gen.trackers)
        missing = "" if clean_issue_threads else "no issue threads (no tracker set in mochi.yaml, or none kept)"
        yield _examples_output(
            context, resolutions + answers, missing, n_threads=len(clean_issue_threads),
            skipped=dg.MetadataValue.json(dict(skipped + unanswered)),
        )

    @dg.asset(group_name=GROUP, kinds={"python", "git"},
              code_version=f"{LOGIC_VERSION}-{tracker_pairs.PAIRS_VERSION}-{gen.trackers.signature()}")
    def ci_fix_pairs(context: dg.AssetExecutionContext, clean_ci_failures: list[CIFailure],
                     clean_commits: list[Commit]) -> Iterator:
        """Failed CI jobs (their error excerpt) -> the change of the commit that made the job pass again."""
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        examples, skipped = tracker_pairs.ci_fix_pairs(clean_ci_failures, clean_commits, gen.trackers)
        missing = "" if clean_ci_failures else "no CI failures (no CI system set in mochi.yaml, or none failed)"
        yield _examples_output(context, examples, missing, n_failures=len(clean_ci_failures),
                               skipped=dg.MetadataValue.json(dict(skipped)))

    @dg.asset(
        group_name=GROUP,
        kinds={"huggingface", "json"},
        code_version=f"{LOGIC_VERSION}-{gen.signature('seed', 'eval_time_share', 'eval_random_share', 'dataset')}"
                     f"-{scrub.signature()}-scan{leak_scan.SCAN_VERSION}-{CLEANER_VERSION}",
        check_specs=[dg.AssetCheckSpec(name, asset="training_dataset", description=text,
                                       blocking=name == "no_secrets_in_training_data")
                     for name, text in CHECKS.items()],
    )
    def training_dataset(context: dg.AssetExecutionContext, completion_pairs: list[TrainingExample],
                         doc_code_pairs: list[TrainingExample], commit_pairs: list[TrainingExample],
                         qa_pairs: list[TrainingExample], issue_pairs: list[TrainingExample],
                         ci_fix_pairs: list[TrainingExample], clean_commits: list[Commit]) -> Iterator:
        """All examples, split by time into train/eval, decontaminated, mixed, saved as HF datasets + JSONL.

        ``clean_commits`` gives the date of generation.dataset.eval_since_tag's commit, when that is set.
        """
        if (events := reuse(context, root, still_valid=lambda a: Path(a.hf_path).is_dir())) is not None:
            yield from events
            return
        sources = {
            "completion_pairs": completion_pairs,
            "doc_code_pairs": doc_code_pairs,
            "commit_pairs": commit_pairs,
            "qa_pairs": qa_pairs,
            "issue_pairs": issue_pairs,
            "ci_fix_pairs": ci_fix_pairs,
        }
        if not any(sources.values()):
            raise dg.Failure(description=_why_empty(sources))
        empty_sources = [name for name, ex in sources.items() if not ex and name not in OPTIONAL_SOURCES]
        if empty_sources:
            context.log.warning(f"These generators produced nothing: {', '.join(empty_sources)}.")
        examples = [ex for items in sources.values() for ex in items]
        store = dataset_builder.signature_store(root / "cache", gen.dataset)
        signatures = store.load()  # texts seen in earlier builds are not hashed again
        try:
            split = dataset_builder.split_examples(
                examples, gen.dataset, seed=gen.seed, time_share=gen.eval_time_share,
                random_share=gen.eval_random_share, signatures=signatures, commits=clean_commits,
            )
        except dataset_builder.UnknownTagError as err:
            raise dg.Failure(description=str(err)) from None
        current = {text_key(r["text"]) for rows in split.rows.values() for r in rows}
        store.save({k: v for k, v in signatures.items() if k in current})
        try:
            artifact = dataset_builder.write_dataset(split, root / "dataset")
        except dataset_builder.EmptyDatasetError as err:
            raise dg.Failure(description=f"The training split would be empty: {err}.") from None
        context.log.info(f"training_dataset: {artifact.n_examples} examples written to {artifact.path}.")

        png = _histogram_png(split.rows)
        plot_path = atomic_write_bytes(paths.path("reports", "training_dataset_token_lengths.png"), png)
        samples = [
            TrainingExample(**{k: r[k] for k in TrainingExample.model_fields if k in r and k != "raw_text"})
            for r in split.rows["train"][:3]
        ]
        output = dg.Output(artifact, data_version=dg.DataVersion(artifact.content_hash), metadata={
            "path": dg.MetadataValue.path(artifact.path),
            "n_examples": dg.MetadataValue.json(artifact.n_examples),
            "n_tokens": dg.MetadataValue.json(artifact.n_tokens),
            "by_generator": dg.MetadataValue.json(artifact.counts),
            "by_source": dg.MetadataValue.md(_by_source(artifact.counts)),
            "by_task": dg.MetadataValue.json(artifact.task_counts),
            "dropped": dg.MetadataValue.json(artifact.dropped),
            "eval_sources": dg.MetadataValue.json(artifact.eval_sources),
            "empty_generators": ", ".join(empty_sources) or "none",
            "token_lengths": png_markdown(png, "token lengths"),
            "token_lengths_png": dg.MetadataValue.path(str(plot_path)),
            "samples": dg.MetadataValue.md(_preview(samples)),
        })
        leaks = leak_scan.scan(_final_texts(split.rows, sources, root / "cache" / "qa"), scrub, root / "cache")
        yield from checked(output, [*_check_results(artifact, gen.dataset.max_generator_share), _leak_check(leaks)])

    return dg.Definitions(
        assets=[completion_pairs, doc_code_pairs, commit_pairs, qa_pairs, issue_pairs, ci_fix_pairs, training_dataset],
        resources={"qa_llm": qa_writer(gen.qa)},
    )
