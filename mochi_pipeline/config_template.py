"""The commented ``mochi.yaml`` that ``mochi init`` writes, generated from the config models.

Generated rather than hand-written so the template can never drift from what the loader accepts.
"""

from __future__ import annotations

from enum import Enum

import yaml
from pydantic import BaseModel

from mochi_pipeline.config import MochiConfig
from mochi_pipeline.training.settings import PRESET_DEFAULTS, TrainingSettings

PRESET_KEYS = {key for defaults in PRESET_DEFAULTS.values() for key in defaults}
HEADER = """\
# mochi project config. Every key is optional: the values shown are the defaults.
# Relative paths are relative to this file. Validate with `mochi status`.
"""


def _scalar(value: object) -> str:
    if isinstance(value, Enum):
        value = value.value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").strip()


def _render(model: BaseModel, indent: int) -> list[str]:
    lines: list[str] = []
    pad = "  " * indent
    for name, field in type(model).model_fields.items():
        if field.exclude:
            continue
        value = getattr(model, name)
        if field.description:
            lines.append(f"{pad}# {field.description}")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            lines.extend(_render(value, indent + 1))
        elif isinstance(model, TrainingSettings) and name in PRESET_KEYS:
            # Left to the preset, so a later change of base_model brings that model's own default (any key a preset
            # sets: written out, a key the default preset leaves alone would pin its plain value on every other).
            if name in PRESET_DEFAULTS.get(model.base_model, {}):
                why = f"set by the {model.base_model} preset; otherwise {_scalar(field.default)}"
            else:
                why = "other base presets set their own"
            lines.append(f"{pad}# {name}: {_scalar(value)}   ({why})")
        else:
            lines.append(f"{pad}{name}: {_scalar(value)}")
    return lines


def render_template() -> str:
    return HEADER + "\n".join(_render(MochiConfig(), 0)) + "\n"
