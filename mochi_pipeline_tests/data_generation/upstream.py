"""Upstream records (Chunk, DocSection, Commit) read straight from a real git repository.

Deliberately simple and independent of the ingestion/preprocessing layers, so the data generation
tests exercise real repository content without depending on those layers' internals.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from mochi_pipeline.records import Chunk, CodeBlock, Commit, DocSection, FileDiff

CODE_LANGUAGES = {
    ".py": "python",
    ".js": "javascript",
    ".ts": "typescript",
    ".java": "java",
    ".go": "go",
    ".rs": "rust",
    ".c": "c",
    ".cpp": "cpp",
}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True).stdout.decode(
        "utf-8", "replace"
    )


def file_date(repo: Path, path: str) -> str:
    return git(repo, "log", "-1", "--format=%cI", "--", path).strip()


def chunks_of(repo: Path) -> list[Chunk]:
    """Python files cut at top-level definitions; other languages one chunk per file."""
    chunks = []
    for path in git(repo, "ls-files").split():
        language = CODE_LANGUAGES.get(Path(path).suffix)
        text = (repo / path).read_text(encoding="utf-8") if language else ""
        if not text.strip():
            continue
        lines = text.splitlines(keepends=True)
        starts = [i for i, ln in enumerate(lines) if language == "python" and re.match(r"(@|def |class )", ln)]
        starts = [s for s in starts if s == 0 or not lines[s - 1].startswith("@")] or [0]
        bounds = list(zip(starts, starts[1:] + [len(lines)], strict=True))
        imports = "".join(ln for ln in lines if re.match(r"(import |from \S+ import |#include)", ln))
        for start, end in bounds:
            body = "".join(lines[start:end]).rstrip() + "\n"
            symbol = re.match(r"(?:@\w+\s+)*(?:def|class)\s+(\w+)", body.lstrip())
            chunks.append(
                Chunk(
                    id=hashlib.sha256(f"{path}:{start}:{body}".encode()).hexdigest()[:16],
                    path=path,
                    language=language,
                    symbol=symbol.group(1) if symbol else "",
                    kind=("class" if body.lstrip().startswith(("class", "@")) else "function") if symbol else "file",
                    start_line=start + 1,
                    end_line=end,
                    text=body,
                    n_tokens=len(body.split()),
                    context=f"# {path}\n{imports}",
                    file_date=file_date(repo, path),
                )
            )
    return chunks


def docs_of(repo: Path) -> list[DocSection]:
    """Markdown sections by '#' headings and reStructuredText sections by underlined titles, with code blocks."""
    sections = []
    for path in git(repo, "ls-files").split():
        if not path.endswith((".md", ".rst")):
            continue
        lines = (repo / path).read_text(encoding="utf-8").splitlines()
        heads = []
        for i, ln in enumerate(lines):
            if path.endswith(".md") and ln.startswith("#"):
                heads.append((i, ln.lstrip("#").strip(), i + 1))
            elif (
                path.endswith(".rst")
                and i + 1 < len(lines)
                and re.fullmatch(r"[=\-~]{3,}", lines[i + 1])
                and ln.strip()
            ):
                heads.append((i, ln.strip(), i + 2))
        for n, (start, title, body_start) in enumerate(heads):
            end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
            body = lines[body_start:end]
            blocks = re.findall(r"```(\w*)\n(.*?)```", "\n".join(body) + "\n", re.S)
            blocks += re.findall(r"\.\. code-block:: (\w+)\n\n((?:   .*\n?)+)", "\n".join(body) + "\n")
            sections.append(
                DocSection(
                    path=path,
                    heading_path=[heads[0][1], title] if n else [title],
                    text="\n".join(body).strip(),
                    code_blocks=[CodeBlock(language=lang, code=code) for lang, code in blocks],
                    start_line=start + 1,
                    end_line=end,
                    format="markdown" if path.endswith(".md") else "rst",
                )
            )
    return sections


def commits_of(repo: Path) -> list[Commit]:
    commits = []
    log = git(repo, "log", "--format=%H%x00%P%x00%an%x00%ae%x00%cI%x00%B%x01")
    for entry in log.split("\x01"):
        if not entry.strip():
            continue
        sha, parents, name, email, date, message = entry.strip("\n").split("\x00")
        files = []
        if len(parents.split()) <= 1:
            patch = git(repo, "show", "--format=", "-p", sha)
            numstat = git(repo, "show", "--format=", "--numstat", sha).splitlines()
            status = dict(
                reversed(ln.split("\t", 1)) for ln in git(repo, "show", "--format=", "--name-status", sha).splitlines()
            )
            diffs = {
                m.group(1): m.group(0)
                for m in re.finditer(r"^diff --git a/(\S+) b/\S+\n.*?(?=^diff --git|\Z)", patch, re.S | re.M)
            }
            for row in numstat:
                added, deleted, path = row.split("\t")
                files.append(
                    FileDiff(
                        path=path,
                        status=status.get(path, "M"),
                        additions=int(added) if added != "-" else 0,
                        deletions=int(deleted) if deleted != "-" else 0,
                        diff=diffs.get(path, "") if added != "-" else "",
                    )
                )
        commits.append(
            Commit(
                sha=sha,
                parents=parents.split(),
                author_name=name,
                author_email=email,
                date=date,
                message=message.strip(),
                files=files,
            )
        )
    return commits
