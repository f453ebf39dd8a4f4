"""Hugging Face's top-level names resolve to the twin of the installed backend they name."""

from __future__ import annotations

import importlib

import pytest

import twinformers
from twinformers._backends import missing_modules
from twinformers.conversion.tables import AUTO_CLASSES, TABLES, model_classes

PREFIXES = {"pt": "", "tf": "TF", "flax": "Flax"}


@pytest.mark.parametrize("backend", sorted(PREFIXES))
def test_model_names_resolve_to_the_backend_package(backend):
    if missing_modules(backend):  # (tests/flax on sys.path would fool a plain find_spec("flax"))
        pytest.skip(f"twinformers.{backend} is not installed in this env")
    package = importlib.import_module(f"twinformers.{backend}")
    names = [name for family in TABLES for name in model_classes(family)] + list(AUTO_CLASSES)
    for name in names:
        assert getattr(twinformers, PREFIXES[backend] + name) is getattr(package, name), name
