"""Repo-level glue only: the harness plugin (entry point ``pytest11``) does the work.

When the package is not installed (a bare checkout), load the plugin from here.
"""

import importlib.util

if importlib.util.find_spec("harness.plugin") is None:  # pragma: no cover
    raise ImportError("failover-harness is not installed: run 'make setup' (creates .venv)")
