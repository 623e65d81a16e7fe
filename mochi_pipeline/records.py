"""The records that flow between assets.

Each is a frozen pydantic model so it round-trips through JSONL unchanged (see ``io_manager``).
Fields only grow; a later layer never needs to re-read the repository to use them.

Every ``Record`` subclass registers itself by name: a stored artifact names its record type, and
reading one looks the name up here instead of importing whatever module the file names.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: ClassVar[dict[str, type[Record]]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        Record.registry[record_name(cls)] = cls


def record_name(cls: type) -> str:
    """The name a stored artifact uses for its record type."""
    return f"{cls.__module__}:{cls.__qualname__}"


# --- ingestion -------------------------------------------------------------------------------


class SourceFile(Record):
    """One tracked text file at the selected revision."""

    path: str = Field(description="Path relative to the repository root, '/'-separated.")
    language: str = Field(description="Language name (python, javascript, markdown, ...) or 'text'.")
    text: str
    sha: str = Field(description="Git blob SHA: identical content has the identical key.")
    size: int = Field(description="Size in bytes.")
    last_commit_sha: str = ""
    last_commit_date: str = Field("", description="ISO-8601 committer date of the last change.")


class FileDiff(Record):
    path: str
    old_path: str = ""
    status: str = Field(description="A, M, D or R (added, modified, deleted, renamed).")
    additions: int = 0
    deletions: int = 0
    diff: str = Field("", description="Unified diff of this file (empty for binary files).")
    binary: bool = Field(False, description="True when git treats the file as binary (no line counts, no diff).")


class Commit(Record):
    sha: str
    parents: list[str]
    author_name: str
    author_email: str
    date: str = Field(description="ISO-8601 committer date.")
    message: str
    files: list[FileDiff] = []
    tags: list[str] = Field([], description="Tags pointing at this commit (annotated tags peeled), sorted.")


class CodeBlock(Record):
    language: str = Field(description="Declared language of the block, '' if none.")
    code: str
    start_line: int = 0


class DocSection(Record):
    path: str
    heading_path: list[str] = Field(description="Headings from the document title down to this section.")
    text: str
    code_blocks: list[CodeBlock] = []
    start_line: int
    end_line: int
    format: str = Field(description="markdown, rst, asciidoc or text.")


class ThreadComment(Record):
    """One comment of an issue / pull request / merge request thread, or a review comment on a diff line."""

    author: str = Field(description="The account's login (pseudonymised by clean_issue_threads).")
    body: str
    created_at: str = Field(description="ISO-8601 UTC.")
    kind: str = Field("comment", description="comment, review (a review's summary) or review_comment (on a line).")
    path: str = Field("", description="File a review comment is on, '' otherwise.")
    accepted: bool = Field(False, description="Marked as the answer (a discussion's accepted answer).")
    author_is_bot: bool = False


class IssueThread(Record):
    """An issue, pull request or merge request of a tracker, with its discussion and what closed it."""

    tracker: str = Field(description="github, gitlab or jira.")
    project: str = Field(description="owner/name, group/project path or Jira project key.")
    number: str = Field(description="The tracker's own id: '123' (GitHub, GitLab iid) or 'PROJ-123' (Jira).")
    kind: str = Field(description="issue, pull_request, merge_request or discussion (GitHub, answered Q&A).")
    title: str
    body: str = ""
    author: str = ""
    author_is_bot: bool = False
    state: str = Field(description="open, closed or merged.")
    labels: list[str] = []
    created_at: str = ""
    updated_at: str = Field("", description="ISO-8601 UTC; the incremental cursor is the newest of these.")
    closed_at: str = ""
    url: str = ""
    comments: list[ThreadComment] = []
    closing_commits: list[str] = Field(
        [], description="SHAs of the commits that closed it (a merged request: its merge or squash commit)."
    )
    closed_by: list[str] = Field([], description="Numbers of the pull/merge requests that closed this issue.")


class CIFailure(Record):
    """A failed CI job, reduced to its error excerpt, and the commit whose run of the same job passed next."""

    system: str = Field(description="github_actions or gitlab_ci.")
    project: str
    pipeline: str = Field(description="Workflow (GitHub Actions) or pipeline (GitLab) name.")
    job: str = Field(description="The failed job's name.")
    job_id: str
    url: str = ""
    commit: str = Field(description="SHA the job failed on.")
    branch: str = ""
    failed_at: str = Field(description="ISO-8601 UTC.")
    excerpt: str = Field(description="The error lines of the log, ANSI codes, timestamps and progress noise removed.")
    fixed_by: str = Field("", description="SHA of the next commit on the same branch whose run of the job passed.")


# --- preprocessing ---------------------------------------------------------------------------


class Chunk(Record):
    """A piece of source code cut along syntax boundaries, within a token budget."""

    id: str = Field(description="Stable id: hash of path, line range and text.")
    path: str
    language: str
    symbol: str = Field("", description="Qualified name of the definition ('Class.method'), '' if none.")
    kind: str = Field(description="function, class, module (code between definitions), file, window, or merged.")
    start_line: int = Field(description="1-based, inclusive.")
    end_line: int = Field(description="1-based, inclusive.")
    text: str
    n_tokens: int
    context: str = Field("", description="Context header: path, module docstring, imports used, enclosing class.")
    file_sha: str = ""
    file_date: str = Field("", description="Commit date of the file's last change (for time-based splits).")


# --- data generation -------------------------------------------------------------------------


class TrainingExample(Record):
    """One training example in the design's format, plus its source for lineage."""

    instruction: str
    context: str = ""
    response: str
    task: str = Field(
        description="next_line, next_block, fim_psm, fim_spm, explain, implement, commit_message, commit_change, qa, "
        "issue_resolution, pr_change, discussion_qa, ci_fix"
    )
    generator: str = Field(description="completion_pairs, doc_code_mapping, commit_pairs, qa_generator, issue_pairs "
                           "or ci_fix_pairs.")
    path: str = ""
    commit: str = ""
    language: str = ""
    date: str = Field("", description="Commit date of the source, used for the time split.")
    raw_text: str = Field("", description="Plain text form (dedup, decontamination, causal LM training); '' means "
                          "build from fields.")
    prefix: str = Field("", description="Fill-in-the-middle: the code before the middle (the response).")
    suffix: str = Field("", description="Fill-in-the-middle: the code after the middle.")
