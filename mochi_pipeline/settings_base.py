"""Base class for every config section: strict, documented, with a stable signature."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys are errors; ``signature()`` changes iff a value changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def signature(self) -> str:
        payload = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(f"{type(self).__name__}:{payload}".encode()).hexdigest()[:12]

    def __str__(self) -> str:  # stable, so it can feed a code_version
        return f"{type(self).__name__}({self.signature()})"
