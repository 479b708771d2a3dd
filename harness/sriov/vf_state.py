"""What a PF driver says of its VFs, read the same way on an L1 and on a lab host. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

_VF_LINE_RE = re.compile(r"^\s*vf (\d+)\s+(?:link/ether\s+|MAC\s+)([0-9a-fA-F:]{17})(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class VfState:
    """One VF as ``ip link show <pf>`` reports it (None: the PF driver does not say)."""

    index: int
    mac: str
    spoof_check: bool | None = None
    trust: bool | None = None


def _flag(name: str, text: str) -> bool | None:
    m = re.search(rf"{name} (on|off)", text)
    return m.group(1) == "on" if m else None


def parse_vf_states(ip_link_show: str) -> dict[int, VfState]:
    """VF index → state, from iproute2's ``vf N link/ether MAC ..., spoof checking on, ..., trust off`` lines."""
    return {int(m.group(1)): VfState(int(m.group(1)), m.group(2).lower(), _flag("spoof checking", m.group(3)),
                                     _flag("trust", m.group(3)))
            for m in _VF_LINE_RE.finditer(ip_link_show)}
