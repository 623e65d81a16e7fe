"""The ``mochi`` command: init, run, status, report, export, serve, mcp, ui.

Every command works on the project found from the current directory (or ``--config``) and keeps
Dagster's run history in ``$DAGSTER_HOME`` or ``<artifacts>/dagster_home``, so the web UI and the
command line see the same runs and the same staleness.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from mochi_pipeline.config import CONFIG_ENV, CONFIG_FILE, ConfigError, MochiConfig, load_config
from mochi_pipeline.ingestion.git_urls import redact
from mochi_pipeline.storage import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parent.parent  # the mochi checkout (workspace.yaml, dagster.yaml)
EXPORT_ASSETS = ("gguf_model", "gguf_lora_adapter", "ollama_modelfile")


class CLIError(Exception):
    """An error already worded for the person at the terminal."""


# --- shared plumbing -------------------------------------------------------------------------


def _dagster_home(cfg: MochiConfig) -> Path:
    home = Path(os.environ.get("DAGSTER_HOME") or cfg.artifacts_path / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    template = REPO_ROOT / "dagster.yaml"
    if template.is_file() and not (home / "dagster.yaml").exists():
        shutil.copyfile(template, home / "dagster.yaml")
    return home


def _instance(cfg: MochiConfig):
    import dagster as dg

    os.environ["DAGSTER_HOME"] = str(_dagster_home(cfg))
    return dg.DagsterInstance.get()


def _defs(cfg: MochiConfig):
    from mochi_pipeline.definitions import build_defs

    return build_defs(cfg)


def _observe_sources(cfg: MochiConfig, instance) -> str:
    """Record the commit repo.rev points at now (with code_chunks' partitions there) and when the trackers last
    changed, as the sensors do; returns the commit."""
    _observe_trackers(cfg, instance)
    import dagster as dg

    from mochi_pipeline.automation import code_partitions_at
    from mochi_pipeline.ingestion.assets import observe_commit, record_commit
    from mochi_pipeline.preprocessing.assets import register_code_partitions

    try:
        sha, metadata = observe_commit(cfg.repo, cfg.paths)
        partitions = code_partitions_at(cfg.repo, cfg.sources, cfg.chunking, cfg.paths, sha)
    except dg.Failure as err:
        raise CLIError(err.description) from None
    record_commit(instance, sha, metadata)
    register_code_partitions(instance, partitions)
    return sha


def _observe_trackers(cfg: MochiConfig, instance) -> None:
    """Record when the configured trackers and CI systems last changed (as the tracker sensor does)."""
    import dagster as dg

    from mochi_pipeline.ingestion.assets import MissingToken, observe_activity, record_activity, service_resources

    try:
        resources = service_resources(cfg.trackers, cfg.ci, environ=os.environ)
    except MissingToken as err:
        raise CLIError(str(err)) from None
    if not resources:
        return
    try:
        record_activity(instance, *observe_activity(resources))
    except dg.Failure as err:  # a tracker that is down must not stop the rest: its assets keep their last state
        print(f"Warning: could not look at the trackers and CI systems: {err.description}", file=sys.stderr)


def _plan(defs, instance, wanted: set | None = None) -> tuple[list, list[str]]:
    """Assets to run so everything (or ``wanted``) is up to date, in order, and notes for the person.

    That is what Dagster calls stale or missing plus everything below it, less what lies below a failed
    blocking check (a leak found in the dataset, a model the quality gate rejected, a GGUF that failed
    verification): it stays held back until the asset the check is on is rebuilt and passes.
    """
    from mochi_pipeline.dagster_internals import asset_statuses

    statuses = asset_statuses(defs, instance)
    keys = [k for k, st in statuses.items() if st.needs_run and (wanted is None or k in wanted)]
    keys = [k for k in keys if not _no_partitions(defs, instance, k)]
    return _held_back(defs, instance, keys)


def _held_back(defs, instance, keys: list) -> tuple[list, list[str]]:
    from mochi_pipeline.blocking import held_back

    return held_back(defs.resolve_asset_graph(), instance, keys)


def _no_partitions(defs, instance, key) -> bool:
    """A partitioned asset with no partition now (code_chunks of a repository without code): nothing to run."""
    partitions_def = defs.resolve_asset_graph().get(key).partitions_def
    return partitions_def is not None and not partitions_def.get_partition_keys(dynamic_partitions_store=instance)


def _partition_range(defs, instance, keys: Sequence) -> dict[str, str]:
    """Run tags covering every partition of the partitioned assets among ``keys`` (code_chunks), in this one run."""
    from mochi_pipeline.dagster_internals import partition_range_tags

    graph = defs.resolve_asset_graph()
    for key in keys:
        partitions_def = graph.get(key).partitions_def
        if partitions_def is not None:
            partitions = partitions_def.get_partition_keys(dynamic_partitions_store=instance)
            return partition_range_tags(partitions)
    return {}


def _select(defs, names: Sequence[str]) -> list:
    graph = defs.resolve_asset_graph()
    known = {k.to_user_string(): k for k in graph.materializable_asset_keys}
    keys = []
    for name in names:
        upstream = name.startswith("+")
        key = known.get(name.lstrip("+"))
        if key is None:
            raise CLIError(f"Unknown asset '{name.lstrip('+')}'. Known assets: {', '.join(sorted(known))}.")
        keys.append(key)
        if upstream:
            keys.extend(k for k in graph.get_ancestor_asset_keys(key) if k in known.values())
    order = {k: i for i, k in enumerate(graph.toposorted_asset_keys)}
    return sorted(set(keys), key=order.__getitem__)


def _failure_reasons(result) -> list[str]:
    import dagster as dg

    reasons = []
    for event in result.all_events:
        if event.event_type_value == dg.DagsterEventType.STEP_FAILURE.value:
            err = event.step_failure_data.error
            while err.cause is not None and err.cls_name in ("DagsterExecutionStepExecutionError",):
                err = err.cause
            if err.cls_name == "DagsterAssetCheckFailedError":  # the failed check itself is listed below
                continue
            reasons.append(f"{event.step_key}: {err.message.strip()}")
    for check in result.get_asset_check_evaluations():
        if not check.passed and check.severity == dg.AssetCheckSeverity.ERROR:
            reasons.append(f"check {check.check_name} on {check.asset_key.to_user_string()} failed: "
                           f"{check.description or 'see its metadata in the UI'}")
    return reasons


PID_TAG = "mochi/pid"


def _fail_orphaned_runs(instance) -> None:
    """Runs of a `mochi` process that was killed stay STARTED forever: mark them failed, saying why."""
    import dagster as dg

    from mochi_pipeline.dagster_internals import free_pool_slots

    for run in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        pid = int(run.tags.get(PID_TAG, "0") or 0)
        if not pid:
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            instance.report_run_failed(run, message=f"The mochi process running it (pid {pid}) ended without "
                                                    "finishing it (killed?). Finished steps are kept; `mochi run` "
                                                    "resumes from them.")
            free_pool_slots(instance, run.run_id)
        except PermissionError:  # alive, another user's
            pass


def _execute(defs, instance, keys: list, tags: dict[str, str], notes: Sequence[str], log_dir: Path) -> None:
    """Run ``keys`` in one Dagster run in this process, shown by ``RunDisplay``; raise CLIError if it failed."""
    import uuid

    from mochi_pipeline.run_display import RunDisplay

    for note in notes:
        print(note)
    _fail_orphaned_runs(instance)
    if not keys:
        print("Nothing else to run." if notes else "Nothing to do: every asset is up to date.")
        return
    keys = [k for k in keys if not _no_partitions(defs, instance, k)]
    tags = {**tags, **_partition_range(defs, instance, keys), PID_TAG: str(os.getpid())}
    names = [k.to_user_string() for k in keys]
    print(f"Materializing {len(keys)} asset(s): {', '.join(names)}", flush=True)
    run_id = str(uuid.uuid4())
    log_path = log_dir / f"run-{run_id}.log"
    display = RunDisplay(names, sys.stdout, live=_is_terminal(sys.stdout), log_path=log_path)
    job = defs.resolve_implicit_global_asset_job_def().with_logger_defs({"mochi": display.logger_definition()})
    with display.showing():
        result = job.execute_in_process(
            instance=instance,
            asset_selection=keys,
            raise_on_error=False,
            tags=tags,
            run_id=run_id,
            run_config={"loggers": {"mochi": {}}},
        )
    print(display.summary(), flush=True)
    if not result.success:
        from mochi_pipeline.dagster_internals import interrupted

        if interrupted(result):  # Ctrl-C: Dagster made the signal a failed step; say it as an interruption
            raise KeyboardInterrupt
        raise CLIError("The run failed.\n" + "\n".join(_failure_reasons(result))
                       + f"\nRun id: {result.run_id} (details in `mochi ui`).")
    if reasons := _failure_reasons(result):  # every step ran, but a check of ERROR severity failed
        raise CLIError("The run finished, but:\n" + "\n".join(reasons)
                       + f"\nRun id: {result.run_id} (details in `mochi ui`).")


def _is_terminal(stream) -> bool:
    return stream.isatty() and os.environ.get("TERM", "") != "dumb"


# --- commands --------------------------------------------------------------------------------


def cmd_init(args) -> None:
    from mochi_pipeline.config_template import render_template

    target = Path(args.path).resolve() / CONFIG_FILE
    if target.exists() and not args.force:
        raise CLIError(f"{target} already exists. Use --force to overwrite it.")
    atomic_write_text(target, render_template())
    gitignore = target.parent / ".gitignore"
    lines = gitignore.read_text().splitlines() if gitignore.exists() else []
    if ".mochi/" not in lines:
        atomic_write_text(gitignore, "\n".join([*lines, ".mochi/"]) + "\n")
    print(f"Wrote {target}. Edit it, then run `mochi run`.")


def cmd_run(args) -> None:
    from mochi_pipeline.incremental import FORCE_TAG
    from mochi_pipeline.ingestion.assets import COMMIT_TAG

    cfg = load_config()
    defs, instance = _defs(cfg), _instance(cfg)
    tags = {COMMIT_TAG: _observe_sources(cfg, instance)}
    if args.all or args.force:
        tags[FORCE_TAG] = "true"
    if args.select:
        keys, notes = _held_back(defs, instance, _select(defs, args.select))
    elif args.all:
        everything = defs.resolve_asset_graph().materializable_asset_keys
        keys, notes = _held_back(defs, instance, _select(defs, [k.to_user_string() for k in everything]))
    else:
        keys, notes = _plan(defs, instance)
    _execute(defs, instance, keys, tags, notes, log_dir=cfg.artifacts_path / "logs")
    _fail_when_held_back(notes)
    print(f"Done. Artifacts under {cfg.artifacts_path}")


def _fail_when_held_back(notes: Sequence[str]) -> None:
    """A run that left assets behind a failed blocking check did not bring the project up to date: say so in the
    exit code, so a nightly `mochi run` is seen to fail until the cause is fixed."""
    if notes:
        raise CLIError(f"{len(notes)} failed blocking check(s) held assets back (see above); fix the cause and "
                       "run again.")


def cmd_status(args) -> None:
    from mochi_pipeline.blocking import blocked_assets, failed_blocking_checks
    from mochi_pipeline.dagster_internals import FRESH, STALE, asset_statuses

    cfg = load_config()
    defs, instance = _defs(cfg), _instance(cfg)
    _observe_sources(cfg, instance)
    graph = defs.resolve_asset_graph()
    blocked = blocked_assets(graph, instance)
    print(f"Project: {redact(cfg.repo_source)} @ {cfg.repo.rev}    artifacts: {cfg.artifacts_path}")
    for key, item in asset_statuses(defs, instance).items():
        causes = item.causes
        status = item.status
        if status == FRESH and item.upstream_changed:
            status = STALE
            causes = [f"upstream {', '.join(item.upstream_changed[:3])} will change first (same run)"]
        if key in blocked:
            causes = [f"blocked: check {blocked[key].check} on {blocked[key].asset.to_user_string()} failed", *causes]
        partitions = f" ({len(item.partitions)} partitions)" if item.partitions else ""
        print(f"  {status:8} {key.to_user_string()}{partitions}")
        for cause in causes[:3]:
            print(f"           - {cause}")
    for failed in failed_blocking_checks(graph, instance):
        print(f"\nBlocked: {failed.describe()}")


def cmd_report(args) -> None:
    from mochi_pipeline.report import print_report

    cfg = load_config()
    print_report(cfg, _instance(cfg), _defs(cfg))


def cmd_export(args) -> None:
    cfg = load_config()
    if args.model_dir:  # any Hugging Face model directory, outside the pipeline
        from mochi_pipeline.deployment.exporter import export

        out = Path(args.out or cfg.artifacts_path / "gguf" / "external")
        result = export(args.model_dir, out, cfg.export)
        if result.verification is not None:
            print(result.verification.markdown())
        print(f"Exports under {out}")
        return
    from mochi_pipeline.ingestion.assets import COMMIT_TAG

    defs, instance = _defs(cfg), _instance(cfg)
    tags = {COMMIT_TAG: _observe_sources(cfg, instance)}
    keys, notes = _plan(defs, instance, wanted=set(_select(defs, [f"+{name}" for name in EXPORT_ASSETS])))
    _execute(defs, instance, keys, tags, notes, log_dir=cfg.artifacts_path / "logs")
    _fail_when_held_back(notes)
    print(f"Exports under {cfg.artifacts_path / 'gguf'}")


def _api_key(args) -> tuple[str | None, str]:
    """The key clients must send (None: no key) and the variable it came from."""
    from mochi_pipeline.deployment.server import API_KEY_ENV

    key_env = args.api_key_env or API_KEY_ENV
    api_key = os.environ.get(key_env) or None
    if args.api_key_env and not api_key:  # named on purpose: serving without the key would be a surprise
        raise CLIError(f"--api-key-env {key_env}: ${key_env} is not set (or empty). Export the key first, "
                       f"or leave out --api-key-env to serve without one.")
    return api_key, key_env


def cmd_serve(args) -> None:
    from mochi_pipeline.deployment.server import serve

    if args.parallel < 1:
        raise CLIError(f"--parallel must be at least 1 (got {args.parallel}): it is how many requests decode together.")
    api_key, key_env = _api_key(args)
    cfg = load_config()
    exp = cfg.export
    model = Path(args.model) if args.model else _exported_gguf(cfg, args.quantization)
    serve(model, host=args.host or exp.host, port=exp.port if args.port is None else args.port, model_id=exp.name,
          n_ctx=exp.n_ctx, parallel=args.parallel, api_key=api_key, api_key_env=key_env,
          assist_artifacts=cfg.artifacts_path)


def _exported_gguf(cfg: MochiConfig, quantization: str) -> Path:
    """The pipeline's exported GGUF, refused when its verification against transformers failed."""
    import dagster as dg

    from mochi_pipeline.blocking import failed_blocking_checks

    path = cfg.artifacts_path / "gguf" / "model" / f"{cfg.export.name}-{quantization}.gguf"
    if not path.is_file():
        raise CLIError(f"No {path.name} under {path.parent}. Run `mochi export` first (with {quantization} in "
                       "export.quantizations), or pass --model PATH.")
    graph = _defs(cfg).resolve_asset_graph()
    if failed := failed_blocking_checks(graph, _instance(cfg), [dg.AssetKey("gguf_model")]):
        raise CLIError(f"Not serving {path}: {failed[0].describe()} (--model PATH serves a file you vouch for.)")
    return path


def cmd_mcp(args) -> None:
    from mochi_pipeline.deployment.assist import Assistant
    from mochi_pipeline.deployment.mcp_server import build_mcp, serve_http
    from mochi_pipeline.deployment.server import ModelServer

    if not args.http and (args.host or args.port is not None or args.api_key_env):
        raise CLIError("--host, --port and --api-key-env are for --http (stdio has no network to guard).")
    api_key, key_env = _api_key(args)  # the same key as `mochi serve`
    cfg = load_config()
    model = ModelServer(Path(args.model) if args.model else _exported_gguf(cfg, args.quantization),
                        model_id=cfg.export.name, n_ctx=cfg.export.n_ctx)
    mcp = build_mcp(Assistant.from_artifacts(cfg.artifacts_path, model), model)
    try:
        if args.http:
            serve_http(mcp, host=args.host or "127.0.0.1", port=8765 if args.port is None else args.port,
                       api_key=api_key, api_key_env=key_env)
        else:
            mcp.run("stdio")  # stdout carries the protocol: everything else goes to stderr
    finally:
        model.close()


def cmd_ui(args) -> None:
    cfg = load_config()
    _observe_sources(cfg, _instance(cfg))  # the UI's launch dialog then lists code_chunks' partitions
    env = {**os.environ, "DAGSTER_HOME": str(_dagster_home(cfg))}
    workspace = REPO_ROOT / "workspace.yaml"
    target = ["-w", str(workspace)] if workspace.is_file() else ["-m", "mochi_pipeline.definitions"]
    cmd = [str(Path(sys.executable).parent / "dagster"), "dev", *target, "--host", args.host, "--port", str(args.port)]
    print(f"Dagster UI on http://{args.host}:{args.port}  (DAGSTER_HOME={env['DAGSTER_HOME']})", flush=True)
    raise SystemExit(subprocess.call(cmd, env=env))


# --- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mochi", description="Build a small language model that knows your project.")
    p.add_argument("--config", help=f"Path to {CONFIG_FILE} (default: found from the current directory).")
    p.add_argument("--debug", action="store_true", help="Show full tracebacks.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("init", help=f"Write a commented {CONFIG_FILE}.")
    s.add_argument("path", nargs="?", default=".")
    s.add_argument("--force", action="store_true")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("run", help="Bring everything up to date: what is missing or stale and all below it, in one "
                       "run (or --all, or --select).")
    s.add_argument("--select", nargs="+", metavar="ASSET", help="Assets to run; prefix '+' adds their upstream.")
    s.add_argument("--all", action="store_true", help="Rebuild every asset, recomputing even what is unchanged.")
    s.add_argument("--force", action="store_true",
                   help="Recompute the planned (or selected) assets even where their inputs did not change.")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="Show which assets are fresh, stale or missing, and why.")
    s.set_defaults(func=cmd_status)
    sub.add_parser("report", help="Print what the last runs produced.").set_defaults(func=cmd_report)
    s = sub.add_parser("export", help="Build GGUF files and the Ollama Modelfile (of the pipeline's model, "
                       "or of --model-dir).")
    s.add_argument("--model-dir", help="A Hugging Face model directory to export instead of the pipeline's model.")
    s.add_argument("--out", help="Output directory for --model-dir (default: <artifacts>/gguf/external).")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", help="OpenAI-compatible server (+ /infill) over the exported GGUF.")
    s.add_argument("--model", help="GGUF file (default: the latest exported one).")
    s.add_argument("--quantization", default="q8_0")
    s.add_argument("--host", help="Default: export.host in mochi.yaml (127.0.0.1).")
    s.add_argument("--port", type=int, help="Default: export.port in mochi.yaml (8080); 0: any free port.")
    s.add_argument("--parallel", type=int, default=4,
                   help="Requests decoded together (slots of one llama.cpp context); default 4.")
    s.add_argument("--api-key-env", metavar="NAME",
                   help="Environment variable holding the API key clients must send as `Authorization: Bearer "
                   "<key>` (default MOCHI_API_KEY, where unset means no key; a variable named here must be set).")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("mcp", help="MCP server (stdio, or streamable HTTP with --http) with the project's model: "
                       "mochi_context, mochi_rerank, mochi_verify, mochi_complete.")
    s.add_argument("--model", help="GGUF file (default: the latest exported one).")
    s.add_argument("--quantization", default="q8_0")
    s.add_argument("--http", action="store_true", help="Serve streamable HTTP at http://HOST:PORT/mcp, not stdio.")
    s.add_argument("--host", help="With --http; default 127.0.0.1.")
    s.add_argument("--port", type=int, help="With --http; default 8765; 0: any free port.")
    s.add_argument("--api-key-env", metavar="NAME",
                   help="With --http: as for `mochi serve` (default MOCHI_API_KEY, where unset means no key).")
    s.set_defaults(func=cmd_mcp)

    s = sub.add_parser("ui", help="Open the Dagster web UI on this project.")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=3000)
    s.set_defaults(func=cmd_ui)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("ignore", message=".*is currently in (beta|preview)")  # Dagster APIs we use on purpose
    if args.config:
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("Interrupted; finished work is kept and the next run resumes from it.", file=sys.stderr)
        return 130
    except (CLIError, ConfigError) as err:
        print(f"mochi: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # anything else: one readable paragraph, traceback on request
        if args.debug:
            traceback.print_exc()
        print(f"mochi: {type(err).__name__}: {err}\n(run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
