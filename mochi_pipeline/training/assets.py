"""Dagster assets of the training layer (thin wrappers over the logic modules beside this file).

``build_defs`` makes them from the ``training`` section of mochi.yaml (presets already applied).
Each training run keeps its own directory (``<artifacts>/training/runs/<run id>``); the last model
that passed the quality gate is recorded in ``<artifacts>/training/accepted.json``: retraining
continues from it (``warm_start``) and a new model must not be worse than it to be exported.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg

from mochi_pipeline.blocking import refuse_when_blocked
from mochi_pipeline.data_generation.dataset_builder import TrainingDatasetArtifact
from mochi_pipeline.execution import CONVERT_POD, GPU_POD, GPU_POOL, training_pod
from mochi_pipeline.incremental import checked, reuse
from mochi_pipeline.io_manager import ArtifactError, read_asset_file, write_asset_file
from mochi_pipeline.metadata import png_markdown
from mochi_pipeline.paths import ProjectPaths
from mochi_pipeline.progress import step_log
from mochi_pipeline.storage import content_hash, file_lock
from mochi_pipeline.training import distributed, evaluation, merge, trainer
from mochi_pipeline.training.artifacts import (
    AcceptedModel,
    BaseModelArtifact,
    EvaluationReport,
    FineTunedAdapter,
    MergedModel,
)
from mochi_pipeline.training.base_models import BaseModelError, ResolvedBase, resolve_base
from mochi_pipeline.training.packaged_bases import PACKAGED
from mochi_pipeline.training.settings import TrainingSettings
from mochi_pipeline.training.sft_data import DatasetError, dataset_dir, load_dataset_dict
from mochi_pipeline.training.tiny_base import pretrain_report, tiny_base_key

GROUP = "training"
LOGIC_VERSION = "5"
ACCEPTED = "accepted"  # <artifacts>/training/accepted.json


def _ratio(tuned: float | None, base: float | None) -> float | str:
    return round(tuned / base, 4) if tuned is not None and base else "not measured"


def read_accepted(root: Path) -> AcceptedModel | None:
    """The last model that passed the quality gate (None before the first); a damaged record is an error, never
    read as "none": the gate would then compare with the base only, in silence."""
    path = (root / "training" / ACCEPTED).with_suffix(".json")
    if not path.exists():
        return None
    try:
        return read_asset_file(path)
    except ArtifactError as err:
        raise dg.Failure(description=f"{path} is damaged ({err}). It records the model being served, which a new "
                         "model must beat. Restore it, or delete it to compare with the base model only (the next "
                         "accepted model writes it again).") from None


def _files_there(accepted: AcceptedModel) -> bool:
    return (Path(accepted.adapter_path) / trainer.RESULT_FILE).is_file()


def build_defs(training: TrainingSettings, paths: ProjectPaths) -> dg.Definitions:
    root = paths.artifacts
    runs_dir = root / "training" / "runs"

    base_settings = training.signature("base_model", "tiny_pretrain_steps")

    # A hub model is downloaded (a network call); the offline presets are built or converted locally.
    hub = training.base_model not in ("tiny", *PACKAGED) and not Path(training.base_model).expanduser().is_dir()

    @dg.asset(group_name=GROUP, kinds={"pytorch", "huggingface"},
              code_version=f"{LOGIC_VERSION}-tiny{tiny_base_key(training.tiny_pretrain_steps)}-{base_settings}",
              pool=GPU_POOL, op_tags=GPU_POD,  # the tiny base is pre-trained here
              retry_policy=dg.RetryPolicy(max_retries=3, delay=30, backoff=dg.Backoff.EXPONENTIAL) if hub else None)
    def base_model(context: dg.AssetExecutionContext) -> Iterator:
        """The base model to fine-tune: the offline `tiny` model (built and cached once) or a hub/local model."""
        if (events := reuse(context, root, still_valid=lambda r: Path(r.path).is_dir())) is not None:
            yield from events
            return
        try:
            resolved = resolve_base(training.base_model, training.tiny_pretrain_steps, log=step_log(context))
        except BaseModelError as err:
            raise dg.Failure(description=str(err), allow_retries=err.retryable) from None
        pretraining = {}
        if training.base_model == "tiny":
            pretraining = {k: v for k, v in pretrain_report(resolved.path).items() if k != "history"}
        record = BaseModelArtifact.from_resolved(resolved, pretraining)
        yield dg.Output(record, data_version=dg.DataVersion(content_hash(record.model_dump_json())), metadata={
            "name": record.name,
            "path": dg.MetadataValue.path(record.path),
            "hf_id": record.hf_id or "(local)",
            "lora_targets": ", ".join(record.target_modules) or "(inferred when training)",
            **{f"pretraining_{k}": v for k, v in pretraining.items() if isinstance(v, int | float)},
        })

    @dg.asset(
        group_name=GROUP,
        kinds={"pytorch", "huggingface"},
        code_version=f"{LOGIC_VERSION}-{training.weights_signature()}",
        pool=GPU_POOL,
        op_tags=training_pod(training.processes),
        check_specs=[dg.AssetCheckSpec("training_loss_decreased", asset="fine_tuned_adapter",
                                       description="The last logged training loss is below the first.")],
    )
    def fine_tuned_adapter(context: dg.AssetExecutionContext, base_model: BaseModelArtifact,
                           training_dataset: TrainingDatasetArtifact) -> Iterator:
        """LoRA/QLoRA adapter (or fully fine-tuned weights) trained with TRL's SFTTrainer.

        Continues the last accepted model when training.warm_start allows it; resumes a killed run.
        """
        refuse_when_blocked(context)
        still_there = lambda r: (Path(r.path) / trainer.RESULT_FILE).is_file()  # noqa: E731
        if (events := reuse(context, root, still_valid=still_there)) is not None:
            yield from events
            return
        accepted = read_accepted(root) if training.warm_start else None
        init_from, start = None, "the base model (training.warm_start is off)"
        if accepted is not None and not _files_there(accepted):
            start = f"the base model: the accepted model's files at {accepted.adapter_path} are gone"
        elif accepted is not None:
            why_not = trainer.warm_start_refusal(Path(accepted.adapter_path), base_model.resolved(), training)
            if why_not:
                start = f"the base model: the accepted model of run {accepted.run_id} cannot be continued ({why_not})"
            else:
                init_from, start = Path(accepted.adapter_path), f"the accepted model of run {accepted.run_id}"
        elif training.warm_start:
            start = "the base model (no accepted model yet)"
        context.log.info(f"Training starts from {start}")
        # One training of this project at a time, whoever started it (two `mochi run`s, the nightly schedule and
        # the UI): two trainings of the same run would write, resume and remove one checkpoint folder together.
        with file_lock(runs_dir / ".training.lock"):
            try:
                if training.processes > 1:
                    result = distributed.train_launched(dataset_dir(training_dataset), base_model.resolved(),
                                                        training, runs_dir, init_from=init_from,
                                                        log=step_log(context))
                else:
                    result = trainer.train(load_dataset_dict(training_dataset), base_model.resolved(), training,
                                           runs_dir, log=step_log(context), init_from=init_from)
            except (DatasetError, trainer.TrainingError, BaseModelError) as err:
                raise dg.Failure(description=str(err)) from None
            protect = {result.run_id} | ({accepted.run_id} if accepted else set())
            pruned = trainer.prune_runs(runs_dir, training.keep_runs, protect)
        final = Path(result.output_dir)
        digest = trainer.weights_hash(final)
        record = FineTunedAdapter(
            path=str(final), method=result.method, base=base_model, dataset_path=training_dataset.path,
            global_step=result.global_step, first_train_loss=result.first_train_loss,
            last_train_loss=result.last_train_loss, best_eval_loss=result.best_eval_loss,
            trainable_parameters=result.trainable_parameters, content_hash=digest, run_id=result.run_id,
            warm_start_from=result.warm_start_from,
        )
        curve = final / trainer.CURVE_FILE
        output = dg.Output(record, data_version=dg.DataVersion(digest), metadata={
            "path": dg.MetadataValue.path(str(final)),
            "run_id": result.run_id,
            "method": result.method,
            "started_from": start,
            "steps": result.global_step,
            "epochs": result.epochs,
            "train_examples": result.n_train,
            "eval_examples": result.n_eval,
            "trainable_parameters": result.trainable_parameters,
            "first_train_loss": result.first_train_loss,
            "last_train_loss": result.last_train_loss,
            "best_eval_loss": result.best_eval_loss,
            "resumed_from": result.resumed_from or "(fresh run)",
            "pruned_runs": len(pruned),
            "seconds": result.seconds,
            "loss_curve": png_markdown(curve.read_bytes(), "loss curve"),
            "loss_curve_png": dg.MetadataValue.path(str(curve)),
        })
        first, last = result.first_train_loss, result.last_train_loss
        yield from checked(output, [dg.AssetCheckResult(
            check_name="training_loss_decreased",
            passed=first is not None and last is not None and last < first,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"first": first, "last": last},
        )])

    gate_severity = dg.AssetCheckSeverity.ERROR if training.quality_gate else dg.AssetCheckSeverity.WARN

    @dg.asset(
        group_name=GROUP,
        kinds={"pytorch"},
        code_version=f"{LOGIC_VERSION}-" + training.signature(
            "seed", "max_seq_length", "method", "eval_max_examples", "quality_gate",
            "gate_tolerance"),
        pool=GPU_POOL,  # two models loaded; QLoRA ones on the GPU
        op_tags=GPU_POD,
        check_specs=[dg.AssetCheckSpec(
            "quality_gate", asset="evaluation_report", blocking=True,
            description="Held-out perplexity below the base model's and not worse than the accepted model's "
                        "(beyond training.gate_tolerance). Failing blocks merge and export.",
        )],
    )
    def evaluation_report(context: dg.AssetExecutionContext, base_model: BaseModelArtifact,
                          fine_tuned_adapter: FineTunedAdapter, training_dataset: TrainingDatasetArtifact) -> Iterator:
        """Base vs fine-tuned (vs the model it would replace) on the held-out split, and the quality gate."""
        refuse_when_blocked(context)
        if (events := reuse(context, root)) is not None:
            yield from events
            return
        final = Path(fine_tuned_adapter.path)
        accepted = read_accepted(root)
        previous, previous_base, not_compared = None, None, ""
        if accepted is not None and Path(accepted.adapter_path) != final:
            earlier = trainer.TrainingResult.load(accepted.adapter_path).base_path if _files_there(accepted) else None
            if earlier is None:
                not_compared = f"its files at {accepted.adapter_path} are gone"
            elif earlier == base_model.path:
                previous = accepted
            elif accepted.method == "full" or (earlier and Path(earlier).is_dir()):  # bits per byte, own tokenizers
                previous, previous_base = accepted, ResolvedBase(f"the base at {earlier}", earlier, "", (), None, None)
            else:
                not_compared = f"it was trained on another base, whose files at {earlier or '(unrecorded)'} are gone"
        if not_compared:
            not_compared = (f"Not compared with the model being served (accepted in run {accepted.run_id}): "
                            f"{not_compared}. The gate compared with the base model only.")
            context.log.warning(not_compared)
        out_dir = final.parent / "evaluation"
        try:
            report = evaluation.evaluate(
                load_dataset_dict(training_dataset), base_model.resolved(), final, fine_tuned_adapter.method,
                training, out_dir, log=step_log(context), cache_dir=runs_dir.parent / "base_scores",
                previous=Path(previous.adapter_path) if previous else None,
                previous_method=previous.method if previous else "", previous_base=previous_base,
            )
        except (DatasetError, ValueError) as err:
            raise dg.Failure(description=str(err)) from None
        passed, reason = evaluation.gate(report, training.gate_tolerance)
        accepted_now = passed or not training.quality_gate
        if accepted_now:
            write_asset_file(root / "training" / ACCEPTED, AcceptedModel(
                adapter_path=str(final), method=fine_tuned_adapter.method, run_id=fine_tuned_adapter.run_id,
                perplexity=report["fine_tuned"]["overall"]["perplexity"]))
        markdown = (out_dir / evaluation.REPORT_MD).read_text(encoding="utf-8") + (f"\n{not_compared}\n"
                                                                                     if not_compared else "")
        record = EvaluationReport(path=str(out_dir), markdown=markdown, metrics=report,
                                  fine_tuned_better=report["fine_tuned_better"], accepted=accepted_now,
                                  gate_reason=reason, adapter_path=str(final))
        overall = {name: (report[name] or {}).get("overall", {}) for name in ("base", "fine_tuned", "previous")}
        output = dg.Output(record, data_version=dg.DataVersion(content_hash(record.model_dump_json())), metadata={
            "report": dg.MetadataValue.md(markdown),
            "plot": png_markdown((out_dir / evaluation.REPORT_PNG).read_bytes(), "perplexity per task"),
            "plot_png": dg.MetadataValue.path(str(out_dir / evaluation.REPORT_PNG)),
            "perplexity_base": overall["base"].get("perplexity"),
            "perplexity_fine_tuned": overall["fine_tuned"].get("perplexity"),
            "perplexity_replaced": overall["previous"].get("perplexity") if previous else "(no earlier model)",
            "perplexity_ratio": _ratio(overall["fine_tuned"].get("perplexity"), overall["base"].get("perplexity")),
            "bits_per_byte_base": overall["base"].get("bits_per_byte"),
            "bits_per_byte_fine_tuned": overall["fine_tuned"].get("bits_per_byte"),
            "token_accuracy_base": overall["base"].get("token_accuracy"),
            "token_accuracy_fine_tuned": overall["fine_tuned"].get("token_accuracy"),
            "eval_examples": report["n_examples"],
            "accepted": accepted_now,
            "gate": reason,
        })
        consequence = ("" if passed else " Merge and export are blocked; the model exported before stays in place."
                       if training.quality_gate else " (training.quality_gate is off: exported anyway.)")
        yield from checked(output, [dg.AssetCheckResult(
            check_name="quality_gate", passed=passed, severity=gate_severity,
            description=f"{reason[0].upper()}{reason[1:]}.{consequence}" + (f" {not_compared}" if not_compared else ""),
            metadata={"perplexity_base": overall["base"].get("perplexity"),
                      "perplexity_fine_tuned": overall["fine_tuned"].get("perplexity"),
                      "perplexity_replaced": overall["previous"].get("perplexity") if previous else None},
        )])

    @dg.asset(group_name=GROUP, kinds={"pytorch", "safetensors"}, code_version=LOGIC_VERSION, pool=GPU_POOL,
              op_tags=CONVERT_POD)
    def merged_model(context: dg.AssetExecutionContext, base_model: BaseModelArtifact,
                     fine_tuned_adapter: FineTunedAdapter, evaluation_report: EvaluationReport) -> Iterator:
        """The accepted adapter merged into the base: one safetensors checkpoint with tokenizer and model card."""
        refuse_when_blocked(context)
        if not evaluation_report.accepted:
            raise dg.Failure(description=evaluation_report.rejection())
        if (events := reuse(context, root, still_valid=lambda r: Path(r.path).is_dir())) is not None:
            yield from events
            return
        out_dir = root / "training" / "merged"
        context.log.info(f"Merging {fine_tuned_adapter.path} into {base_model.path}")
        merge.merge(
            base_model.resolved(), Path(fine_tuned_adapter.path), fine_tuned_adapter.method, out_dir,
            data_description=f"mochi training_dataset at {fine_tuned_adapter.dataset_path}",
            metrics={k: evaluation_report.metrics[k]["overall"] for k in ("base", "fine_tuned")},
        )
        digest = trainer.weights_hash(out_dir)
        record = MergedModel(path=str(out_dir), base_name=base_model.name, method=fine_tuned_adapter.method,
                             content_hash=digest)
        size = sum(p.stat().st_size for p in out_dir.glob("*.safetensors"))
        yield dg.Output(record, data_version=dg.DataVersion(digest), metadata={
            "path": dg.MetadataValue.path(str(out_dir)),
            "from_run": fine_tuned_adapter.run_id,
            "safetensors_mb": round(size / 2**20, 2),
            "model_card": dg.MetadataValue.md((out_dir / "README.md").read_text(encoding="utf-8")),
        })

    return dg.Definitions(assets=[base_model, fine_tuned_adapter, evaluation_report, merged_model])
