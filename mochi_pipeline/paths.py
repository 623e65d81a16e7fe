"""Where a project lives: the repository it reads and the artifacts root every write goes under.

Paths are not settings: moving a checkout or an artifacts root changes no code version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProjectPaths:
    artifacts: Path  # absolute; every artifact is written below it
    repo_source: str  # absolute local path, or the remote URL as configured

    def path(self, *parts: str) -> Path:
        """A path under the artifacts root (its parent directories created)."""
        p = self.artifacts.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p
