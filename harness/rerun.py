"""The rerun policy's old entry point (``pytest11``), for installs made before it moved to
:mod:`harness.plugin.rerun`: their metadata still names this module until ``make setup`` runs again."""

from harness.plugin.rerun import *  # noqa: F403
