"""The one project config (``mochi.yaml``), validated once, with errors a person can act on.

The code location reads it once when it loads and hands each layer only its own sections
(``definitions.build_defs``); nothing else reads it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from mochi_pipeline.data_generation.settings import GenerationSettings
from mochi_pipeline.deployment.settings import ExportSettings
from mochi_pipeline.execution import ExecutionSettings
from mochi_pipeline.ingestion.settings import CISettings, RepoSettings, SourceSettings, TrackerSettings
from mochi_pipeline.paths import ProjectPaths
from mochi_pipeline.preprocessing.settings import (
    ChunkingSettings,
    DedupSettings,
    FilterSettings,
    ScrubSettings,
    ThreadCleaningSettings,
)
from mochi_pipeline.settings_base import Section
from mochi_pipeline.training.settings import TrainingSettings

CONFIG_FILE = "mochi.yaml"
CONFIG_ENV = "MOCHI_CONFIG"


class ConfigError(ValueError):
    """A config problem, worded for the person who wrote the file."""


class AutomationSettings(Section):
    """What runs by itself once the sensors are on (Dagster UI → Automation)."""

    follow_commits: bool = Field(
        True, description="Rebuild the data assets (ingestion → training_dataset) after each new commit on repo.rev."
    )
    poll_interval_s: int = Field(60, ge=30, description="Seconds between two looks for a new commit.")
    tracker_poll_interval_s: int = Field(
        3600, ge=60, description="Seconds between two looks at the issue trackers and CI systems (one request each)."
    )
    retrain_cron: str = Field(
        "0 3 * * *",
        description="Retrain when the training dataset changed, at most once per tick of this cron schedule; "
        "'' = never retrain by itself.",
    )
    timezone: str = Field("UTC", description="Timezone of retrain_cron (an IANA name such as Europe/Berlin).")
    export_after_training: bool = Field(
        True, description="Evaluate, gate and export a newly trained model by itself (else: `mochi run` or the UI)."
    )

    @field_validator("retrain_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        import dagster as dg

        try:
            if value:
                dg.AutomationCondition.cron_tick_passed(value)  # Dagster's own check of the expression
        except Exception:
            raise ValueError("not a cron schedule (five fields, e.g. '0 3 * * *' for 03:00 every day)") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown timezone; use an IANA name such as UTC or Europe/Berlin") from None
        return value


class MochiConfig(Section):
    repo: RepoSettings = Field(default_factory=RepoSettings)
    artifacts_root: str = Field(
        "", description="Where every artifact is written; '' = <repository>/.mochi (git-ignored)."
    )
    sources: SourceSettings = Field(default_factory=SourceSettings)
    trackers: TrackerSettings = Field(default_factory=TrackerSettings)
    ci: CISettings = Field(default_factory=CISettings)
    filters: FilterSettings = Field(default_factory=FilterSettings)
    scrub: ScrubSettings = Field(default_factory=ScrubSettings)
    threads: ThreadCleaningSettings = Field(default_factory=ThreadCleaningSettings)
    chunking: ChunkingSettings = Field(default_factory=ChunkingSettings)
    dedup: DedupSettings = Field(default_factory=DedupSettings)
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    automation: AutomationSettings = Field(default_factory=AutomationSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)

    # Filled in by ``load_config``: the directory relative paths are resolved against.
    base_dir: str = Field("", exclude=True, description="Directory of mochi.yaml (internal).")

    @property
    def is_remote(self) -> bool:
        from mochi_pipeline.ingestion.git_urls import is_remote_source

        return is_remote_source(self.repo.source)

    @property
    def repo_source(self) -> str:
        """The repository as an absolute local path, or the remote URL unchanged."""
        if self.is_remote:
            return self.repo.source
        return str((Path(self.base_dir or ".") / self.repo.source).resolve())

    @property
    def artifacts_path(self) -> Path:
        if self.artifacts_root:
            root = Path(os.path.expanduser(self.artifacts_root))
            return (root if root.is_absolute() else Path(self.base_dir) / root).resolve()
        base = Path(self.base_dir) if self.is_remote else Path(self.repo_source)
        return (base / ".mochi").resolve()

    @property
    def paths(self) -> ProjectPaths:
        return ProjectPaths(artifacts=self.artifacts_path, repo_source=self.repo_source)


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"Invalid config in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `mochi init` writes a commented example)"
        lines.append(f"  - {loc} = {shown}: {msg}")
    return "\n".join(lines)


def git_toplevel(start: Path) -> Path | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(start), "rev-parse", "--show-toplevel"],
            capture_output=True, text=True, check=True,
        )
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    return Path(out.stdout.strip())


def find_config(start: str | os.PathLike | None = None) -> Path | None:
    """``$MOCHI_CONFIG``, else ``mochi.yaml`` in ``start`` or its git top level, else None."""
    env = os.environ.get(CONFIG_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV}={env} does not name a file. Point it at a mochi.yaml or unset it.")
        return path.resolve()
    start = Path(start or os.getcwd()).resolve()
    for d in (start, git_toplevel(start)):
        if d is not None and (d / CONFIG_FILE).is_file():
            return (d / CONFIG_FILE).resolve()
    return None


def parse_config(data: dict[str, Any], base_dir: str | os.PathLike, source: str = CONFIG_FILE) -> MochiConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of sections (repo:, sources:, ...), got {type(data).__name__}.")
    try:
        return MochiConfig.model_validate({**data, "base_dir": str(Path(base_dir).resolve())})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | os.PathLike | None = None, start: str | os.PathLike | None = None) -> MochiConfig:
    """Load ``path`` (or the config found from ``start``); with no file, defaults for the repo at ``start``."""
    cfg_path = Path(path) if path else find_config(start)
    if cfg_path is None:
        start_dir = Path(start or os.getcwd()).resolve()
        return parse_config({}, git_toplevel(start_dir) or start_dir, "(defaults)")
    if not cfg_path.is_file():
        raise ConfigError(f"Config file {cfg_path} does not exist. Create one with `mochi init`.")
    try:
        data = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{cfg_path} is not valid YAML: {err}") from None
    return parse_config(data, cfg_path.parent, str(cfg_path))
