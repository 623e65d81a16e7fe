"""The last line of defence: every final training text scanned with the scrubber's own detector.

Whatever reaches the dataset splits, the generators' outputs or the Q&A reply cache went through
``clean_files``/``clean_commits`` first, so a hit here means a leak (or a model-written secret in a
Q&A reply) and blocks training. A hit is reported by type and where it is, never by its value.
A text cut from one file is scanned as from that file (its ``path``), so the rules that hold only in
config files (unquoted assignments, high-entropy strings) run where they ran upstream: the scan is
the full detector, not a weaker copy. Texts found clean before (same text and path, same detector
settings) are not scanned again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mochi_pipeline.preprocessing.cleaning import CLEANER_VERSION
from mochi_pipeline.preprocessing.minhash import text_key
from mochi_pipeline.preprocessing.scrubber import Scrubber
from mochi_pipeline.preprocessing.settings import ScrubSettings
from mochi_pipeline.storage import atomic_write_text

# Bump when what the scan reads or how changes (the detector's own changes bump CLEANER_VERSION): part of
# training_dataset's code version, so a dataset whose scan failed is rebuilt and scanned again.
SCAN_VERSION = "2"


@dataclass
class LeakReport:
    scanned: int = 0  # texts looked at (including those known clean)
    by_type: Counter = field(default_factory=Counter)
    where: list[str] = field(default_factory=list)  # "<artifact> <row>: <type>", first ones only

    @property
    def clean(self) -> bool:
        return not self.by_type


class CleanTexts:
    """Keys of texts the detector found nothing in, per settings (a cache: safe to delete)."""

    def __init__(self, root: Path, settings: ScrubSettings) -> None:
        self.path = root / f"clean-texts-{CLEANER_VERSION}-{settings.signature()}.txt"

    def load(self) -> set[str]:
        try:
            return set(self.path.read_text(encoding="ascii").split())
        except (OSError, ValueError):
            return set()

    def save(self, keys: set[str]) -> None:
        atomic_write_text(self.path, "\n".join(sorted(keys)))


def scan(texts: Iterable[tuple[str, str, str]], settings: ScrubSettings, cache_root: Path | None = None,
         max_where: int = 20) -> LeakReport:
    """Scan (where, text, path) triples; ``where`` names the artifact and row for the report, ``path`` is the file
    the text came from ("" when none: a commit message, a Q&A reply)."""
    scrubber = Scrubber(settings)
    store = CleanTexts(cache_root, settings) if cache_root is not None else None
    known = store.load() if store is not None else set()
    clean_now: set[str] = set()
    report = LeakReport()
    for where, text, path in texts:
        report.scanned += 1
        if not text:
            continue
        key = text_key(f"{path}\0{text}")
        if key in known or key in clean_now:
            clean_now.add(key)
            continue
        findings = scrubber.find(text, path)
        if not findings:
            clean_now.add(key)
            continue
        for f in findings:
            report.by_type[f.type] += 1
            if len(report.where) < max_where:
                report.where.append(f"{where}: {f.type}")
    if store is not None:
        store.save(clean_now)  # only what is in use now: the file does not grow forever
    return report
