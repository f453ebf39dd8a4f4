"""docs/adding-a-family.md stays true: every family in the conversion tables has each piece the page lists, and
the registries derived from the tables name exactly the classes the family files declare. Framework-free: the
backend files are read as source, never imported."""

from __future__ import annotations

import ast
import os
import re

import pytest

import twinformers
from helpers import TINY
from twinformers.configuration import CONFIG_MAPPING
from twinformers.conversion.tables import AUTO_CLASSES, HEADS, TABLES, block_class, model_classes
from twinformers.tokenization.auto import TOKENIZER_MAPPING

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("pt", "tf", "flax")
PAGE = os.path.join(ROOT, "docs", "adding-a-family.md")


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as f:
        return f.read()


def _listed_paths() -> list[str]:
    """The backticked repository paths of the page's numbered steps (templates with `<family>`)."""
    paths = []
    for line in _read("docs", "adding-a-family.md").splitlines():
        if re.match(r"^\d+\. ", line):
            paths += re.findall(r"`((?:lib|docs|tests)/[\w/.<>-]+)`", line)
    return paths


def _declared(backend: str, family: str) -> tuple[list[str], list[str]]:
    """(top-level class and alias names, `__all__`) of `lib/<backend>/<family>.py`."""
    module = ast.parse(_read("lib", backend, f"{family}.py"))
    names, exported = [], []
    for node in module.body:
        if isinstance(node, ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id == "__all__":
                exported = [ast.literal_eval(element) for element in node.value.elts]
            elif isinstance(node.value, ast.Name):
                names.append(node.targets[0].id)
    return names, exported


def test_the_page_lists_the_files_this_test_checks():
    listed = _listed_paths()
    for path in ("lib/configuration.py", "lib/conversion/tables.py", "lib/pt/<family>.py", "lib/tf/<family>.py",
                 "lib/flax/<family>.py", "docs/design.md", "tests/helpers.py", "tests/fixtures/hf/<family>-pt-base"):
        assert path in listed, f"docs/adding-a-family.md does not list {path}"


@pytest.mark.parametrize("family", list(TABLES))
def test_every_listed_file_exists_for_the_family(family):
    for template in _listed_paths():
        path = template.replace("<family>", family)
        assert os.path.exists(os.path.join(ROOT, path)), f"{family}: {path} (docs/adding-a-family.md) is missing"


@pytest.mark.parametrize("family", list(TABLES))
def test_every_family_has_each_piece(family):
    table = TABLES[family]
    config_class = CONFIG_MAPPING[family]
    assert config_class.__name__ == f"{table.prefix}Config"
    assert config_class.__name__ in twinformers.__all__, f"{config_class.__name__} is not exported by twinformers"
    assert family in TOKENIZER_MAPPING, f"lib/tokenization/auto.py has no tokenizer for {family}"
    assert family in TINY, f"tests/helpers.py has no tiny config for {family}"
    assert re.search(rf'^\s*"{family}": \[', _read("lib", "flax", "partitioning.py"), re.MULTILINE), (
        f"lib/flax/partitioning.py has no sharding rules for {family}"
    )
    assert re.search(rf"^- `{family}\.py`: ", _read("docs", "design.md"), re.MULTILINE), (
        f"docs/design.md lists no class order for {family}.py"
    )
    for backend in BACKENDS:
        assert f"::: twinformers.{backend}.{family}" in _read("docs", "api", f"{backend}.md")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", list(TABLES))
def test_family_files_declare_and_export_the_table_classes(family, backend):
    """The derived registries (auto classes, package exports, block classes) can only name real classes."""
    names, exported = _declared(backend, family)
    wanted = [*model_classes(family), block_class(family)]
    for found, what in ((names, "declares no"), (exported, "__all__ lacks")):
        assert not set(wanted) - set(found), f"lib/{backend}/{family}.py {what} {sorted(set(wanted) - set(found))}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("family", list(TABLES))
def test_family_attention_is_a_heads_attention(family, backend):
    """The cache, the causal mask and the merged heads are written once (`heads.Attention.attend`), as step 5 says."""
    source = _read("lib", backend, f"{family}.py")
    attentions = [
        node.name for node in ast.parse(source).body
        if isinstance(node, ast.ClassDef) and any(getattr(base, "id", None) == "Attention" for base in node.bases)
    ]
    assert attentions, f"lib/{backend}/{family}.py has no attention class over heads.Attention"
    for written_once in ("update_cache(", "causal_rows(", "merge_heads("):
        assert written_once not in source, f"lib/{backend}/{family}.py calls {written_once}) itself: use attend"


def test_registries_follow_the_tables():
    heads = [head for head in HEADS if head in TABLES["gpt2"].classes]
    assert set(AUTO_CLASSES.values()) <= set(heads)
    expected = [name for family in TABLES for name in model_classes(family)] + list(AUTO_CLASSES)
    assert list(twinformers.MODEL_CLASSES) == expected
    for name in expected:
        assert {name, f"TF{name}", f"Flax{name}"} <= set(twinformers.__all__)
