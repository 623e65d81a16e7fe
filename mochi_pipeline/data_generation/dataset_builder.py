"""The training dataset: examples of every generator, split by time, decontaminated, mixed, saved.

1. exact duplicates (same instruction, context and response) are dropped;
2. eval = the newest sources (a commit, else a file) up to ``eval_time_share`` of the examples (or, with
   ``dataset.eval_since_tag``, every example dated after that tag's commit), plus a seeded
   ``eval_random_share`` of the rest (drawn per example, so independent of order);
3. training examples that equal an eval item (same response or same text) or are near duplicates of
   one (MinHash over token n-grams, estimated Jaccard >= threshold) are dropped;
4. generators above their ``max_generator_share`` of the training split are downsampled (seeded);
5. the rows are written as an HF ``DatasetDict`` and one JSONL file per split, in one atomic step.
Each row carries three forms: instruction/context/response, chat ``messages``, and raw ``text``.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import datasets
import numpy as np
import orjson
import pyarrow as pa
from pydantic import Field

from mochi_pipeline.data_generation.settings import DatasetSettings
from mochi_pipeline.preprocessing import minhash
from mochi_pipeline.records import Commit, Record, TrainingExample
from mochi_pipeline.storage import atomic_directory, content_hash

SPLITS = ("train", "eval")
_TOKEN = re.compile(r"\w+|[^\w\s]")

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "instruction": datasets.Value("string"),
        "context": datasets.Value("string"),
        "response": datasets.Value("string"),
        "messages": datasets.List({"role": datasets.Value("string"), "content": datasets.Value("string")}),
        "text": datasets.Value("string"),
        "prefix": datasets.Value("string"),
        "suffix": datasets.Value("string"),
        "task": datasets.Value("string"),
        "generator": datasets.Value("string"),
        "path": datasets.Value("string"),
        "commit": datasets.Value("string"),
        "language": datasets.Value("string"),
        "date": datasets.Value("string"),
        "n_tokens": datasets.Value("int64"),
    }
)


class EmptyDatasetError(ValueError):
    """No training example could be made; the message says which inputs were missing."""


class UnknownTagError(ValueError):
    """``generation.dataset.eval_since_tag`` names no tag of the history read; the message lists the known ones."""


class TrainingDatasetArtifact(Record):
    """Where the dataset lives and what is in it."""

    path: str = Field(
        description="Dataset directory: hf/ (DatasetDict.save_to_disk), train.jsonl, eval.jsonl, manifest.json."
    )
    hf_path: str
    jsonl: dict[str, str] = Field(description="split -> JSONL file.")
    counts: dict[str, dict[str, int]] = Field(description="generator -> split -> examples.")
    task_counts: dict[str, dict[str, int]] = Field(description="task -> split -> examples.")
    n_examples: dict[str, int] = Field(description="split -> examples.")
    n_tokens: dict[str, int] = Field(description="split -> approximate tokens (words and punctuation marks).")
    dropped: dict[str, int] = Field(description="reason -> examples dropped while building.")
    eval_sources: list[str] = Field(description="Commits/files held out by time (newest first).")
    content_hash: str


@dataclass
class SplitResult:
    rows: dict[str, list[dict]] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)
    eval_sources: list[str] = field(default_factory=list)


def example_id(ex: TrainingExample) -> str:
    return content_hash(ex.task, ex.instruction, ex.context, ex.response)


def instruction_text(ex: TrainingExample) -> str:
    return f"{ex.instruction}\n\n{ex.context}".rstrip() if ex.context.strip() else ex.instruction


def raw_text(ex: TrainingExample) -> str:
    return ex.raw_text or f"{instruction_text(ex)}\n\n{ex.response}"


def approx_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


def to_row(ex: TrainingExample, system_prompt: str, ex_id: str | None = None, text: str | None = None,
           n_tokens: int | None = None) -> dict:
    """The dataset row of ``ex`` (id, text and token count are computed unless given)."""
    text = raw_text(ex) if text is None else text
    return {
        "id": ex_id or example_id(ex),
        "instruction": ex.instruction,
        "context": ex.context,
        "response": ex.response,
        "messages": [
            {"role": "system", "content": system_prompt},
            {"role": "user", "content": instruction_text(ex)},
            {"role": "assistant", "content": ex.response},
        ],
        "text": text,
        "prefix": ex.prefix,
        "suffix": ex.suffix,
        "task": ex.task,
        "generator": ex.generator,
        "path": ex.path,
        "commit": ex.commit,
        "language": ex.language,
        "date": ex.date,
        "n_tokens": approx_tokens(text) if n_tokens is None else n_tokens,
    }


def source_key(ex: TrainingExample) -> str:
    """The unit held out by time: a commit when the example comes from one, else its file."""
    return f"commit:{ex.commit}" if ex.commit else f"file:{ex.path}"


def _instant(date: str) -> datetime:
    when = datetime.fromisoformat(date)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def tag_date(commits: list[Commit], tag: str) -> str:
    """Committer date of the commit ``tag`` points at, from the history read (``Commit.tags``)."""
    for c in commits:
        if tag in c.tags:
            return c.date
    known = sorted({t for c in commits for t in c.tags})
    listed = ", ".join(known[:30]) + (f" (and {len(known) - 30} more)" if len(known) > 30 else "") if known else "none"
    raise UnknownTagError(
        f"generation.dataset.eval_since_tag = {tag!r} is not a tag of the {len(commits)} commits read. "
        f"Known tags: {listed}. Set it to one of them, or to '' to hold out by generation.eval_time_share "
        "(a tag on an older commit needs a larger repo.max_commits; on another branch, repo.branches)."
    )


def time_split(
    examples: list[TrainingExample], time_share: float, random_share: float, seed: int,
    ids: list[str] | None = None, after: str = "",
) -> tuple[set[str], list[str]]:
    """Ids of eval examples (and the sources held out): the newest sources, then a per-example seeded random share.

    ``after`` (an ISO-8601 date, e.g. a tag's): every example dated after it instead of the newest sources.
    ``ids`` are the examples' ``example_id``s when already known.
    """
    ids = ids or [example_id(ex) for ex in examples]
    newest: dict[str, str] = {}
    sizes: Counter = Counter()
    for ex in examples:
        key = source_key(ex)
        newest[key] = max(newest.get(key, ""), ex.date)
        sizes[key] += 1
    if after:
        cutoff = _instant(after)
        late = [(ex, ex_id) for ex, ex_id in zip(examples, ids, strict=True) if ex.date and _instant(ex.date) > cutoff]
        eval_ids = {ex_id for _, ex_id in late}
        held = sorted({source_key(ex) for ex, _ in late}, key=lambda k: newest[k], reverse=True)
    else:
        budget = math.floor(time_share * len(examples))
        held = []
        taken = 0
        # Newest first; sources without a date (and ties) come in a seeded order, so undated input still gets an
        # eval split.
        order = sorted(newest, key=lambda k: (newest[k], random.Random(f"{seed}:{k}").random()), reverse=True)
        for key in order:
            if taken + sizes[key] > budget or len(held) + 1 >= len(newest):
                continue  # a big source may not fit; smaller, slightly older ones still can
            held.append(key)
            taken += sizes[key]
        held_set = set(held)
        eval_ids = {ex_id for ex, ex_id in zip(examples, ids, strict=True) if source_key(ex) in held_set}
    for ex_id in ids:
        if ex_id not in eval_ids and random.Random(f"{seed}:{ex_id}").random() < random_share:
            eval_ids.add(ex_id)
    if not eval_ids and (time_share or random_share) and len(examples) > 1:
        # Every source was bigger than the eval budget: still evaluate on something (one seeded pick).
        eval_ids.add(min(ids, key=lambda i: random.Random(f"{seed}:{i}").random()))
    return eval_ids, held


DECONTAMINATION_SEED = 1


def signature_store(root: Path, settings: DatasetSettings) -> minhash.SignatureStore:
    """Where decontamination keeps the signatures of texts it has seen (by text key)."""
    return minhash.SignatureStore(root, "examples", settings.decontamination_ngram,
                                  settings.decontamination_num_perm, DECONTAMINATION_SEED)


def sign(texts: list[str], settings: DatasetSettings, known: dict,
         keys: list[str] | None = None) -> list[tuple[np.ndarray | None, int]]:
    """Each text's decontamination signature and approximate token count; ``known`` (text key -> both) is used
    and filled, so a text seen in an earlier build is not tokenised again. ``keys``: the texts' keys, if known."""
    keys = keys or [minhash.text_key(t) for t in texts]
    missing = [i for i, k in enumerate(keys) if k not in known]
    computed = minhash.signed((texts[i] for i in missing), settings.decontamination_ngram,
                              settings.decontamination_num_perm, DECONTAMINATION_SEED, tokens=_TOKEN, lower=True)
    for i, entry in zip(missing, computed, strict=True):
        known[keys[i]] = entry
    return [known[k] for k in keys]


def _normalized(text: str) -> str:
    return " ".join(text.split())


def decontaminate(train: list[dict], eval_rows: list[dict], settings: DatasetSettings,
                  known: dict | None = None, key_of: dict[str, str] | None = None) -> tuple[list[dict], Counter]:
    """Training rows without exact or near duplicates of an eval row, and how many of each went.

    ``known`` holds signed texts by text key (see ``sign``); the ones computed here are added to it.
    ``key_of`` maps row ids to their text keys when already computed.
    """
    known = {} if known is None else known
    key_of = key_of or {r["id"]: minhash.text_key(r["text"]) for r in [*train, *eval_rows]}
    dropped: Counter = Counter()
    exact = {_normalized(r["text"]) for r in eval_rows} | {
        _normalized(r["response"]) for r in eval_rows if len(r["response"]) >= 40
    }
    candidates = []
    for row in train:
        if _normalized(row["text"]) in exact or _normalized(row["response"]) in exact:
            dropped["exact_overlap_with_eval"] += 1
        else:
            candidates.append(row)
    eval_sigs = [sig for sig, _ in sign([r["text"] for r in eval_rows], settings, known,
                                        [key_of[r["id"]] for r in eval_rows]) if sig is not None]
    train_sigs = [sig for sig, _ in sign([r["text"] for r in candidates], settings, known,
                                         [key_of[r["id"]] for r in candidates])]
    signed = [i for i, s in enumerate(train_sigs) if s is not None]
    near = {signed[i] for i in minhash.near_any([train_sigs[i] for i in signed], eval_sigs,
                                                settings.decontamination_threshold)}
    dropped["near_duplicate_of_eval"] += len(near)
    return [row for i, row in enumerate(candidates) if i not in near], dropped


def cap_shares(rows: list[dict], max_share: dict[str, float], seed: int) -> tuple[list[dict], Counter]:
    """Downsample generators above their maximum share of ``rows`` (seeded, lowest ranks kept)."""
    dropped: Counter = Counter()
    by_gen: dict[str, list[dict]] = {}
    for row in rows:
        by_gen.setdefault(row["generator"], []).append(row)
    for _ in range(len(by_gen) + 1):  # capping one generator raises the others' shares; a few passes settle it
        total = sum(len(v) for v in by_gen.values())
        changed = False
        for gen, items in by_gen.items():
            cap = max_share.get(gen, 1.0)
            if cap >= 1.0 or len(items) <= cap * total:
                continue
            others = total - len(items)
            limit = math.floor(cap * others / (1 - cap)) if others else len(items)
            if limit < len(items):
                items.sort(key=lambda r: random.Random(f"{seed}:{r['id']}").random())
                dropped[f"over_max_share:{gen}"] += len(items) - limit
                by_gen[gen] = items[:limit]
                changed = True
        if not changed:
            break
    kept_ids = {r["id"] for items in by_gen.values() for r in items}
    return [r for r in rows if r["id"] in kept_ids], dropped


def mix_violations(rows: list[dict], max_share: dict[str, float]) -> dict[str, float]:
    """generator -> its share, for every generator above its maximum (empty when the mix is fine)."""
    counts = Counter(r["generator"] for r in rows)
    total = sum(counts.values())
    return {g: counts[g] / total for g, cap in max_share.items() if total and counts[g] / total > cap + 1e-9}


def split_examples(
    examples: list[TrainingExample], settings: DatasetSettings, *, seed: int, time_share: float, random_share: float,
    signatures: dict | None = None, commits: list[Commit] | None = None,
) -> SplitResult:
    """Split, decontaminate and mix; ``signatures`` (text key -> signed text, see ``sign``) are reused and filled.

    ``commits``: the history, where ``settings.eval_since_tag`` is looked up (every example after its commit is eval).
    """
    eval_after = tag_date(commits or [], settings.eval_since_tag) if settings.eval_since_tag else ""
    signatures = {} if signatures is None else signatures
    result = SplitResult()
    unique: dict[str, TrainingExample] = {}
    for ex in examples:
        if not ex.instruction.strip() or not ex.response.strip():
            result.dropped["empty_instruction_or_response"] += 1
            continue
        ex_id = example_id(ex)
        if ex_id in unique:
            result.dropped["exact_duplicate"] += 1
        else:
            unique[ex_id] = ex
    ids = sorted(unique)
    ordered = [unique[i] for i in ids]
    eval_ids, result.eval_sources = time_split(ordered, time_share, random_share, seed, ids=ids, after=eval_after)
    texts = [raw_text(ex) for ex in ordered]
    keys = [minhash.text_key(t) for t in texts]
    counts = [n for _, n in sign(texts, settings, signatures, keys)]
    rows = [to_row(ex, settings.system_prompt, ex_id, text, n)
            for ex, ex_id, text, n in zip(ordered, ids, texts, counts, strict=True)]
    eval_rows = [r for r in rows if r["id"] in eval_ids]
    train, dropped = decontaminate([r for r in rows if r["id"] not in eval_ids], eval_rows, settings, signatures,
                                   dict(zip(ids, keys, strict=True)))
    result.dropped.update(dropped)
    train, dropped = cap_shares(train, settings.max_generator_share, seed)
    result.dropped.update(dropped)
    result.rows = {"train": train, "eval": eval_rows}
    return result


def _counts(rows: dict[str, list[dict]], key: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split, items in rows.items():
        for name, n in Counter(r[key] for r in items).items():
            out.setdefault(name, {s: 0 for s in SPLITS})[split] = n
    return out


def write_dataset(split: SplitResult, out_dir: Path) -> TrainingDatasetArtifact:
    if not split.rows.get("train"):
        raise EmptyDatasetError("every example went to eval or was dropped; lower generation.eval_time_share "
                                "(or name a later tag in generation.dataset.eval_since_tag)")
    jsonl = {s: b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in split.rows[s])
             for s in SPLITS}
    digest = content_hash(*(jsonl[s] for s in SPLITS))
    with atomic_directory(out_dir) as tmp:
        for s in SPLITS:
            (tmp / f"{s}.jsonl").write_bytes(jsonl[s])
        # datasets 5.2 saves an empty split that load_from_disk cannot read back: an empty eval split (only when
        # both eval shares are 0) lives in eval.jsonl alone.
        columns = {s: {k: [r[k] for r in split.rows[s]] for k in FEATURES} for s in SPLITS if split.rows[s]}
        # Straight to Arrow: datasets' from_dict encodes row by row (a second per 40k rows).
        info = datasets.DatasetInfo(features=FEATURES)
        dd = datasets.DatasetDict({s: datasets.Dataset(pa.Table.from_pydict(c, schema=FEATURES.arrow_schema), info=info)
                                   for s, c in columns.items()})
        dd.save_to_disk(str(tmp / "hf"))
        artifact = TrainingDatasetArtifact(
            path=str(out_dir),
            hf_path=str(out_dir / "hf"),
            jsonl={s: str(out_dir / f"{s}.jsonl") for s in SPLITS},
            counts=_counts(split.rows, "generator"),
            task_counts=_counts(split.rows, "task"),
            n_examples={s: len(split.rows[s]) for s in SPLITS},
            n_tokens={s: sum(r["n_tokens"] for r in split.rows[s]) for s in SPLITS},
            dropped=dict(split.dropped),
            eval_sources=split.eval_sources,
            content_hash=digest,
        )
        (tmp / "manifest.json").write_text(artifact.model_dump_json(indent=2), encoding="utf-8")
    return artifact
