"""The project's own conventions, mined from its cleaned source files.

Per language: how code is indented, how long lines get, how functions and classes are named,
which quotes strings use, how imports are written and how errors are handled; for the project:
where tests live and which framework runs them. Each convention carries the share of the code
that follows it, so a checker (deployment/assist.py ``verify``) only enforces what the project
really does (a share of at least ``STRONG``), and a large model reading the summary knows how firm
each one is. Syntax comes from tree-sitter (preprocessing/grammars.py), never from regexes over code.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import PurePosixPath

from pydantic import Field
from tree_sitter import Node

from mochi_pipeline.preprocessing.grammars import SPECS, definition_name, parser_for, unwrap
from mochi_pipeline.records import Record, SourceFile

STRONG = 0.8  # a convention followed this often is one the project keeps
MIN_OBSERVED = 3  # ... when seen at least this many times
LINE_LIMITS = (79, 80, 88, 99, 100, 110, 120, 132, 150)
_STYLES = {
    "snake_case": re.compile(r"_*[a-z][a-z0-9]*(_[a-z0-9]+)+_*"),
    "camelCase": re.compile(r"_*[a-z][a-z0-9]*([A-Z][a-z0-9]*)+"),
    "PascalCase": re.compile(r"_*[A-Z][a-z0-9]+([A-Z][a-z0-9]*)*"),
    "UPPER_CASE": re.compile(r"_*[A-Z][A-Z0-9]*(_[A-Z0-9]+)+"),
}
_TEST_FILE = re.compile(r"(^|/)(test_[^/]*\.py|[^/]*_test\.(py|go)|[^/]*\.(test|spec)\.[jt]sx?|[^/]*Tests?\.java)$")


_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def name_words(name: str) -> list[str]:
    """``parseHTTPConfig`` / ``parse_http_config`` -> ``['parse', 'http', 'config']``."""
    return [w.lower() for part in name.split("_") for w in _WORD.findall(part)]


def restyle(name: str, style: str) -> str:
    """``name`` written in ``style`` (snake_case, camelCase, PascalCase or UPPER_CASE)."""
    words = name_words(name) or [name.lower()]
    if style == "snake_case":
        return "_".join(words)
    if style == "UPPER_CASE":
        return "_".join(words).upper()
    pascal = "".join(w.capitalize() for w in words)
    return pascal if style == "PascalCase" else pascal[:1].lower() + pascal[1:]


def naming_style(name: str) -> str:
    """snake_case, camelCase, PascalCase, UPPER_CASE, or '' when a name fits several (``run``, ``X``)."""
    for style, pattern in _STYLES.items():
        if pattern.fullmatch(name):
            return style
    return ""


class Share(Record):
    """One convention: what the project does and the share of the code that does it."""

    value: str
    share: float = Field(description="Share of the observed cases that follow ``value`` (0..1).")
    observed: int = Field(description="How many cases (lines, names, literals, files) were looked at.")

    @property
    def strong(self) -> bool:
        return self.share >= STRONG and self.observed >= MIN_OBSERVED


class LanguageConventions(Record):
    language: str
    files: int
    indent: Share | None = Field(None, description="'4 spaces', '2 spaces' or 'tabs'.")
    line_limit: Share | None = Field(None, description="The line length the code keeps under.")
    function_names: Share | None = None
    class_names: Share | None = None
    quotes: Share | None = Field(None, description="'double' or 'single' (Python, JavaScript, TypeScript).")
    imports: dict[str, Share] = Field(default_factory=dict, description="Import style facts (from_import, ...).")
    errors: dict[str, Share] = Field(default_factory=dict, description="Error handling facts (bare_except, ...).")
    error_classes: list[str] = Field(default_factory=list, description="The project's own exception types.")


class ProjectConventions(Record):
    languages: list[LanguageConventions] = Field(default_factory=list)
    test_layout: Share | None = Field(None, description="Where test files live.")
    test_framework: Share | None = None

    def language(self, name: str) -> LanguageConventions | None:
        return next((lang for lang in self.languages if lang.language == name), None)

    def markdown(self) -> str:
        """A summary for a person or a large model: each convention with how firmly it is kept."""

        def item(label: str, share: Share | None) -> str:
            if share is None or not share.observed:
                return ""
            return f"- {label}: {share.value} ({share.share:.0%} of {share.observed})\n"

        out = []
        for lang in self.languages:
            out.append(f"**{lang.language}** ({lang.files} files)\n")
            out.append(item("indentation", lang.indent) + item("lines up to", lang.line_limit)
                       + item("function names", lang.function_names) + item("class names", lang.class_names)
                       + item("string quotes", lang.quotes))
            out += [item(k.replace("_", " "), v) for k, v in lang.imports.items()]
            out += [item(k.replace("_", " "), v) for k, v in lang.errors.items()]
            if lang.error_classes:
                out.append(f"- own exception types: {', '.join(lang.error_classes[:12])}\n")
        if self.test_layout:
            out.append("**tests**\n" + item("layout", self.test_layout) + item("framework", self.test_framework))
        return "".join(out)


def _share(counts: Counter) -> Share | None:
    total = sum(counts.values())
    if not total:
        return None
    value, n = counts.most_common(1)[0]
    return Share(value=str(value), share=round(n / total, 3), observed=total)


def _flag(hits: int, total: int, value: str) -> Share:
    return Share(value=value, share=round(hits / total, 3) if total else 0.0, observed=total)


def _walk(node: Node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def indent_unit(lines: list[str]) -> str | None:
    """The indentation step of one file: 'tabs' or 'N spaces' (the commonest increase between lines)."""
    steps: Counter = Counter()
    previous = 0
    for line in lines:
        if not line.strip():
            continue
        if line.startswith("\t"):
            steps["tabs"] += 1
            continue
        width = len(line) - len(line.lstrip(" "))
        if width > previous:
            step = width - previous
            steps[f"{step} space{'s' if step > 1 else ''}"] += 1
        previous = width
    return steps.most_common(1)[0][0] if steps else None


def line_limit(lengths: list[int]) -> Share | None:
    """The smallest usual limit that 99.5% of the lines keep under (else the longest line)."""
    if not lengths:
        return None
    lengths = sorted(lengths)
    p995 = lengths[min(len(lengths) - 1, int(len(lengths) * 0.995))]
    limit = next((lim for lim in LINE_LIMITS if lim >= p995), lengths[-1])
    return Share(value=str(limit), share=round(sum(n <= limit for n in lengths) / len(lengths), 4),
                 observed=len(lengths))


class FileFacts:
    """What one file shows of each convention, with 1-based line numbers (mining and ``verify`` share it)."""

    def __init__(self, language: str, text: str) -> None:
        self.language = language
        self.lines = text.splitlines()
        self.indent = indent_unit(self.lines)
        self.functions: list[tuple[str, int]] = []
        self.classes: list[tuple[str, int]] = []
        self.error_classes: list[str] = []
        self.quotes: list[tuple[str, int]] = []  # ("double" | "single", line)
        self.facts: list[tuple[str, int]] = []  # (fact name, line): imports, from_import, bare_except, ...
        parser = parser_for(language)
        if parser is not None:
            self._walk(parser.parse(text.encode("utf-8")).root_node)

    def has(self, fact: str) -> bool:
        return any(name == fact for name, _ in self.facts)

    def _walk(self, root: Node) -> None:
        spec = SPECS[self.language]
        for node in _walk(root):
            kind, line = node.type, node.start_point[0] + 1
            if kind in spec.functions or kind in spec.classes:
                name = definition_name(spec, unwrap(spec, node)).rsplit(".", 1)[-1]
                if name:
                    (self.functions if kind in spec.functions else self.classes).append((name, line))
                if kind in spec.classes and self.language == "python" and _is_exception_class(node, name):
                    self.error_classes.append(name)
            elif kind == "string" and self.language in ("python", "javascript", "typescript", "tsx"):
                if quote := _quote(node):
                    self.quotes.append((quote, line))
            if self.language == "python":
                self.facts += [(fact, line) for fact in _python_facts(node)]


def _quote(node: Node) -> str:
    text = node.text.decode("utf-8", "replace").lstrip("rbuRBUfF")
    if text[:3] in ('"""', "'''") or len(text) < 2:
        return ""  # docstrings and triple-quoted blocks follow their own rule
    inner = text[1:-1]
    if text[0] == '"' and "'" not in inner:
        return "double"
    if text[0] == "'" and '"' not in inner:
        return "single"
    return ""


def _python_facts(node: Node) -> list[str]:
    kind = node.type
    if kind == "import_statement":
        return ["imports"]
    if kind == "import_from_statement":
        module = node.child_by_field_name("module_name")
        relative = module is not None and module.type == "relative_import"
        return ["imports", "from_import", *(["relative_import"] if relative else [])]
    if kind == "future_import_statement" and b"annotations" in node.text:
        return ["future_annotations"]
    if kind == "except_clause":
        caught = [c for c in node.children if c.is_named and c.type != "block"]
        if not caught:
            return ["except", "bare_except"]
        return ["except", "broad_except"] if caught[0].text in (b"Exception", b"BaseException") else ["except"]
    if kind == "raise_statement" and node.named_child_count:
        return ["raise", "raise_from"] if node.child_by_field_name("cause") is not None else ["raise"]
    return []


class _LanguageTally:
    def __init__(self, language: str) -> None:
        self.language = language
        self.files = 0
        self.modules = 0  # files defining something: where `from __future__ import annotations` would matter
        self.indents: Counter = Counter()
        self.lengths: list[int] = []
        self.functions: Counter = Counter()
        self.classes: Counter = Counter()
        self.quotes: Counter = Counter()
        self.facts: Counter = Counter()
        self.error_classes: Counter = Counter()

    def add(self, facts: FileFacts) -> None:
        self.files += 1
        self.modules += bool(facts.functions or facts.classes)
        if facts.indent:
            self.indents[facts.indent] += 1
        self.lengths += [len(line) for line in facts.lines if line.strip()]
        self.functions.update(style for name, _ in facts.functions if (style := naming_style(name)))
        self.classes.update(style for name, _ in facts.classes if (style := naming_style(name)))
        self.quotes.update(quote for quote, _ in facts.quotes)
        self.facts.update(name for name, _ in facts.facts)
        self.error_classes.update(facts.error_classes)

    def conventions(self) -> LanguageConventions:
        f = self.facts
        imports, errors = {}, {}
        if self.language == "python":
            if f["imports"]:
                imports["from_import"] = _flag(f["from_import"], f["imports"], "from x import y")
                imports["relative_import"] = _flag(f["relative_import"], f["imports"], "relative imports")
            if self.modules:
                imports["future_annotations"] = _flag(f["future_annotations"], self.modules,
                                                      "from __future__ import annotations")
            if f["except"]:
                errors["bare_except"] = _flag(f["bare_except"], f["except"], "bare `except:`")
                errors["broad_except"] = _flag(f["broad_except"], f["except"], "`except Exception`")
            if f["raise"]:
                errors["raise_from"] = _flag(f["raise_from"], f["raise"], "`raise ... from ...`")
        return LanguageConventions(
            language=self.language, files=self.files, indent=_share(self.indents), line_limit=line_limit(self.lengths),
            function_names=_share(self.functions), class_names=_share(self.classes), quotes=_share(self.quotes),
            imports=imports, errors=errors, error_classes=[n for n, _ in self.error_classes.most_common(20)],
        )


def _is_exception_class(node: Node, name: str) -> bool:
    bases = node.child_by_field_name("superclasses")
    text = bases.text.decode("utf-8", "replace") if bases is not None else ""
    return name.endswith(("Error", "Exception")) or bool(re.search(r"\b\w*(Error|Exception)\b", text))


def test_layout(paths: list[str]) -> Share | None:
    """Where test files live: a top-level folder ('tests/'), or beside the code they test."""
    where: Counter = Counter()
    for path in paths:
        if not _TEST_FILE.search(path):
            continue
        parts = PurePosixPath(path).parts
        top = next((p for p in parts[:-1] if p in ("test", "tests", "spec", "__tests__") or p.endswith("_tests")), "")
        where[f"{top}/ folder" if top else "beside the code"] += 1
    return _share(where)


def test_framework(files: list[SourceFile]) -> Share | None:
    seen: Counter = Counter()
    for f in files:
        if not _TEST_FILE.search(f.path):
            continue
        text = f.text
        if f.language == "python":
            seen["unittest" if "unittest.TestCase" in text or "(TestCase)" in text else "pytest"] += 1
        elif f.language in ("javascript", "typescript", "tsx"):
            seen[next((fw for fw in ("vitest", "jest", "mocha") if fw in text), "jest-style globals")] += 1
        elif f.language == "go":
            seen["go test (testing)"] += 1
        elif f.language == "java":
            seen["JUnit 5" if "org.junit.jupiter" in text else "JUnit"] += 1
    return _share(seen)


def mine_conventions(files: list[SourceFile]) -> ProjectConventions:
    """The conventions of ``files`` (the cleaned sources: vendored and generated code already left out)."""
    tallies: dict[str, _LanguageTally] = {}
    for f in files:
        if f.language in SPECS:
            tallies.setdefault(f.language, _LanguageTally(f.language)).add(FileFacts(f.language, f.text))
    languages = sorted((t.conventions() for t in tallies.values()), key=lambda c: -c.files)
    return ProjectConventions(languages=languages, test_layout=test_layout([f.path for f in files]),
                              test_framework=test_framework(files))
