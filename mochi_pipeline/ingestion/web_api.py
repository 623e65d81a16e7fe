"""What the tracker and CI clients share: times in one ISO form, and telling a timeout from other failures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests
import urllib3


def iso_utc(value: datetime | str | None) -> str:
    """``value`` as ISO-8601 UTC to the second ('2024-05-01T12:00:00Z'); a naive time is UTC; '' for none."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_timeout(exc: BaseException) -> bool:
    """True when ``exc`` or anything it wraps (cause, context, urllib3 reason) is a timeout."""
    stack: list[Any] = [exc]
    seen: set[int] = set()
    while stack:
        err = stack.pop()
        if not isinstance(err, BaseException) or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, urllib3.exceptions.NewConnectionError):
            continue  # a refused connection, though urllib3 derives it from its connect-timeout error
        if isinstance(err, requests.exceptions.Timeout | urllib3.exceptions.TimeoutError | TimeoutError):
            return True
        stack += [err.__cause__, err.__context__, getattr(err, "reason", None), *err.args]
    return False
