"""BM25 (Okapi) over code: identifiers count whole and split into their words.

``parse_config`` matches a query about "parse config" and one about ``parse_config`` alike, and
``HTTPClient`` matches "http client". Built in memory from the deduplicated chunks when a server
starts: tens of thousands of chunks index in seconds.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

from mochi_pipeline.preprocessing.conventions import name_words

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words in nearly every chunk of any language: they rank nothing.
_STOP = frozenset(
    "a an and as at be by do else for from if in is it of on or the to with def return self none true false "
    "import class function func var let const new this null nil void int str".split()
)


def code_terms(text: str) -> list[str]:
    """Lower-cased terms of ``text``: each identifier, plus its snake_case / camelCase parts."""
    terms: list[str] = []
    for ident in _IDENTIFIER.findall(text):
        parts = name_words(ident)
        whole = ident.lower().strip("_")
        if whole and whole not in _STOP and len(whole) > 1:
            terms.append(whole)
        if len(parts) > 1:
            terms += [p for p in parts if p not in _STOP and len(p) > 1]
    return terms


class BM25Index:
    """Okapi BM25 with the usual k1 = 1.5, b = 0.75."""

    def __init__(self, documents: list[str], k1: float = 1.5, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.lengths: list[int] = []
        for doc_id, text in enumerate(documents):
            counts = Counter(code_terms(text))
            self.lengths.append(sum(counts.values()))
            for term, tf in counts.items():
                self.postings[term].append((doc_id, tf))
        self.avg_length = sum(self.lengths) / len(self.lengths) if self.lengths else 0.0

    def __len__(self) -> int:
        return len(self.lengths)

    def idf(self, term: str) -> float:
        n = len(self.postings.get(term, ()))
        return math.log(1 + (len(self.lengths) - n + 0.5) / (n + 0.5))

    def search(self, query: str, k: int = 5) -> list[tuple[int, float]]:
        """The ``k`` best (document index, score) pairs, best first; documents sharing no term are left out."""
        scores: dict[int, float] = defaultdict(float)
        for term in set(code_terms(query)):
            idf = self.idf(term)
            for doc_id, tf in self.postings.get(term, ()):
                norm = self.k1 * (1 - self.b + self.b * self.lengths[doc_id] / (self.avg_length or 1))
                scores[doc_id] += idf * tf * (self.k1 + 1) / (tf + norm)
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
