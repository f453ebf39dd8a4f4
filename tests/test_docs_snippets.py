"""Every ```python block in docs/*.md and README.md runs, on tiny models, without a network.

The blocks of one page run in order in one namespace and one temporary working directory, as a reader would
paste them. A block needs the backends its page has imported so far (`torch` / `twinformers.pt`, TensorFlow /
Keras / `twinformers.tf`, JAX / Flax / optax / `twinformers.flax`, and Hugging Face's prefixed names): when one
of them is not installed the page stops there and the test is skipped, naming the backend (tox's single-backend
environments run what they can; the `demo` environment has all three and runs every block). A block that cannot
run on one CPU machine without a network is marked in the markdown on the line before it: `<!-- no-test -->`
for a Hub download, `<!-- no-test: why -->` otherwise (a multi-device or multi-host sketch with placeholders).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import re

import pytest

from twinformers._backends import BACKENDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)) + [os.path.join(ROOT, "README.md")]
NO_TEST = re.compile(r"^<!-- no-test(: [^>]+)? -->$")
FENCE = re.compile(r"^(\s*)```python\s*$")
BACKEND_PATTERNS = {
    "pt": re.compile(r"\bimport torch\b|\bfrom torch\b|\btwinformers\.pt\b|return_tensors=\"pt\""
                     r"|^from twinformers import [^\n]*\b(GPT\w*Model|GPT\w*For\w+|AutoModel\w*)\b", re.MULTILINE),
    "tf": re.compile(r"\btensorflow\b|\bkeras\b|\btwinformers\.tf\b|\bTF(GPT|Auto)\w+|return_tensors=\"tf\""),
    "flax": re.compile(r"\bjax\b|\bflax\b|\boptax\b|\btwinformers\.flax\b|\bFlax(GPT|Auto)\w+"
                       r"|return_tensors=\"jax\""),
}


@dataclasses.dataclass
class Snippet:
    page: str
    line: int  # 1-based line of the opening fence
    code: str
    no_test: bool
    backends: frozenset[str]  # needed by this block and the page's earlier blocks


def extract_snippets(text: str, page: str) -> list[Snippet]:
    """The ```python blocks of a markdown text, in order, with the backends each (cumulatively) needs."""
    lines = text.split("\n")
    snippets: list[Snippet] = []
    needed: set[str] = set()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, start = len(match.group(1)), i
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{page}:{start + 1}: ```python block is never closed")
        code = "\n".join(line[indent:] for line in lines[start + 1:end])
        previous = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        no_test = bool(NO_TEST.match(previous))
        if not no_test:  # an untested block's imports do not bind the blocks after it
            code_only = re.sub(r"#[^\n]*", "", code)  # "# or twinformers.tf" in a comment needs no TF
            needed |= {backend for backend, pattern in BACKEND_PATTERNS.items() if pattern.search(code_only)}
        snippets.append(Snippet(page, start + 1, code, no_test, frozenset(needed)))
        i = end + 1
    return snippets


def missing_backends() -> dict[str, str]:
    missing = {}
    for backend, (modules, extra) in BACKENDS.items():
        if any(importlib.util.find_spec(module) is None for module in modules):
            missing[backend] = extra
    return missing


def page_id(path: str) -> str:
    return os.path.relpath(path, ROOT)


def runnable_snippets(page: str) -> list[Snippet]:
    with open(page, encoding="utf-8") as f:
        return [s for s in extract_snippets(f.read(), page_id(page)) if not s.no_test]


@pytest.mark.parametrize("page", [p for p in PAGES if runnable_snippets(p)], ids=page_id)
def test_page_snippets_run(page, tmp_path, monkeypatch):
    snippets = runnable_snippets(page)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a block that reaches for the Hub fails fast instead of hanging
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    missing = missing_backends()
    namespace: dict = {"__name__": "__docs__"}
    for count, snippet in enumerate(snippets):
        absent = sorted(snippet.backends & set(missing))
        if absent:
            pytest.skip(f"{snippet.page}:{snippet.line} needs {', '.join(absent)} "
                        f"(pip install 'twinformers[{missing[absent[0]]}]'); {count} earlier block(s) ran")
        try:
            exec(compile(snippet.code, f"{snippet.page}:{snippet.line}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"the python block at {snippet.page}:{snippet.line} failed: "
                                 f"{type(err).__name__}: {err}") from err


# --------------------------------------------------------------------------------------------- the extractor itself
def test_extract_snippets_order_markers_and_backends():
    text = "\n".join([
        "# Page", "", "```python", "import numpy as np", "```", "",
        "<!-- no-test -->", "", "```python", "import torch", "model = from_hub('gpt2')", "```",
        "<!-- no-test: needs 8 devices -->", "```python", "import jax", "```",
        "```python", "from twinformers.tf import GPT2LMHeadModel", "```",
        "   ```python", "   x = 1", "   ```",
        "```bash", "twinformers demo", "```",
        "```python", "from twinformers import FlaxGPT2LMHeadModel, GPT2Config", "```",
    ])
    snippets = extract_snippets(text, "page.md")
    assert [s.line for s in snippets] == [3, 9, 14, 17, 20, 26]
    assert [s.no_test for s in snippets] == [False, True, True, False, False, False]
    assert snippets[0].backends == frozenset()
    assert snippets[1].backends == snippets[2].backends == frozenset()  # untested blocks' imports do not count
    assert snippets[3].backends == {"tf"}
    assert snippets[4].code == "x = 1" and snippets[4].backends == {"tf"}  # cumulative over the page
    assert snippets[5].backends == {"tf", "flax"}  # GPT2Config is framework-free; FlaxGPT2... is Flax


def test_top_level_hf_names_map_to_their_backend():
    needed = lambda code: extract_snippets(f"```python\n{code}\n```", "p.md")[0].backends
    assert needed("from twinformers import GPT2LMHeadModel") == {"pt"}
    assert needed("from twinformers import TFGPT2LMHeadModel") == {"tf"}
    assert needed("from twinformers import AutoTokenizer, GPT2Config") == set()
    assert needed("ids = tokenizer(text, return_tensors=\"pt\")") == {"pt"}
    assert needed("from twinformers.pt import AutoModel  # or twinformers.tf / twinformers.flax") == {"pt"}


def test_unclosed_block_is_an_error():
    with pytest.raises(ValueError, match="page.md:2"):
        extract_snippets("text\n```python\nx = 1\n", "page.md")


def test_docs_have_python_blocks_to_run():
    counts = {page_id(page): len(runnable_snippets(page)) for page in PAGES}
    assert counts["README.md"] >= 3, counts
    for name in ("index.md", "quickstart-pytorch.md", "quickstart-tensorflow.md", "quickstart-flax.md",
                 "migrating.md"):
        assert counts[os.path.join("docs", name)] >= 1, counts
