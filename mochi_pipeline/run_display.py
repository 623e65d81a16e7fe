"""What `mochi run` shows while its Dagster run goes: one display, then a short summary.

A line per planned asset (waiting / running / done with its key figure / reused / failed) and, for the
long steps, a bar with an ETA fed by the ``Progress`` their logic modules report (``progress.py``). On
a terminal it is a live ``rich`` display; otherwise (CI, a log file) the same information comes as plain
lines, with no carriage returns. The display is the run's Dagster logger: it reads the events and the
steps' log records as they happen, in the process that runs them (``execute_in_process``).

While the run goes, what the libraries print for a developer (their warnings, logging, stray stderr
output) is written to ``<artifacts>/logs/run-<id>.log`` instead of the terminal, and their progress
bars are turned off. What matters to the person (a check that failed, data left out, a ``Notice``) is
listed once at the end, next to what was built and how long each step took.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import dagster as dg

from mochi_pipeline.progress import PROGRESS_ATTR

# Counts that say best what an asset produced (its metadata keys), the first two found shown.
KEY_COUNTS = ("files", "commits", "threads", "failures", "sections", "chunks", "kept", "n_examples", "n_chunks",
              "n_commits", "n_doc_sections", "cases")
PLAIN_PROGRESS_EVERY_S = 10.0  # at most one progress line per task this often without a terminal
LIBRARY_LOGGERS = ("transformers", "datasets", "huggingface_hub", "trl", "peft", "accelerate", "torch")


@dataclass
class AssetLine:
    name: str
    state: str = "waiting"  # waiting, running, done, reused, failed, not run
    figure: str = ""
    started: float | None = None
    seconds: float | None = None
    progress: dict[str, Any] | None = None  # the last Progress of the step, as a dict
    progress_at: float = 0.0  # when a plain line about it was last printed
    progress_first: tuple[float, int] | None = None  # (time, done) of the first Progress of this task
    partitions: dict[str, dict[str, Any]] = field(default_factory=dict)  # partition -> its metadata values


def _fmt_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _loss_figure(v: dict[str, Any]) -> str:
    text = f"{v.get('steps')} steps, train loss {_fmt_value(v.get('first_train_loss'))} -> " \
           f"{_fmt_value(v.get('last_train_loss'))}"
    return text + (f", best eval loss {_fmt_value(v['best_eval_loss'])}" if v.get("best_eval_loss") is not None else "")


# Assets whose result is best said in their own words (from their materialization metadata).
FIGURES: dict[str, Any] = {
    "base_model": lambda v: f"{v.get('name')}" + (
        f", pre-trained {v['pretraining_steps']} steps, held-out loss "
        f"{_fmt_value(v['pretraining_held_out_loss_before'])} -> {_fmt_value(v['pretraining_held_out_loss_after'])}"
        if "pretraining_steps" in v else ""),
    "training_dataset": lambda v: f"{v['n_examples'].get('train', 0)} train / {v['n_examples'].get('eval', 0)} eval "
                                  f"examples" + (f", {sum(v['dropped'].values())} dropped"
                                                 if sum((v.get("dropped") or {}).values()) else ""),
    "fine_tuned_adapter": _loss_figure,
    "evaluation_report": lambda v: f"perplexity base {_fmt_value(v.get('perplexity_base'))} -> fine-tuned "
                                   f"{_fmt_value(v.get('perplexity_fine_tuned'))}, "
                                   + ("accepted" if v.get("accepted") else "rejected"),
    "merged_model": lambda v: f"{v.get('safetensors_mb')} MB of safetensors",
    "gguf_model": lambda v: ", ".join(f"{k.removeprefix('size_bytes_')} {_mib(n)}" for k, n in v.items()
                                      if k.startswith("size_bytes_")),
    "gguf_lora_adapter": lambda v: f"skipped: {v['skipped']}" if v.get("skipped") else "",
    "assist_evaluation": lambda v: f"rerank top-1 {_fmt_value(v.get('accuracy'))} "
                                   f"(chance {_fmt_value(v.get('chance'))})",
    "completion_evaluation": lambda v: f"next-line exact match base {_fmt_value(v.get('next_line_base_exact_match'))} "
                                       f"-> fine-tuned {_fmt_value(v.get('next_line_exact_match'))} "
                                       f"({v.get('next_line_cases', 0)} cases)",
    "project_conventions": lambda v: f"{len(v.get('languages') or {})} languages",
}


def key_figure(asset: str, metadata: dict[str, Any]) -> str:
    """A few words on what a materialization produced, from its metadata."""
    values = {k: getattr(v, "value", v) for k, v in metadata.items()}
    if "reused_from_run" in values:
        return "unchanged, reused"
    if asset in FIGURES:
        try:
            return FIGURES[asset](values)
        except (KeyError, TypeError, AttributeError):  # metadata of another shape: fall back to counts
            pass
    shown = [f"{values[k]} {k.removeprefix('n_').replace('_', ' ')}" for k in KEY_COUNTS
             if isinstance(values.get(k), int) and not isinstance(values.get(k), bool)]
    return ", ".join(shown[:2])


def partitions_figure(partitions: dict[str, dict[str, Any]]) -> str:
    """What a partitioned step produced: its partitions, how many it rebuilt, and its counts summed."""
    rebuilt = sum("reused_from_run" not in values for values in partitions.values())
    totals = [f"{sum(v.get(k, 0) for v in partitions.values())} {k}" for k in KEY_COUNTS
              if any(isinstance(v.get(k), int) for v in partitions.values())]
    return ", ".join([f"{len(partitions)} partitions ({rebuilt} rebuilt)", *totals[:2]])


def eta(line: AssetLine, now: float) -> float | None:
    """Seconds left for the step's current task, from its pace since its first report."""
    p, first = line.progress, line.progress_first
    if p is None or first is None or not p["total"] or p["done"] <= first[1]:
        return None
    rate = (p["done"] - first[1]) / max(now - first[0], 1e-6)
    return max(0.0, (p["total"] - p["done"]) / rate)


@dataclass
class RunDisplay:
    """The live display (``live``: a terminal) or plain lines of one `mochi run`, and its summary."""

    planned: Sequence[str]
    out: TextIO
    live: bool
    log_path: Path
    lines: dict[str, AssetLine] = field(init=False)
    notices: list[str] = field(default_factory=list)
    library_warnings: int = 0
    started: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.lines = {name: AssetLine(name) for name in self.planned}
        self._console = None
        self._live = None

    # --- Dagster side ------------------------------------------------------------------------

    def logger_definition(self) -> dg.LoggerDefinition:
        """The run's only logger: every event and log record of the run reaches ``handle``."""
        display = self

        class Forward(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                display.handle(record)

        logger = logging.Logger("mochi.run", level=logging.DEBUG)
        logger.addHandler(Forward())
        return dg.LoggerDefinition(lambda _init: logger, description="mochi run's progress display")

    def handle(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        step = meta.get("step_key") or ""
        event = meta.get("dagster_event")
        now = time.monotonic()
        self._to_log_file(record, step)
        line = self.lines.get(step)
        if event is not None:
            self._event(event, line, step, now)
        elif (progress := getattr(record, PROGRESS_ATTR, None)) is not None and line is not None:
            self._progress(line, progress, now)
        elif record.levelno >= logging.WARNING and step:
            message = str(meta.get("orig_message") or record.getMessage()).removeprefix(f"{step}: ")
            self.notices.append(f"{step}: {message}")
        self._refresh()

    def _event(self, event: dg.DagsterEvent, line: AssetLine | None, step: str, now: float) -> None:
        kind = event.event_type
        if kind == dg.DagsterEventType.STEP_START and line is not None:
            line.state, line.started = "running", now
            self._plain(f"  running  {step}")
        elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION and line is not None:
            materialization = event.event_specific_data.materialization
            if materialization.partition is not None:  # one event per partition (code_chunks)
                line.partitions[materialization.partition] = {k: getattr(v, "value", v)
                                                              for k, v in materialization.metadata.items()}
                line.figure = partitions_figure(line.partitions)
                return
            line.figure = key_figure(step, dict(materialization.metadata))
            if line.figure == "unchanged, reused":
                line.state = "reused"
        elif kind == dg.DagsterEventType.STEP_SUCCESS and line is not None:
            line.state = "reused" if line.state == "reused" else "done"
            line.seconds = now - (line.started or now)
            line.progress = None
            self._plain(f"  {line.state:8} {step}" + (f"  ({line.figure})" if line.figure else "")
                        + f"  {_fmt_duration(line.seconds)}")
        elif kind == dg.DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            while error.cause is not None and error.cls_name == "DagsterExecutionStepExecutionError":
                error = error.cause
            if line is not None:
                line.state, line.seconds, line.progress = "failed", now - (line.started or now), None
                line.figure = error.message.strip().splitlines()[0][:100] if error.message else ""
            self._plain(f"  FAILED   {step}: {line.figure if line else error.message.strip()}")
        elif kind == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.event_specific_data
            if not check.passed:
                level = "failed" if check.severity == dg.AssetCheckSeverity.ERROR else "warns"
                numbers = ", ".join(f"{k} {_fmt_value(getattr(v, 'value', v))}" for k, v in check.metadata.items()
                                    if isinstance(getattr(v, "value", v), int | float))
                why = check.description or numbers
                self.notices.append(f"check {check.check_name} on {check.asset_key.to_user_string()} {level}"
                                    + (f": {why}" if why else ""))

    def _progress(self, line: AssetLine, progress: dict[str, Any], now: float) -> None:
        last = line.progress
        if last is None or last["task"] != progress["task"] or progress["done"] < last["done"]:  # a new task
            line.progress_first = (now, progress["done"])
            line.progress_at = 0.0
        line.progress = progress
        if not self.live and (now - line.progress_at >= PLAIN_PROGRESS_EVERY_S
                              or progress["done"] >= progress["total"]):
            line.progress_at = now
            left = eta(line, now) if progress["done"] < progress["total"] else None
            self._plain(f"           {line.name}  {self._progress_text(progress)}"
                        + (f"  (about {_fmt_duration(left)} left)" if left is not None else ""))

    @staticmethod
    def _progress_text(p: dict[str, Any]) -> str:
        shown = ", ".join(f"{k} {_fmt_value(v)}" for k, v in p["figures"].items())
        return f"{p['task']}: {p['unit']} {p['done']}/{p['total']}" + (f", {shown}" if shown else "")

    def _to_log_file(self, record: logging.LogRecord, step: str) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        message = meta.get("orig_message") or record.getMessage()
        logging.getLogger("mochi.run.log").log(record.levelno, "%s%s", f"{step}: " if step else "", message)

    # --- output --------------------------------------------------------------------------------

    def _plain(self, text: str) -> None:
        if not self.live:
            print(text, file=self.out, flush=True)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def __rich__(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.monotonic()
        table = Table.grid(padding=(0, 1))
        styles = {"waiting": "dim", "running": "bold yellow", "done": "green", "reused": "cyan",
                  "failed": "bold red", "not run": "dim"}
        marks = {"waiting": "·", "running": "▸", "done": "✓", "reused": "=", "failed": "✗", "not run": "-"}
        for line in self.lines.values():
            took = _fmt_duration(line.seconds if line.seconds is not None else now - line.started) \
                if line.started is not None else ""
            table.add_row(Text(marks[line.state], style=styles[line.state]), Text(line.name),
                          Text(line.state, style=styles[line.state]), Text(took, style="dim"),
                          Text(line.figure, style="dim"))
            if line.state == "running" and line.progress is not None:
                p = line.progress
                left = eta(line, now) if p["done"] < p["total"] else None
                bar = ProgressBar(total=max(p["total"], 1), completed=p["done"], width=30)
                detail = self._progress_text(p) + (f"  ETA {_fmt_duration(left)}" if left is not None else "")
                table.add_row(Text(""), bar, Text(""), Text(""), Text(detail))
        return table

    def summary(self) -> str:
        total = time.monotonic() - self.started
        width = max((len(n) for n in self.lines), default=10)
        rows = []
        for line in self.lines.values():
            took = _fmt_duration(line.seconds) if line.seconds is not None else ""
            rows.append(f"  {line.name:<{width}}  {line.state:8} {took:>7}  {line.figure}".rstrip())
        built = sum(1 for line in self.lines.values() if line.state == "done")
        reused = sum(1 for line in self.lines.values() if line.state == "reused")
        text = [f"Summary: {built} built, {reused} unchanged (reused) in {_fmt_duration(total)}", *rows]
        if self.notices:
            text += ["", "To look at:"] + [f"  - {n}" for n in dict.fromkeys(self.notices)]
        n = self.library_warnings
        detail = f" ({n} library warning{'s' if n > 1 else ''})" if n else ""
        text += ["", f"Full log{detail}: {self.log_path}"]
        return "\n".join(text)

    def finish(self) -> None:
        for line in self.lines.values():
            if line.state in ("waiting", "running"):
                line.state = "not run"
        self._refresh()

    @contextlib.contextmanager
    def showing(self) -> Iterator[RunDisplay]:
        """Show the display (and send library output to the log file) while the run goes.

        It writes to its own copy of stdout's file descriptor: Dagster tees each step's stdout through a
        pipe (its compute logs), which would delay the plain lines and, not being a terminal, stop the
        live display from redrawing.
        """
        with _own_copy(self.out) as out, _library_output_to(self.log_path, self):
            self.out = out
            if not self.live:
                yield self
                return
            from rich.console import Console
            from rich.live import Live

            self._console = Console(file=out)
            with Live(self, console=self._console, refresh_per_second=4, transient=False,
                      redirect_stdout=True, redirect_stderr=False) as live:
                self._live = live
                try:
                    yield self
                finally:
                    self.finish()
                    self._live = None


@contextlib.contextmanager
def _own_copy(stream: TextIO) -> Iterator[TextIO]:
    """A line-buffered stream on a duplicate of ``stream``'s file descriptor (``stream`` itself if it has none)."""
    try:
        fd = os.dup(stream.fileno())
    except (AttributeError, OSError, ValueError):  # e.g. a StringIO
        yield stream
        return
    stream.flush()
    copy = os.fdopen(fd, "w", encoding=getattr(stream, "encoding", None) or "utf-8", buffering=1)
    try:
        yield copy
    finally:
        copy.close()


class _CountWarnings(logging.Handler):
    def __init__(self, display: RunDisplay):
        super().__init__(level=logging.WARNING)
        self.display = display

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("mochi.run"):
            self.display.library_warnings += 1


@contextlib.contextmanager
def _library_output_to(log_path: Path, display: RunDisplay) -> Iterator[None]:
    """Libraries' logging, Python warnings and anything written to stderr (C libraries included) go to
    ``log_path``; their progress bars are off. All restored afterwards."""
    import datasets
    import huggingface_hub.utils
    import transformers

    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    counter = _CountWarnings(display)
    saved_level = root.level
    root.addHandler(handler)
    root.addHandler(counter)
    root.setLevel(logging.INFO)
    propagating = {name: logging.getLogger(name).propagate for name in LIBRARY_LOGGERS}
    for name in LIBRARY_LOGGERS:  # transformers and datasets keep theirs to themselves
        logging.getLogger(name).propagate = True
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    logging.captureWarnings(True)
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    log_file = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed below)
    os.dup2(log_file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        log_file.close()
        logging.captureWarnings(False)
        huggingface_hub.utils.enable_progress_bars()
        datasets.enable_progress_bars()
        transformers.utils.logging.enable_progress_bar()
        transformers.utils.logging.enable_default_handler()
        for name, flag in propagating.items():
            logging.getLogger(name).propagate = flag
        root.removeHandler(handler)
        root.removeHandler(counter)
        root.setLevel(saved_level)
        handler.close()
