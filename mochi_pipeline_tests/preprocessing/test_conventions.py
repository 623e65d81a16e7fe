"""Conventions mined with tree-sitter from real source text, and new code checked against them."""

from __future__ import annotations

import pytest

from mochi_pipeline.deployment.assist import convention_findings
from mochi_pipeline.preprocessing.conventions import indent_unit, line_limit, mine_conventions, naming_style
from mochi_pipeline.records import SourceFile

MODULE = '''"""Module {i}."""

from __future__ import annotations

from pathlib import Path

from pkg.errors import StoreError


class Store{i}:
    """A store."""

    def load_items(self, path: str) -> list[str]:
        try:
            return Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as err:
            raise StoreError(f"cannot read {{path}}") from err


def make_store_{i}(name: str) -> Store{i}:
    return Store{i}()
'''


def _files() -> list[SourceFile]:
    files = [SourceFile(path=f"pkg/store_{i}.py", language="python", text=MODULE.format(i=i), sha=str(i), size=1)
             for i in range(8)]
    files.append(SourceFile(path="pkg/errors.py", language="python", sha="e", size=1,
                            text="class StoreError(RuntimeError):\n    pass\n"))
    files.append(SourceFile(path="tests/test_store.py", language="python", sha="t", size=1,
                            text="import pytest\n\n\ndef test_store():\n    assert True\n"))
    files.append(SourceFile(path="web/app.js", language="javascript", sha="j", size=1,
                            text="function loadItems(path) {\n  if (path) {\n    return [path];\n  }\n}\n"))
    return files


@pytest.fixture(scope="module")
def conventions():
    return mine_conventions(_files())


@pytest.mark.parametrize(("name", "style"), [("load_items", "snake_case"), ("loadItems", "camelCase"),
                                             ("StoreError", "PascalCase"), ("MAX_SIZE", "UPPER_CASE"),
                                             ("run", ""), ("_private_name", "snake_case")])
def test_naming_style(name, style):
    assert naming_style(name) == style


def test_indent_and_line_limit_of_plain_text():
    assert indent_unit(["def f():", "    if x:", "        pass"]) == "4 spaces"
    assert indent_unit(["function f() {", "\treturn 1;", "}"]) == "tabs"
    assert line_limit([10] * 995 + [85] * 5).value == "88"  # 99.5% of lines within 88
    assert line_limit([10, 200]).value == "200"  # no usual limit fits: the longest line


def test_mined_per_language(conventions):
    py, js = conventions.language("python"), conventions.language("javascript")
    assert (py.files, js.files) == (10, 1)
    assert py.indent.value == "4 spaces" and js.indent.value == "2 spaces"
    assert py.function_names.value == "snake_case" and py.function_names.share == 1.0
    assert py.class_names.value == "PascalCase" and js.function_names.value == "camelCase"
    assert py.quotes.value == "double"
    assert py.imports["future_annotations"].share == 0.8  # 8 of the 10 modules defining something
    assert py.imports["relative_import"].share == 0.0
    assert py.imports["from_import"].share == round(16 / 17, 3)  # the test file has `import pytest`
    assert py.errors["raise_from"].share == 1.0 and py.errors["bare_except"].share == 0.0
    assert py.error_classes == ["StoreError"]
    assert conventions.test_layout.value == "tests/ folder" and conventions.test_framework.value == "pytest"
    summary = conventions.markdown()
    assert "function names: snake_case (100% of 17)" in summary and "**javascript** (1 files)" in summary


def test_code_that_follows_the_project_has_no_findings(conventions):
    assert convention_findings(MODULE.format(i=9), "python", conventions) == []


def test_departures_are_found_with_line_reason_and_suggestion(conventions):
    code = (
        "from .errors import StoreError\n"
        "\n"
        "\n"
        "def loadItems(path):\n"
        "  try:\n"
        "    return open(path).read()\n"
        "  except:\n"
        "    return 'nothing at all'\n"
    )
    found = {f.rule: f for f in convention_findings(code, "python", conventions)}
    assert set(found) == {"relative_import", "function_naming", "indentation", "bare_except", "quotes",
                          "future_annotations"}
    assert found["function_naming"].line == 4 and found["function_naming"].suggestion == "rename to load_items"
    assert "snake_case" in found["function_naming"].reason
    assert found["indentation"].line == 5 and "4 spaces" in found["indentation"].suggestion
    assert found["bare_except"].line == 7 and found["relative_import"].line == 1
    assert found["quotes"].line == 8 and all(f.kind == "convention" for f in found.values())


def test_a_mixed_project_enforces_nothing():
    mixed = [SourceFile(path=f"m{i}.py", language="python", sha=str(i), size=1,
                        text=f"def {'getValue' if i % 2 else 'get_value'}{i}():\n    return 'x'\n") for i in range(10)]
    conventions = mine_conventions(mixed)
    assert conventions.language("python").function_names.share == 0.5
    assert [f.rule for f in convention_findings("def fetchIt():\n    return 'y'\n", "python", conventions)] == []
