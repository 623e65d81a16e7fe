"""Code completion examples: next line, next block and fill-in-the-middle, cut at syntax boundaries.

Cuts fall on line boundaries inside a chunk; a "block" is the statement starting at the cut plus
its indented body (or, for brace languages, everything up to the matching close brace). FIM
examples stay model-agnostic: ``prefix``, ``response`` (the middle) and ``suffix``; the training
layer lays them out with the base model's own sentinel tokens (training/fim.py), in PSM order or,
for a share of them, SPM (task ``fim_spm``).

Every choice comes from ``random.Random(seed + stable_hash(chunk.id))`` so one chunk's examples do
not depend on which other chunks exist or in what order they come.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field

from mochi_pipeline.data_generation.code_facts import block_end
from mochi_pipeline.data_generation.settings import CompletionSettings
from mochi_pipeline.records import Chunk, TrainingExample

MISSING = "<missing>"
GENERATOR = "completion_pairs"


def stable_hash(text: str) -> int:
    """A hash that, unlike ``hash()``, is the same in every process."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16)


def chunk_rng(seed: int, chunk_id: str) -> random.Random:
    return random.Random(seed + stable_hash(chunk_id))


@dataclass
class CompletionResult:
    examples: list[TrainingExample] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)


def _cut_points(lines: list[str], min_prefix_lines: int) -> list[int]:
    points, seen_code = [], 0
    for i, line in enumerate(lines):
        if line.strip() and seen_code >= min_prefix_lines:
            points.append(i)
        seen_code += bool(line.strip())
    return points


def _header(chunk: Chunk) -> str:
    return chunk.context.rstrip("\n") + "\n" if chunk.context.strip() else ""


def chunk_examples(
    chunk: Chunk, settings: CompletionSettings, seed: int, fim_rate: float, spm_rate: float
) -> list[TrainingExample]:
    """The completion examples of one chunk (none when no line has ``min_prefix_lines`` code lines above it)."""
    lines = chunk.text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    points = _cut_points(lines, settings.min_prefix_lines)
    if not points:
        return []
    rng = chunk_rng(seed, chunk.id)
    header = _header(chunk)
    base = dict(generator=GENERATOR, path=chunk.path, language=chunk.language, date=chunk.file_date)
    examples = []
    for cut in sorted(rng.sample(points, min(settings.examples_per_chunk, len(points)))):
        prefix = header + "".join(lines[:cut])
        end = block_end(lines, cut, settings.max_block_lines)
        if rng.random() < fim_rate:
            # The middle is either the whole block or its first few lines: both end on a line boundary.
            end = cut + rng.randint(1, end - cut) if rng.random() < 0.5 else end
            middle, suffix = "".join(lines[cut:end]), "".join(lines[end:])
            spm = rng.random() < spm_rate
            examples.append(
                TrainingExample(
                    instruction=f"Fill in the code missing at {MISSING} in `{chunk.path}`.",
                    context=f"{prefix}{MISSING}\n{suffix}",
                    response=middle,
                    task="fim_spm" if spm else "fim_psm",
                    prefix=prefix,
                    suffix=suffix,
                    raw_text=prefix + middle + suffix,
                    **base,
                )
            )
            continue
        as_block = end - cut > 1 and rng.random() < 0.5
        target = "".join(lines[cut:end]) if as_block else lines[cut]
        examples.append(
            TrainingExample(
                instruction=f"Continue `{chunk.path}` with the next {'block' if as_block else 'line'} of code.",
                context=prefix,
                response=target,
                task="next_block" if as_block else "next_line",
                raw_text=prefix + target,
                **base,
            )
        )
    return examples


def completion_pairs(
    chunks: list[Chunk], settings: CompletionSettings, seed: int, fim_rate: float, spm_rate: float
) -> CompletionResult:
    result = CompletionResult()
    for chunk in chunks:
        examples = chunk_examples(chunk, settings, seed, fim_rate, spm_rate)
        if not examples:
            result.skipped["too_few_code_lines"] += 1
        result.examples += examples
    return result
