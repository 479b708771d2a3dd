"""Conformance and measurement harness for QEMU virtio-net failover.

Layers, data flowing one way: :mod:`harness.config` → :mod:`harness.topologies`
(network, image, VMs) → the test drives traffic (:mod:`harness.traffic`) and
migration (:mod:`harness.migration`) → recorders produce one
:class:`harness.timeline.Timeline` → :mod:`harness.metrics` computes numbers →
:mod:`harness.checks` and :mod:`harness.report` read the same numbers.
"""

from harness.errors import HarnessError

__all__ = ["HarnessError"]
