"""The conformance cases as avocado tests (``avocado run failover:``), for labs whose jobs are avocado's.

avocado has no pytest test type; like avocado-vt, this package adds one: a resolver turns
``failover:[NODE-ID]`` into one avocado test per pytest node id (:mod:`harness.avocado.resolver`) and a
runner runs each with pytest and reports its checks (:mod:`harness.avocado.runner`). Only avocado imports
these two (entry points ``avocado.plugins.resolver`` and ``avocado.plugins.runnable.runner``); what they
translate is in :mod:`harness.avocado.translate`, which does not need avocado. pytest stays the harness's
interface: ``pip install -e '.[avocado]'`` adds avocado and its HTML report plugin.
"""
