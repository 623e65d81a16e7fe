"""Examples from the history: diff -> commit message, and message + code before -> code after.

Merges, bot commits, trivial messages and oversize diffs are dropped and counted by reason.
A multi-file commit gives one diff -> message example over all its files (each file's diff cut to
a fair share of the context budget) and one change example per modified file.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from mochi_pipeline.data_generation.settings import CommitSettings
from mochi_pipeline.records import Commit, FileDiff, TrainingExample

GENERATOR = "commit_pairs"
_BOT_MARKERS = ("[bot]", "dependabot", "renovate", "github-actions")
_EXTENSIONS = {
    ".py": "python",
    ".js": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".tsx": "typescript",
    ".java": "java",
    ".go": "go",
    ".rs": "rust",
    ".c": "c",
    ".h": "c",
    ".cpp": "cpp",
    ".cc": "cpp",
    ".hpp": "cpp",
    ".md": "markdown",
    ".rst": "rst",
    ".adoc": "asciidoc",
}

PAIRS_VERSION = "2"  # bump when the examples built from the same commits change


@dataclass
class CommitResult:
    examples: list[TrainingExample] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    used_commits: int = 0


@dataclass(frozen=True)
class Hunks:
    before: str
    after: str


def language_of(path: str) -> str:
    return _EXTENSIONS.get(PurePosixPath(path).suffix.lower(), "text")


def subject(message: str) -> str:
    return message.strip().split("\n", 1)[0].strip()


def drop_reason(commit: Commit, settings: CommitSettings) -> str:
    """Why a commit gives no examples, or '' when it does."""
    if len(commit.parents) > 1:
        return "merge"
    who = f"{commit.author_name} {commit.author_email}".lower()
    if any(marker in who for marker in _BOT_MARKERS):
        return "bot"
    first = subject(commit.message)
    normalized = re.sub(r"[^\w\s]", "", first.lower()).strip()
    trivial = {re.sub(r"[^\w\s]", "", t.lower()).strip() for t in settings.trivial_messages}
    if normalized in trivial or len(first) < settings.min_message_chars:
        return "trivial_message"
    if not any(f.diff.strip() for f in commit.files):
        return "no_text_diff"
    if sum(f.additions + f.deletions for f in commit.files) > settings.max_diff_lines:
        return "oversize_diff"
    return ""


def split_hunks(diff: str) -> Hunks:
    """Before = context + removed lines, after = context + added lines; hunks separated by '...'."""
    before: list[list[str]] = []
    after: list[list[str]] = []
    in_hunk = False
    for line in diff.splitlines():
        if line.startswith("@@"):
            before.append([])
            after.append([])
            in_hunk = True
            continue
        if not in_hunk or line.startswith("\\"):
            continue
        tag, body = line[:1], line[1:]
        if tag in (" ", ""):
            before[-1].append(body)
            after[-1].append(body)
        elif tag == "-":
            before[-1].append(body)
        elif tag == "+":
            after[-1].append(body)
        elif line.startswith("diff --git"):
            in_hunk = False

    def join(parts: list[list[str]]) -> str:
        return "\n...\n".join("\n".join(p) for p in parts if p) + ("\n" if any(parts) else "")

    return Hunks(before=join(before), after=join(after))


def _diff_body(diff: str) -> str:
    """The diff from its first hunk header on (git's 'diff --git'/'index' lines carry no meaning for the model)."""
    at = diff.find("@@")
    return diff[at:] if at >= 0 else diff


def combined_diff(files: list[FileDiff], budget: int) -> str:
    """Every file's diff cut to an equal share of ``budget``; files that no longer fit are listed by name."""
    texts = [f for f in files if f.diff.strip() and "@@" in f.diff]
    share = max(200, budget // max(1, len(texts)))
    parts: list[str] = []
    used = 0
    for n, f in enumerate(texts):
        body = _diff_body(f.diff)
        if len(body) > share:
            body = body[:share].rsplit("\n", 1)[0] + f"\n[... {len(body) - share} more characters of this file's diff]"
        name = f"{f.old_path} -> {f.path}" if f.old_path and f.old_path != f.path else f.path
        part = f"--- {name} ({f.status})\n{body.rstrip()}\n"
        if parts and used + len(part) > budget:
            rest = texts[n:]
            parts.append(f"[... {len(rest)} more changed files: {', '.join(r.path for r in rest)}]\n")
            break
        parts.append(part)
        used += len(part)
    return "\n".join(parts)


def not_code_on_a_side(diff: str) -> bool:
    """Whether either side of a file's diff is a symbolic link (git mode 120000) or a submodule (160000): the
    "content" there is a target path or a commit id, e.g. a file turned into a link, a submodule bumped."""
    header = (line for line in diff.splitlines() if not line.startswith(("@@", "+", "-", " ", "\\")))
    return any(line.endswith((" 120000", " 160000")) for line in header)  # new/deleted file mode, old/new, index


def commit_examples(commit: Commit, settings: CommitSettings) -> list[TrainingExample]:
    base = dict(generator=GENERATOR, commit=commit.sha, date=commit.date)
    message = commit.message.strip()
    changed = [f for f in commit.files if f.diff.strip()]
    paths = ", ".join(f.path for f in changed)
    examples = [
        TrainingExample(
            instruction="Write a commit message for this change.",
            context=combined_diff(changed, settings.max_context_chars),
            response=message,
            task="commit_message",
            path=changed[0].path if len(changed) == 1 else paths,
            language=language_of(changed[0].path) if len(changed) == 1 else "",
            **base,
        )
    ]
    for f in changed:
        if f.status not in ("M", "R"):
            continue  # an added or deleted file has no "before" (or no "after") to learn a change from
        if not_code_on_a_side(f.diff):
            continue  # a link target or a submodule's commit id: nothing to learn about the code
        hunks = split_hunks(f.diff)
        if not hunks.after.strip() or hunks.before == hunks.after:
            continue
        examples.append(
            TrainingExample(
                instruction=f"Apply this change to `{f.path}` (the context shows the code before it): {message}",
                context=hunks.before,
                response=hunks.after,
                task="commit_change",
                path=f.path,
                language=language_of(f.path),
                **base,
            )
        )
    return examples


def commit_pairs(commits: list[Commit], settings: CommitSettings) -> CommitResult:
    result = CommitResult()
    for commit in commits:
        reason = drop_reason(commit, settings)
        if reason:
            result.dropped[reason] += 1
            continue
        result.used_commits += 1
        result.examples += commit_examples(commit, settings)
    return result
