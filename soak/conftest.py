"""The soak case's deadline grows with its migrations (pytest-timeout's 900 s default stopped a
100-hop nested soak at hop 47). Each hop has its own deadlines (the thresholds' ``*_deadline_s``);
this one only stops a run that hangs between them."""

from __future__ import annotations

import pytest

# Per hop: a nested hop takes 15-35 s under TCG; a flat one 3 s.
SOAK_DEADLINE_PER_HOP_S = 120
SOAK_DEADLINE_BASE_S = 900  # the bed's build: two L1s and an L2 boot on nested


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A longer --timeout given by the user stands; a shorter one would stop any soak of that length.
    deadline = max(SOAK_DEADLINE_BASE_S + SOAK_DEADLINE_PER_HOP_S * config.option.soak_migrations,
                   getattr(config.option, "timeout", None) or 0)
    for item in items:
        item.add_marker(pytest.mark.timeout(deadline))
