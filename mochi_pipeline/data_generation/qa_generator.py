"""Question/answer pairs about the repository's code symbols.

What is asked about (a ``QASubject``: a definition with its docstring, signature, the tests that
call it and the doc sections that name it) is collected here; who answers is a ``QALLM`` resource
(``llm_client``): an OpenAI-compatible endpoint, or the offline templates below that derive
questions and answers from signatures, docstrings and tests alone.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from mochi_pipeline.data_generation.code_facts import defined_names, definition_text, docstring, signature
from mochi_pipeline.records import Chunk, DocSection, TrainingExample

if TYPE_CHECKING:
    from mochi_pipeline.data_generation.llm_client import QALLM

GENERATOR = "qa_generator"
_TEST_PATH = re.compile(r"(^|/)(tests?|spec|__tests__)/|(^|/)test_[^/]*$|_test\.\w+$|\.(test|spec)\.\w+$|Test\.java$")


class QASubject(BaseModel):
    """One code symbol and everything known about it, as material for questions."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: str
    language: str
    date: str = ""
    code: str
    docstring: str = ""
    signature: str = ""
    params: list[str] = []
    returns: str = ""
    callable: bool = False
    tests: list[tuple[str, str]] = []  # (path, test code calling the symbol)
    docs: list[str] = []  # doc section texts naming the symbol


@dataclass
class QAPair:
    subject: QASubject
    question: str
    answer: str


@dataclass
class QABatch:
    pairs: list[QAPair] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)


def is_test_path(path: str) -> bool:
    return bool(_TEST_PATH.search(path))


_CALLED = re.compile(r"\b(\w+)\s*\(")
_QUOTED = re.compile(r"`{1,2}(\w+)(?:\(\))?`{1,2}")


def _index(texts: list[str], pattern: re.Pattern[str]) -> dict[str, list[int]]:
    """name -> indices of the texts where ``pattern`` captures it, in order (one pass over all texts)."""
    where: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        for name in dict.fromkeys(pattern.findall(text)):
            where.setdefault(name, []).append(i)
    return where


def qa_subjects(chunks: list[Chunk], sections: list[DocSection], max_subjects: int) -> list[QASubject]:
    """Subjects for every named definition outside tests; the best documented first, at most ``max_subjects``."""
    tests = [c for c in chunks if is_test_path(c.path)]
    # Which tests call a name, and which doc sections quote it: indexed once, not searched per name.
    callers = _index([t.text for t in tests], _CALLED)
    quoting = _index([s.text for s in sections], _QUOTED)
    subjects: dict[str, QASubject] = {}
    for chunk in sorted((c for c in chunks if not is_test_path(c.path)), key=lambda c: (c.path, c.start_line)):
        for name in defined_names(chunk):
            if "." in name or "::" in name or len(name) < 3 or name in subjects:
                continue
            sig = signature(chunk, name)
            subjects[name] = QASubject(
                name=name,
                path=chunk.path,
                language=chunk.language,
                date=chunk.file_date,
                code=definition_text(chunk, name),
                docstring=docstring(chunk, name),
                signature=sig.text if sig else "",
                params=sig.params if sig else [],
                returns=sig.returns if sig else "",
                callable=sig is not None,
                tests=[(tests[i].path, tests[i].text) for i in callers.get(name, [])[:2]],
                docs=[sections[i].text.strip() for i in quoting.get(name, [])[:2]],
            )
    ranked = sorted(
        subjects.values(), key=lambda s: (-(bool(s.docstring) + len(s.docs) + len(s.tests)), s.path, s.name)
    )
    return ranked[:max_subjects]


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    m = re.match(r"(.+?[.;!?])(\s|$)", flat)
    return (m.group(1) if m else flat).rstrip(";") + ("" if (m and m.group(1).endswith((".", "!", "?"))) else ".")


def offline_pairs(subject: QASubject) -> list[tuple[str, str]]:
    """Questions answerable from the subject's own material, without a model."""
    n, where = subject.name, f"`{subject.path}`"
    pairs = [(f"Where is `{n}` defined?", f"`{n}` is defined in {where} ({subject.language}).")]
    if subject.docstring:
        pairs.append((f"What does `{n}` do?", _first_sentence(subject.docstring)))
    returns_doc = [
        s for s in re.split(r"(?<=[.;])\s+", " ".join(subject.docstring.split())) if re.search(r"\breturns?\b", s, re.I)
    ]
    if subject.callable and (returns_doc or subject.returns):
        answer = " ".join(s.rstrip(";.") + "." for s in returns_doc)
        if subject.returns:
            answer = f"{answer} Its declared return type is `{subject.returns}`.".strip()
        pairs.append((f"What does `{n}` return?", answer))
    if subject.callable:
        if subject.params:
            listed = ", ".join(f"`{p}`" for p in subject.params)
            pairs.append(
                (f"What parameters does `{n}` take?", f"`{n}` takes {len(subject.params)} parameter(s): {listed}.")
            )
        else:
            pairs.append((f"What parameters does `{n}` take?", f"`{n}` takes no parameters."))
    for test_path, test_code in subject.tests[:1]:
        lang = subject.language if subject.language != "text" else ""
        pairs.append(
            (f"How is `{n}` used?", f"For example, `{test_path}` calls it:\n```{lang}\n{test_code.strip()}\n```")
        )
    return pairs


def qa_pairs(
    chunks: list[Chunk],
    sections: list[DocSection],
    llm: QALLM,
    *,
    max_subjects: int,
    pairs_per_subject: int,
    cache_dir: Path,
    log: logging.Logger,
) -> tuple[list[TrainingExample], QABatch]:
    subjects = qa_subjects(chunks, sections, max_subjects)
    log.info(f"Asking {type(llm).__name__} about {len(subjects)} code symbols.")
    batch = llm.ask(subjects, pairs_per_subject=pairs_per_subject, cache_dir=cache_dir, log=log)
    examples = [
        TrainingExample(
            instruction=p.question.strip(),
            response=p.answer.strip(),
            task="qa",
            generator=GENERATOR,
            path=p.subject.path,
            language=p.subject.language,
            date=p.subject.date,
        )
        for p in batch.pairs
        if p.question.strip() and p.answer.strip()
    ]
    return examples, batch
