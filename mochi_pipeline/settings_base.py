"""Base class for every config section: strict, documented, with a stable signature."""

from __future__ import annotations

import hashlib
import json

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A config section. Unknown keys are errors; ``signature()`` changes iff a value changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    def signature(self, *fields: str) -> str:
        """Hash of the section's values (or only of ``fields``): part of the code version of what reads them."""
        values = self.model_dump(mode="json", include=set(fields) if fields else None)
        payload = json.dumps(values, sort_keys=True)
        return hashlib.sha256(f"{type(self).__name__}:{payload}".encode()).hexdigest()[:12]

    def __str__(self) -> str:  # stable, so it can be shown next to a code version
        return f"{type(self).__name__}({self.signature()})"
