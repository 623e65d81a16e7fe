"""Helpers that turn results into Dagster metadata a person reads in the UI."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import dagster as dg
from pydantic import BaseModel

from mochi_pipeline.storage import content_hash


def records_hash(records: Sequence[BaseModel], *extra: str) -> str:
    """Data version of a list of records: unchanged content keeps the version, stopping propagation."""
    return content_hash(*extra, *(r.model_dump_json() for r in records))


def md_table(header: Sequence[str], rows: Sequence[Sequence[object]], max_cell: int = 80) -> str:
    def cell(value: object) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")[:max_cell]

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG embedded in markdown metadata, so the UI shows the plot itself."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")
