"""What a long step tells the person watching it: progress (step n of N, with figures) and notices.

The logic modules report through the plain ``log`` callable they already take: a ``Progress`` or a
``Notice`` is still a line of text for ``print`` or a Dagster log, and ``step_log`` gives an asset's
``context.log`` the structured part too, so `mochi run`'s display draws a bar with an ETA from it and
lists the notices in its closing summary, while the Dagster UI shows the same lines in the run's logs.
Free of Dagster: ``step_log`` only needs an object with a ``.log`` logger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

PROGRESS_ATTR = "mochi_progress"  # the ``extra`` key a Progress travels under in a log record


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``task`` (e.g. training steps), with the figures of the moment."""

    task: str
    done: int
    total: int
    figures: dict[str, float] = field(default_factory=dict)
    unit: str = "step"

    def __str__(self) -> str:
        shown = ", ".join(f"{k} {_figure(v)}" for k, v in self.figures.items())
        return f"{self.task}: {self.unit} {self.done}/{self.total}" + (f": {shown}" if shown else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Notice(str):
    """A line the person should read at the end of the run too: data left out, a doubtful result."""


def _figure(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def step_log(context: Any) -> Callable[[object], None]:
    """``log`` for the logic modules, writing to an asset's ``context.log``.

    A ``Progress`` goes out as info with its fields attached (``PROGRESS_ATTR``), a ``Notice`` as a
    warning, anything else as info.
    """

    def log(message: object) -> None:
        if isinstance(message, Progress):
            context.log.info(str(message), extra={PROGRESS_ATTR: message.as_dict()})
        elif isinstance(message, Notice):
            context.log.warning(str(message))
        else:
            context.log.info(str(message))

    return log
