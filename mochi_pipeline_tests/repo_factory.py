"""Builds real git repositories for tests and benchmarks: several languages, docs, a history."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CORE_PY = '''"""Core geometry helpers for the sample project."""

import math
from dataclasses import dataclass


@dataclass
class Point:
    """A point in the plane."""

    x: float
    y: float

    def distance_to(self, other: "Point") -> float:
        """Euclidean distance between two points."""
        return math.hypot(self.x - other.x, self.y - other.y)

    def scaled(self, factor: float) -> "Point":
        """Return this point scaled by ``factor``."""
        return Point(self.x * factor, self.y * factor)


def centroid(points: list[Point]) -> Point:
    """Return the centroid of ``points``; raises ValueError when empty."""
    if not points:
        raise ValueError("centroid of no points")
    n = len(points)
    return Point(sum(p.x for p in points) / n, sum(p.y for p in points) / n)


def perimeter(points: list[Point]) -> float:
    """Length of the closed polygon through ``points``."""
    total = 0.0
    for a, b in zip(points, points[1:] + points[:1]):
        total += a.distance_to(b)
    return total
'''

UTIL_PY = '''"""Small utilities."""

import json
import os


def load_settings(path: str) -> dict:
    """Read a JSON settings file, returning {} when it does not exist."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def clamp(value: float, low: float, high: float) -> float:
    """Clamp ``value`` into [low, high]."""
    return max(low, min(high, value))
'''

# An exact copy of clamp() in another file, and a near copy (one identifier renamed).
DUP_PY = '''"""Duplicated helpers (as real projects have)."""


def clamp(value: float, low: float, high: float) -> float:
    """Clamp ``value`` into [low, high]."""
    return max(low, min(high, value))


def load_settings_file(path: str) -> dict:
    """Read a JSON settings file, returning {} when it does not exist."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
'''

TEST_PY = '''from pkg.core import Point, centroid


def test_centroid():
    assert centroid([Point(0, 0), Point(2, 2)]) == Point(1, 1)
'''

JS = '''// Event emitter
export class Emitter {
  constructor() { this.handlers = {}; }
  on(name, fn) { (this.handlers[name] ||= []).push(fn); return this; }
  emit(name, ...args) { (this.handlers[name] || []).forEach((fn) => fn(...args)); }
}

export function once(emitter, name, fn) {
  const wrapper = (...args) => { fn(...args); };
  emitter.on(name, wrapper);
}
'''

TS = '''export interface Shape { area(): number; }

export class Square implements Shape {
  constructor(private side: number) {}
  area(): number { return this.side * this.side; }
}

export function totalArea(shapes: Shape[]): number {
  return shapes.reduce((sum, s) => sum + s.area(), 0);
}
'''

JAVA = '''package sample;

public class Counter {
    private int count;

    public void increment() {
        count += 1;
    }

    public int get() {
        return count;
    }
}
'''

GO = '''package sample

// Sum adds integers.
func Sum(xs []int) int {
	total := 0
	for _, x := range xs {
		total += x
	}
	return total
}

type Stack struct{ items []int }

func (s *Stack) Push(x int) { s.items = append(s.items, x) }
'''

RUST = '''/// A simple counter.
pub struct Counter { count: u32 }

impl Counter {
    pub fn new() -> Self { Counter { count: 0 } }
    pub fn tick(&mut self) -> u32 { self.count += 1; self.count }
}

pub fn double(x: u32) -> u32 { x * 2 }
'''

C = '''#include <stdio.h>

int add(int a, int b) {
    return a + b;
}

int main(void) {
    printf("%d\\n", add(1, 2));
    return 0;
}
'''

CPP = '''#include <vector>

class Accumulator {
 public:
  void add(int x) { total_ += x; }
  int total() const { return total_; }
 private:
  int total_ = 0;
};

int sum(const std::vector<int>& xs) {
  int s = 0;
  for (int x : xs) s += x;
  return s;
}
'''

README = '''# Sample project

[![build](https://img.shields.io/badge/build-passing-green.svg)](https://ci.example.com)

A tiny geometry library. See [the guide](docs/guide.rst).

## Usage

Compute the centroid of points with `centroid`:

```python
from pkg.core import Point, centroid
centroid([Point(0, 0), Point(2, 2)])
```

## Settings

`load_settings` reads a JSON file and `clamp` keeps values in range.
'''

GUIDE_RST = '''Guide
=====

Points
------

A ``Point`` has ``x`` and ``y``. Use ``distance_to`` for distances.

.. code-block:: python

   a = Point(0, 0)
   a.distance_to(Point(3, 4))

Polygons
--------

``perimeter`` sums the sides of a closed polygon.
'''

NOTES_ADOC = '''= Notes

== Design

The emitter keeps handlers per event name.

[source,javascript]
----
const e = new Emitter();
e.on("x", console.log);
----
'''


def git(repo: Path, *args: str, date: str | None = None, author: str = "Ada Lovelace <ada@example.com>") -> str:
    name, _, email = author.partition(" <")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email.rstrip(">"),
        "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email.rstrip(">"),
        "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_SYSTEM": os.devnull,
    }
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    out = subprocess.run(["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip()


def write(repo: Path, rel: str, content: str | bytes) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def commit(repo: Path, message: str, date: str, files: dict[str, str | bytes], author: str | None = None) -> str:
    for rel, content in files.items():
        write(repo, rel, content)
    git(repo, "add", "-A")
    kwargs = {"author": author} if author else {}
    git(repo, "commit", "-q", "-m", message, date=date, **kwargs)
    return git(repo, "rev-parse", "HEAD")


def make_sample_repo(root: Path) -> Path:
    """A repository with 8 languages, 3 doc formats, duplicates, a binary and a non-UTF-8 file.

    History (oldest first): initial code, docs, a feature on a branch merged back, a bot commit,
    a "wip" commit, and a late change to ``pkg/util.py`` (the newest file by commit date).
    """
    repo = root / "sample"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "Add geometry core with Point, centroid and perimeter", "2024-01-01T10:00:00+00:00", {
        "pkg/__init__.py": "",
        "pkg/core.py": CORE_PY,
        "tests/test_core.py": TEST_PY,
    })
    commit(repo, "Add sources in seven more languages", "2024-02-01T10:00:00+00:00", {
        "web/emitter.js": JS, "web/shapes.ts": TS, "java/sample/Counter.java": JAVA,
        "go/sum.go": GO, "rust/counter.rs": RUST, "c/add.c": C, "cpp/acc.cpp": CPP,
    })
    commit(repo, "Document usage in README, guide and notes", "2024-03-01T10:00:00+00:00", {
        "README.md": README, "docs/guide.rst": GUIDE_RST, "docs/notes.adoc": NOTES_ADOC,
        "assets/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)),
        "legacy/latin1.txt": "caf\xe9 cr\xe8me\n".encode("latin-1"),
    })
    git(repo, "checkout", "-q", "-b", "feature")
    commit(repo, "Add settings loader and clamp helper", "2024-04-01T10:00:00+00:00", {
        "pkg/util.py": UTIL_PY, "pkg/dup.py": DUP_PY,
    })
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "feature", "-m", "Merge branch 'feature'", date="2024-04-02T10:00:00+00:00")
    commit(repo, "Bump dependencies", "2024-04-03T10:00:00+00:00", {"requirements.txt": "requests==2.0\n"},
           author="dependabot[bot] <bot@example.com>")
    commit(repo, "wip", "2024-04-04T10:00:00+00:00", {"notes.txt": "todo\n"})
    commit(repo, "Make clamp reject an empty range with a clear error", "2024-05-01T10:00:00+00:00", {
        "pkg/util.py": UTIL_PY.replace(
            '    """Clamp ``value`` into [low, high]."""\n',
            '    """Clamp ``value`` into [low, high]."""\n'
            '    if low > high:\n        raise ValueError("empty range")\n',
        ),
    })
    return repo


# Later history, so the held-out part has several changes for assist_evaluation to rank against each other.
LATER_COMMITS = [
    ("Add an inventory of stock levels", "2024-06-01T10:00:00+00:00", {"pkg/inventory.py": (
        "def restock(levels: dict[str, int], item: str, amount: int) -> dict[str, int]:\n"
        "    \"\"\"Add ``amount`` units of ``item``.\"\"\"\n"
        "    updated = dict(levels)\n    updated[item] = updated.get(item, 0) + amount\n    return updated\n\n\n"
        "def out_of_stock(levels: dict[str, int]) -> list[str]:\n"
        "    \"\"\"Items with no units left, sorted.\"\"\"\n"
        "    return sorted(item for item, count in levels.items() if count <= 0)\n")}),
    ("Add temperature conversions", "2024-06-02T10:00:00+00:00", {"pkg/units.py": (
        "def celsius_to_fahrenheit(celsius: float) -> float:\n"
        "    \"\"\"Degrees Fahrenheit for ``celsius``.\"\"\"\n    return celsius * 9 / 5 + 32\n\n\n"
        "def fahrenheit_to_celsius(fahrenheit: float) -> float:\n"
        "    \"\"\"Degrees Celsius for ``fahrenheit``.\"\"\"\n    return (fahrenheit - 32) * 5 / 9\n")}),
    ("Reject negative restocks", "2024-06-03T10:00:00+00:00", {"pkg/inventory.py": (
        "def restock(levels: dict[str, int], item: str, amount: int) -> dict[str, int]:\n"
        "    \"\"\"Add ``amount`` units of ``item``.\"\"\"\n    if amount < 0:\n"
        "        raise ValueError(f\"cannot restock {amount} units of {item}\")\n"
        "    updated = dict(levels)\n    updated[item] = updated.get(item, 0) + amount\n    return updated\n\n\n"
        "def out_of_stock(levels: dict[str, int]) -> list[str]:\n"
        "    \"\"\"Items with no units left, sorted.\"\"\"\n"
        "    return sorted(item for item, count in levels.items() if count <= 0)\n")}),
    ("Round conversions to one decimal", "2024-06-04T10:00:00+00:00", {"pkg/units.py": (
        "def celsius_to_fahrenheit(celsius: float) -> float:\n"
        "    \"\"\"Degrees Fahrenheit for ``celsius``.\"\"\"\n    return round(celsius * 9 / 5 + 32, 1)\n\n\n"
        "def fahrenheit_to_celsius(fahrenheit: float) -> float:\n"
        "    \"\"\"Degrees Celsius for ``fahrenheit``.\"\"\"\n    return round((fahrenheit - 32) * 5 / 9, 1)\n")}),
    ("Add a retry helper", "2024-06-05T10:00:00+00:00", {"pkg/retry.py": (
        "import time\n\n\ndef retry(action, attempts: int = 3, delay: float = 0.5):\n"
        "    \"\"\"Call ``action`` until it succeeds, at most ``attempts`` times.\"\"\"\n"
        "    for attempt in range(1, attempts + 1):\n        try:\n            return action()\n"
        "        except OSError:\n            if attempt == attempts:\n                raise\n"
        "            time.sleep(delay * attempt)\n")}),
]
