"""Dagster assets of the deployment layer (thin wrappers over the logic modules beside this file).

``build_defs`` makes them from the ``export`` section of mochi.yaml. ``gguf_model``: the merged
model as GGUF files (one per quantization), checked against transformers by
``gguf_matches_transformers``; ``gguf_lora_adapter``: the adapter alone as a GGUF LoRA plus the
base it applies to; ``ollama_modelfile``: ready for ``ollama create``; ``assist_evaluation``: how
well the exported model reranks held-out changes (assist.py); ``completion_evaluation``: how well it
completes held-out lines and middles (completion_eval.py), each next to the base model. Only a
model that passed the quality gate reaches them; otherwise the files exported before stay as they are.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from mochi_pipeline.blocking import refuse_when_blocked
from mochi_pipeline.data_generation.dataset_builder import TrainingDatasetArtifact
from mochi_pipeline.deployment.assist import Assistant
from mochi_pipeline.deployment.assist_eval import evaluate_rerank
from mochi_pipeline.deployment.exporter import modelfile_source, write_modelfile
from mochi_pipeline.deployment.fault_eval import evaluate_faults
from mochi_pipeline.deployment.gguf_export import GGUFExport, GGUFLoraAdapter, export_gguf, export_lora
from mochi_pipeline.deployment.gguf_verify import Reference, VerificationReport, verify_export, verify_gguf
from mochi_pipeline.deployment.settings import ExportSettings
from mochi_pipeline.deployment.significance import SIGNIFICANCE, binomial_tail
from mochi_pipeline.execution import CONVERT_POD, GPU_POOL
from mochi_pipeline.incremental import checked, reuse
from mochi_pipeline.metadata import png_markdown
from mochi_pipeline.paths import ProjectPaths
from mochi_pipeline.preprocessing.conventions import ProjectConventions
from mochi_pipeline.progress import step_log
from mochi_pipeline.storage import atomic_write_bytes, content_hash, file_sha256
from mochi_pipeline.training.artifacts import EvaluationReport, FineTunedAdapter, MergedModel
from mochi_pipeline.training.plots import comparison_png
from mochi_pipeline.training.sft_data import load_dataset_dict

GROUP = "deployment"
LOGIC_VERSION = "3"
GGUF_DIR = "gguf"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _verification_metadata(report: VerificationReport) -> dict[str, Any]:
    return {
        "verification": dg.MetadataValue.md(report.markdown()),
        "passed": report.passed,
        **{f"max_abs_diff_{c.quantization}": c.max_abs_diff for c in report.checks},
        **{f"top1_agreement_{c.quantization}": c.top1_agreement for c in report.checks},
    }


def _files_exist(*paths: str) -> bool:
    return all(Path(p).is_file() for p in paths)


def build_defs(export: ExportSettings, paths: ProjectPaths, adapter: bool = True) -> dg.Definitions:
    """``adapter``: training makes an adapter (LoRA, QLoRA), so base + adapter in llama.cpp can be checked against
    the merged model; a full fine-tune has none, and no such check (it would measure nothing)."""
    root = paths.artifacts

    @dg.asset(
        group_name=GROUP,
        kinds={"gguf", "llamacpp"},
        code_version=f"{LOGIC_VERSION}-{export.signature('quantizations', 'model_name')}",
        pool=GPU_POOL,  # a whole model in memory, like training
        op_tags=CONVERT_POD,
        # Blocking: a GGUF that does not run like the model it came from is never served or evaluated. Checked in
        # the asset's own step, so the automation sees the check coming with the asset in one tick.
        check_specs=[dg.AssetCheckSpec(
            "gguf_matches_transformers", asset="gguf_model", blocking=True,
            description="llama.cpp runs each GGUF like transformers runs the merged model: same token ids, float "
                        "logits within tolerance, quantized top-1 agreement, chat template and eos kept.")],
    )
    def gguf_model(context: dg.AssetExecutionContext, merged_model: MergedModel) -> Iterator:
        """The merged fine-tuned model as GGUF files (export.quantizations), converted by llama.cpp's own
        converter; q4_k_m by the llama.cpp runtime where the architecture allows it."""
        still_there = lambda r: _files_exist(*(f.path for f in r.files))  # noqa: E731
        if (events := reuse(context, root, still_valid=still_there)) is not None:
            yield from events
            return
        out_dir = paths.path(GGUF_DIR, "model")
        result = export_gguf(Path(merged_model.path), out_dir, export.quantizations, name=export.name,
                             log=step_log(context)).model_copy(update={"base_name": merged_model.base_name})
        sizes = "\n".join(f"| {f.quantization} | {_mib(f.size_bytes)} | `{Path(f.path).name}` |" for f in result.files)
        skipped = "\n".join(f"- **{q}**: {why}" for q, why in result.skipped.items()) or "none"
        version = content_hash(*(file_sha256(f.path) for f in result.files))
        output = dg.Output(result, data_version=dg.DataVersion(version), metadata={
            "files": dg.MetadataValue.md(f"| quantization | size | file |\n|---|---|---|\n{sizes}"),
            "skipped": dg.MetadataValue.md(skipped),
            "directory": dg.MetadataValue.path(result.directory),
            **{f"size_bytes_{f.quantization}": f.size_bytes for f in result.files},
        })
        files = {f.quantization: Path(f.path) for f in result.files}
        context.log.info(f"Comparing {sorted(files)} with {merged_model.path}")
        report = verify_export(Path(merged_model.path), files, export.tolerances())
        yield from checked(output, [dg.AssetCheckResult(
            check_name="gguf_matches_transformers", passed=report.passed, severity=dg.AssetCheckSeverity.ERROR,
            metadata=_verification_metadata(report))])

    @dg.asset(
        group_name=GROUP,
        kinds={"gguf", "llamacpp"},
        code_version=f"{LOGIC_VERSION}-{export.signature('model_name', 'lora_outtype')}",
        pool=GPU_POOL,  # a whole model in memory, like training
        op_tags=CONVERT_POD,
        check_specs=[dg.AssetCheckSpec("lora_reproduces_merged_model", asset="gguf_lora_adapter",
                                       description="Base GGUF + LoRA GGUF in llama.cpp = base + adapter merged "
                                                   "in transformers.")] if adapter else [],
    )
    def gguf_lora_adapter(context: dg.AssetExecutionContext, fine_tuned_adapter: FineTunedAdapter,
                          evaluation_report: EvaluationReport) -> Iterator:
        """The accepted LoRA adapter as a GGUF LoRA (llama.cpp `--lora`) plus its base model as GGUF."""
        refuse_when_blocked(context)
        if not evaluation_report.accepted:
            raise dg.Failure(description=evaluation_report.rejection())
        still_there = lambda r: r.skipped or _files_exist(r.path, r.base_gguf_path)  # noqa: E731
        if (events := reuse(context, root, still_valid=still_there)) is not None:
            yield from events
            return
        if (fine_tuned_adapter.method == "full") == adapter:  # mochi.yaml changed since: its check is another one
            raise dg.Failure(description=f"fine_tuned_adapter was trained with method '{fine_tuned_adapter.method}', "
                             "but training.method in mochi.yaml is now another: rebuild fine_tuned_adapter first "
                             "(`mochi run`).")
        if fine_tuned_adapter.method == "full":
            reason = "training.method is 'full': the whole model was trained, there is no adapter (use gguf_model)."
            context.log.info(reason)
            yield dg.Output(GGUFLoraAdapter(skipped=reason), data_version=dg.DataVersion(content_hash(reason)),
                            metadata={"skipped": reason})
            return
        adapter_dir, base_dir = Path(fine_tuned_adapter.path), Path(fine_tuned_adapter.base.path)
        result = export_lora(adapter_dir, base_dir, paths.path(GGUF_DIR, "lora"), name=export.name,
                             outtype=export.lora_outtype, log=context.log.info)
        version = content_hash(file_sha256(result.path), file_sha256(result.base_gguf_path))
        output = dg.Output(result, data_version=dg.DataVersion(version), metadata={
            "adapter_size": _mib(result.size_bytes),
            "base_size": _mib(result.base_size_bytes),
            "adapter": dg.MetadataValue.path(result.path),
            "base": dg.MetadataValue.path(result.base_gguf_path),
            "usage": dg.MetadataValue.md(f"`llama-server -m {result.base_gguf_path} --lora {result.path}`"),
        })
        context.log.info("Comparing base + LoRA in llama.cpp with the merged adapter in transformers")
        check = verify_gguf(Reference.from_adapter(base_dir, adapter_dir), Path(result.base_gguf_path),
                            result.outtype, export.tolerances(), lora_path=Path(result.path))
        report = VerificationReport(checks=[check])
        yield from checked(output, [dg.AssetCheckResult(
            check_name="lora_reproduces_merged_model", passed=check.passed, severity=dg.AssetCheckSeverity.ERROR,
            metadata=_verification_metadata(report))])

    modelfile_settings = export.signature("model_name", "ollama_quantization", "system_prompt", "temperature",
                                          "top_p", "num_ctx", "ollama_template")

    @dg.asset(group_name=GROUP, kinds={"ollama"}, code_version=f"{LOGIC_VERSION}-{modelfile_settings}")
    def ollama_modelfile(context: dg.AssetExecutionContext, gguf_model: GGUFExport) -> Iterator:
        """An Ollama Modelfile next to the GGUF files: FROM, TEMPLATE from the model's chat template, stop tokens,
        SYSTEM and sampling parameters. Register it with `ollama create`."""
        refuse_when_blocked(context)
        if (events := reuse(context, root, still_valid=lambda r: _files_exist(r.path))) is not None:
            yield from events
            return
        record = write_modelfile(gguf_model, Path(gguf_model.directory), export)
        text = Path(record.path).read_text(encoding="utf-8")
        context.log.info(f"Wrote {record.path}; register it with: {record.create_command}")
        # The model `ollama create` makes from it changes with the GGUF it names, not only with its text.
        version = content_hash(text, file_sha256(record.gguf_path))
        yield dg.Output(record, data_version=dg.DataVersion(version), metadata={
            "modelfile": dg.MetadataValue.md(f"```\n{text}\n```"),
            "create_command": record.create_command,
            "stop_tokens": ", ".join(record.stop),
        })

    # A multi_asset only so that rerank_beats_chance can be skipped (left out) when too few cases were measured to
    # tell anything: can_subset makes its result optional, and Dagster then shows the check as skipped, not passed.
    @dg.multi_asset(
        outs={"assist_evaluation": dg.AssetOut(
            group_name=GROUP, kinds={"llamacpp"},
            code_version=f"{LOGIC_VERSION}-{export.signature('assist_candidates', 'assist_max_cases')}",
            description="How well the exported model reranks: for held-out later commits, the real change among "
                        "export.assist_candidates - 1 changes of other commits, scored by llama.cpp (top-1 accuracy "
                        "vs chance), and how well verify flags a fault planted in held-out functions (against a "
                        "random pick); each next to the base model (its GGUF from gguf_lora_adapter) on the same "
                        "cases.")},
        check_specs=[dg.AssetCheckSpec("rerank_beats_chance", asset="assist_evaluation",
                                       description="Reranking held-out changes among distractors, the exported "
                                                   "model puts the real one first more often than chance.")],
        can_subset=True,
    )
    def assist_evaluation(context: dg.AssetExecutionContext, gguf_model: GGUFExport,
                          gguf_lora_adapter: GGUFLoraAdapter, training_dataset: TrainingDatasetArtifact) -> Iterator:
        refuse_when_blocked(context)
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        from mochi_pipeline.deployment.server import ModelServer

        rows = list(load_dataset_dict(training_dataset)["eval"])
        servers = [ModelServer(modelfile_source(gguf_model, export), model_id=export.name, n_ctx=export.n_ctx)]
        if gguf_lora_adapter.base_gguf_path:
            servers.append(ModelServer(gguf_lora_adapter.base_gguf_path, model_id="base", n_ctx=export.n_ctx))
        try:
            tuned, *base = (Assistant([], ProjectConventions(), server) for server in servers)
            report = evaluate_rerank(tuned, rows, k=export.assist_candidates, max_cases=export.assist_max_cases,
                                     log=context.log.info, baseline=base[0] if base else None)
            context.log.info("verify: planting one fault in each of the held-out functions")
            faults = evaluate_faults(tuned, rows, base[0] if base else None, max_cases=export.assist_max_cases)
        finally:
            for server in servers:
                server.close()
        report = report.model_copy(update={"verify": faults})
        if not base:
            why = f"no base GGUF ({gguf_lora_adapter.skipped or 'gguf_lora_adapter made none'})"
            report = report.model_copy(update={"base_skipped": why})
        context.log.info(report.markdown())
        metadata: dict[str, Any] = {"report": dg.MetadataValue.md(report.markdown()), "cases": report.n_cases,
                                    "candidates": report.candidates, "chance": report.chance}
        if not faults.skipped:
            metadata.update({"verify_cases": faults.n, "verify_hit_rate": faults.hit_rate,
                             "verify_random_hit_rate": faults.random_hit_rate,
                             "verify_base_hit_rate": faults.base_hit_rate if faults.base_hit_rate is not None
                             else "not measured"})
        if report.accuracy is not None:
            groups = [*report.by_task, "all"]
            png = comparison_png(groups, [report.chance] * len(groups),
                                 [*(v["accuracy"] for v in report.by_task.values()), report.accuracy],
                                 "top-1 accuracy", "Rerank of held-out changes", labels=("chance", "exported model"))
            plot = atomic_write_bytes(paths.path("reports", "assist_evaluation.png"), png)
            metadata.update({"accuracy": report.accuracy, "mrr": report.mrr, "p_value": report.p_value,
                             "base_accuracy": report.base_accuracy if report.base_accuracy is not None else
                             report.base_skipped,
                             "p_value_vs_base": report.p_value_vs_base if report.p_value_vs_base is not None else
                             "not measured",
                             "example": dg.MetadataValue.json(report.example),
                             "plot": png_markdown(png, "rerank accuracy vs chance"),
                             "plot_png": dg.MetadataValue.path(str(plot))})
        # Passed only on a gain over chance that is significant (one-sided binomial p < 0.01): an ERROR with a real
        # base; the `tiny` base is known to rerank at chance, so a WARN there. Skipped when even a perfect score on
        # the cases measured could not be significant: it would say nothing.
        at_chance = gguf_model.base_name in ("", "tiny")
        if report.skipped or binomial_tail(report.n_cases, report.n_cases, report.chance) >= SIGNIFICANCE:
            why = report.skipped or (f"{report.n_cases} case(s) cannot show a gain over a chance of "
                                     f"{report.chance:.0%} at p < {SIGNIFICANCE}")
            context.log.warning(f"rerank_beats_chance skipped: {why}")
            yield dg.Output(report, output_name="assist_evaluation", metadata={**metadata, "check_skipped": why},
                            data_version=dg.DataVersion(content_hash(report.model_dump_json())))
            return
        output = dg.Output(report, output_name="assist_evaluation", metadata=metadata,
                           data_version=dg.DataVersion(content_hash(report.model_dump_json())))
        yield from checked(output, [dg.AssetCheckResult(
            asset_key="assist_evaluation", check_name="rerank_beats_chance", passed=report.p_value < SIGNIFICANCE,
            severity=dg.AssetCheckSeverity.WARN if at_chance else dg.AssetCheckSeverity.ERROR,
            description=f"top-1 {report.accuracy:.0%} of {report.n_cases} vs chance {report.chance:.0%}, "
                        f"p = {report.p_value:.2g} (needs < {SIGNIFICANCE})",
            metadata={"accuracy": report.accuracy, "chance": report.chance, "cases": report.n_cases,
                      "p_value": report.p_value})])

    @dg.asset(group_name=GROUP, kinds={"llamacpp"},
              code_version=f"{LOGIC_VERSION}-{export.signature('completion_max_cases')}")
    def completion_evaluation(context: dg.AssetExecutionContext, gguf_model: GGUFExport,
                              gguf_lora_adapter: GGUFLoraAdapter,
                              training_dataset: TrainingDatasetArtifact) -> Iterator:
        """How well the exported model completes held-out code as `mochi serve` does (greedy, llama.cpp): the next
        line after the code before it, and the middle between a prefix and a suffix (/infill), exact match and edit
        similarity next to the base model's (its GGUF from gguf_lora_adapter) on the same cases."""
        refuse_when_blocked(context)
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        from mochi_pipeline.deployment.completion_eval import CONTEXT, evaluate_completion
        from mochi_pipeline.deployment.server import ModelServer

        rows = list(load_dataset_dict(training_dataset)["eval"])
        tuned = ModelServer(modelfile_source(gguf_model, export), model_id=export.name, n_ctx=CONTEXT)
        base = (ModelServer(gguf_lora_adapter.base_gguf_path, model_id="base", n_ctx=CONTEXT)
                if gguf_lora_adapter.base_gguf_path else None)
        try:
            report = evaluate_completion(tuned, rows, base, max_cases=export.completion_max_cases,
                                         log=context.log.info)
        finally:
            for server in (tuned, base):
                if server is not None:
                    server.close()
        if base is None:
            why = f"no base GGUF ({gguf_lora_adapter.skipped or 'gguf_lora_adapter made none'})"
            report = report.model_copy(update={"base_skipped": why})
        context.log.info(report.markdown())
        metadata: dict[str, Any] = {"report": dg.MetadataValue.md(report.markdown()),
                                    "completions_side_by_side": dg.MetadataValue.json(report.samples)}
        for s in report.scores:
            metadata.update({f"{s.task}_cases": s.n, f"{s.task}_exact_match": s.exact_match,
                             f"{s.task}_base_exact_match": s.base_exact_match if s.base_exact_match is not None
                             else "not measured",
                             f"{s.task}_edit_similarity": s.edit_similarity})
        if report.scores and base is not None:
            tasks = [s.task for s in report.scores]
            png = comparison_png(tasks, [s.base_exact_match or 0.0 for s in report.scores],
                                 [s.exact_match for s in report.scores], "exact match",
                                 "Completion of held-out code", labels=("base", "exported model"))
            plot = atomic_write_bytes(paths.path("reports", "completion_evaluation.png"), png)
            metadata.update({"plot": png_markdown(png, "exact match, base vs fine-tuned"),
                             "plot_png": dg.MetadataValue.path(str(plot))})
        yield dg.Output(report, data_version=dg.DataVersion(content_hash(report.model_dump_json())),
                        metadata=metadata)

    return dg.Definitions(
        assets=[gguf_model, gguf_lora_adapter, ollama_modelfile, assist_evaluation, completion_evaluation])
