"""Reading back the JSON Lines files the harness writes (QMP transcripts, a lab host's undo notes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def json_records(text: str) -> Iterator[dict[str, Any]]:
    """Each line of *text* that holds a JSON object, in order. A writer killed mid-line leaves a torn
    last line, which is skipped like any line that is not an object. Pure."""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            yield record
