"""Reading sysfs on a host through the :class:`~harness.hosts.Host` protocol (local or SSH).

Shared by the lab doctor and the certification record, so that both read a
host's PCI devices the same way: one ``cat`` or ``readlink`` per value, an
absent attribute or link being an answer (None, "") rather than an error.
"""

from __future__ import annotations

from harness.hosts import Host


def link_name(host: Host, path: str) -> str:
    """The last component of where sysfs link *path* leads (``.../driver`` → ``vfio-pci``); "" if absent."""
    result = host.run(["readlink", "-e", "--", path])
    return result.output.strip().rsplit("/", 1)[-1] if result.rc == 0 else ""


def attribute(host: Host, path: str) -> str | None:
    """A sysfs attribute's value, stripped, or None where it is absent."""
    result = host.run(["cat", "--", path])
    return result.output.strip() if result.rc == 0 else None
