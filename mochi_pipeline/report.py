"""``mochi report``: what the last runs produced, read back from Dagster's event log."""

from __future__ import annotations

import dagster as dg

from mochi_pipeline.config import MochiConfig
from mochi_pipeline.ingestion.git_urls import redact

# Metadata too long for a terminal line (tables, images) is shown only for these assets.
FULL_TEXT_ASSETS = {"evaluation_report", "assist_evaluation", "completion_evaluation"}
# A partitioned asset (code_chunks) is summed over its partitions' latest materializations.
PARTITION_TOTALS = ("chunks", "files")


def _partition_totals(instance: dg.DagsterInstance, key: dg.AssetKey, partitions: list[str]) -> str:
    totals = dict.fromkeys(PARTITION_TOTALS, 0)
    done = 0
    for partition in partitions:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        if records:
            done += 1
            metadata = records[0].asset_materialization.metadata
            for name in totals:
                totals[name] += metadata[name].value if name in metadata else 0
    return "; ".join([f"partitions={done} of {len(partitions)}", *(f"{k}={v:,}" for k, v in totals.items())])


def _short(value: dg.MetadataValue) -> str | None:
    raw = value.value
    if isinstance(raw, bool | int | float):
        return f"{raw:,.4g}" if isinstance(raw, float) else f"{raw:,}"
    if isinstance(raw, str) and "\n" not in raw and len(raw) <= 100 and "data:image" not in raw:
        return raw
    return None


def print_report(cfg: MochiConfig, instance: dg.DagsterInstance, defs: dg.Definitions) -> None:
    graph = defs.resolve_asset_graph()
    print(f"mochi report for {redact(cfg.repo_source)} (artifacts: {cfg.artifacts_path})\n")
    for key in graph.toposorted_asset_keys:
        if not graph.get(key).is_materializable:
            continue
        event = instance.get_latest_materialization_event(key)
        name = key.to_user_string()
        if event is None or event.asset_materialization is None:
            print(f"{name}: not materialized yet")
            continue
        metadata = event.asset_materialization.metadata
        if (partitions_def := graph.get(key).partitions_def) is not None:
            print(f"{name}: " + _partition_totals(
                instance, key, partitions_def.get_partition_keys(dynamic_partitions_store=instance)))
            continue
        facts = [f"{k}={s}" for k, v in metadata.items()
                 if (s := _short(v)) is not None and not k.startswith(("dagster/", "mochi/")) and k != "gate"]
        print(f"{name}: " + ("; ".join(facts) if facts else "materialized"))
        if "by_source" in metadata:
            print(f"\nTraining examples by source:\n{metadata['by_source'].value.strip()}\n")
        if name in FULL_TEXT_ASSETS:
            for v in metadata.values():
                if isinstance(v.value, str) and "\n" in v.value and "data:image" not in v.value:
                    print(f"\n{v.value.strip()}\n")
            if "gate" in metadata and "accepted" in metadata:
                verdict = "passed" if metadata["accepted"].value else "REJECTED (nothing exported)"
                print(f"Quality gate: {verdict}: {metadata['gate'].value}\n")
    print_gguf_completion(cfg)


def gguf_completion(cfg: MochiConfig, quantization: str = "q8_0", max_tokens: int = 48) -> tuple[str, str, str] | None:
    """(prompt, expected, completion) for a held-out next-line example, completed by llama.cpp from the GGUF."""
    import json

    from llama_cpp import Llama

    gguf = cfg.artifacts_path / "gguf" / "model" / f"{cfg.export.name}-{quantization}.gguf"
    eval_file = cfg.artifacts_path / "dataset" / "eval.jsonl"
    if not gguf.is_file() or not eval_file.is_file():
        return None
    with eval_file.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    row = next((r for r in rows if r["task"] == "next_line" and r["text"].endswith(r["response"])), None)
    if row is None:
        return None
    prompt = row["text"][: len(row["text"]) - len(row["response"])]
    llm = Llama(model_path=str(gguf), n_ctx=1024, seed=0, verbose=False)
    out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stop=["\n"])
    return prompt, row["response"], out["choices"][0]["text"]


def print_gguf_completion(cfg: MochiConfig) -> None:
    result = gguf_completion(cfg)
    if result is None:
        print("\n(no exported q8_0 GGUF or held-out example yet: run `mochi export`)")
        return
    prompt, expected, completion = result
    tail = "\n".join(prompt.rstrip("\n").splitlines()[-6:])
    print(f"\nllama.cpp completion from the exported q8_0 GGUF (a held-out file):\n--- prompt (last lines)\n{tail}"
          f"\n--- expected next line\n{expected.rstrip()}\n--- model\n{completion.rstrip()}\n---")
