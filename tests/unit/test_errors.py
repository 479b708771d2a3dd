"""The error tree drawn in harness/errors.py's docstring names every HarnessError the package defines."""

from __future__ import annotations

import importlib
import pkgutil

import harness
from harness import errors


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_the_drawn_error_tree_names_every_harness_error() -> None:
    for module in pkgutil.walk_packages(harness.__path__, "harness."):
        importlib.import_module(module.name)  # every module's exceptions are defined
    defined = {cls.__name__ for cls in _subclasses(errors.HarnessError) if cls.__module__.startswith("harness.")}
    assert errors.__doc__ is not None
    drawn = {line.split("── ", 1)[1].split()[0] for line in errors.__doc__.splitlines() if "── " in line}
    assert defined <= drawn, f"not in the tree: {sorted(defined - drawn)}"
    assert drawn <= defined | {"HarnessError"}, f"drawn but not defined: {sorted(drawn - defined)}"
