"""Run the equivalence suite's comparisons and write docs/equivalence.md from the measured numbers.

Usage (from the repository root, with torch, tensorflow and jax/flax installed):

    python scripts/equivalence_report.py [--output docs/equivalence.md]

Every number in the page is measured by this run through `tests/equivalence/equivalence_suite.py` — the
machinery the tests use — so the report and the tests cannot disagree about what is compared.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from importlib import metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "equivalence")]

import equivalence_suite as eq  # noqa: E402

from helpers import TOLERANCES, max_abs_diff  # noqa: E402

PAIR_NAMES = ["↔".join(pair) for pair in eq.PAIRS]
VERSIONS = ("torch", "tensorflow-cpu", "keras", "jax", "flax", "numpy")


def _cell(value: float | None, bound: float) -> str:
    """A max |Δ| as a table cell: scientific notation, bold FAIL above the bound, an error as ERROR."""
    if value is None:
        return "**ERROR**"
    text = "0" if value == 0 else f"{value:.1e}"
    return text if value <= bound else f"**{text} FAIL**"


def _measure(errors: list[str], label: str, compute, *args) -> float | None:
    """`compute(*args)`, or None with the error recorded (a structural mismatch or a crash is reported, not
    hidden)."""
    try:
        return compute(*args)
    except Exception as err:
        errors.append(f"{label}: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
        return None


def _max_over(pairs) -> float:
    return max((max_abs_diff(a, e, where=w) for _, a, e, w in pairs), default=0.0)


def _cache_difference(suite: eq.Suite, spec: eq.ModelSpec, case: eq.Case, backend: str) -> float:
    return _max_over(eq.cache_consistency(suite.run(spec, case, backend), suite.calls(spec, case)))


def _static_cache_difference(suite: eq.Suite, spec: eq.ModelSpec, case: eq.Case) -> float:
    return _max_over(eq.flax_static_cache_pairs(suite, spec, case))


def _file_difference(suite: eq.Suite, spec: eq.ModelSpec, writer: str, reader: str, directory: str) -> float:
    case = eq.CASE_BY_NAME[eq.FILE_CASE]
    actual = eq.load_and_run(suite, spec, reader, directory)
    return eq.max_difference(actual, suite.run(spec, case, writer), suite.calls(spec, case))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def logits_section(suite: eq.Suite, errors: list[str], dtype: str = "float32") -> tuple[list[str], float]:
    bound = TOLERANCES[dtype]
    items = eq.suite_items() if dtype == "float32" else [
        (spec, eq.CASE_BY_NAME[name]) for spec in eq.BF16_SPECS for name in eq.BF16_CASES]
    rows, worst = [], 0.0
    for spec, case in items:
        cells = []
        for pair, pair_name in zip(eq.PAIRS, PAIR_NAMES):
            value = _measure(errors, f"{spec.id} {case.name} {pair_name} {dtype}", suite.difference, spec, case,
                             pair, dtype)
            worst = max(worst, value if value is not None else float("inf"))
            cells.append(_cell(value, bound))
        rows.append([spec.family, spec.class_name, spec.variant or "—", case.name, *cells])
    return _table(["family", "class", "config variant", "case", *PAIR_NAMES], rows), worst


def cache_section(suite: eq.Suite, errors: list[str]) -> tuple[list[str], float]:
    bound = TOLERANCES["float32"]
    rows, worst = [], 0.0
    for spec in eq.SPECS:
        for case in eq.cases_for(spec):
            if not case.name.startswith("cache"):
                continue
            values = [_measure(errors, f"{spec.id} {case.name} {backend} cache", _cache_difference, suite, spec,
                               case, backend) for backend in eq.BACKENDS]
            static = "—"
            if spec in eq.STATIC_SPECS and case.name == eq.STATIC_CASE:
                value = _measure(errors, f"{spec.id} {case.name} flax static cache", _static_cache_difference,
                                 suite, spec, case)
                values.append(value)
                static = _cell(value, bound)
            worst = max(worst, *(v if v is not None else float("inf") for v in values))
            rows.append([spec.id, case.name, *(_cell(v, bound) for v in values[:3]), static])
    header = ["model", "case", "pt", "tf", "flax (tuple cache)", "flax (static cache)"]
    return _table(header, rows), worst


def files_section(suite: eq.Suite, errors: list[str]) -> tuple[list[str], float]:
    bound = TOLERANCES["float32"]
    rows, worst = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for spec in eq.FILE_SPECS:
            cells = []
            for writer, fmt, reader in eq.ROUND_TRIPS:
                if (writer, fmt, reader) not in eq.round_trips(spec):
                    cells.append("—")
                    continue
                directory = os.path.join(tmp, f"{spec.id}-{writer}-{fmt}")
                if not os.path.isdir(directory):
                    eq.save(suite, spec, writer, fmt, directory)
                value = _measure(errors, f"{spec.id} {writer} {fmt} → {reader}", _file_difference, suite, spec,
                                 writer, reader, directory)
                worst = max(worst, value if value is not None else float("inf"))
                cells.append(_cell(value, bound))
            rows.append([spec.id, *cells])
    header = ["model", *(f"{writer} {fmt} → {reader}" for writer, fmt, reader in eq.ROUND_TRIPS)]
    return _table(header, rows), worst


def generation_section(suite: eq.Suite, errors: list[str]) -> tuple[list[str], bool]:
    rows, identical = [], True
    for family in eq.TABLES:
        spec = eq.SPEC_BY_ID[f"{family}-causal_lm"]
        tokens = {backend: _measure(errors, f"{spec.id} {backend} generate", eq.greedy_tokens, suite, spec, backend)
                  for backend in eq.BACKENDS}
        margin = _measure(errors, f"{spec.id} greedy margin", eq.greedy_margin, suite, spec)
        same = [tokens[b] is not None and tokens["pt"] is not None and tokens[b].shape == tokens["pt"].shape
                and bool((tokens[b] == tokens["pt"]).all()) for b in ("tf", "flax")]
        identical = identical and all(same)
        new = tokens["pt"][:, -eq.MAX_NEW_TOKENS:].tolist() if tokens["pt"] is not None else "—"
        rows.append([spec.class_name, *("yes" if ok else "**NO**" for ok in same),
                     f"{margin:.1e}" if margin is not None else "**ERROR**", f"`{new}`"])
    header = ["class", "tf ids = pt ids", "flax ids = pt ids", "smallest top-2 logit gap", "new tokens (pt)"]
    return _table(header, rows), identical


def _versions() -> str:
    found = []
    for name in VERSIONS:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "docs", "equivalence.md"),
                        help="where to write the page (default: docs/equivalence.md)")
    args = parser.parse_args(argv)

    start = time.time()
    suite, errors = eq.Suite(), []
    logits, logits_worst = logits_section(suite, errors)
    cache, cache_worst = cache_section(suite, errors)
    files, files_worst = files_section(suite, errors)
    bf16, bf16_worst = logits_section(suite, errors, "bfloat16")
    generation, generation_identical = generation_section(suite, errors)
    elapsed = time.time() - start

    fp32, bf16_bound = TOLERANCES["float32"], TOLERANCES["bfloat16"]
    passed = (max(logits_worst, cache_worst, files_worst) <= fp32 and bf16_worst <= bf16_bound
              and generation_identical and not errors)
    case_rows = [[f"`{case.name}`", case.description, ", ".join(sorted(case.heads))] for case in eq.CASES]
    lines = [
        "# Equivalence report",
        "",
        "<!-- Generated by scripts/equivalence_report.py from a real run; do not edit by hand. -->",
        "",
        f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"{platform.system()} (Python {platform.python_version()}; {_versions()}) in {elapsed:.0f} s.",
        "",
        f"Each model spec gets one seeded set of random canonical weights — matrices N(0, {eq.WEIGHT_STD}), "
        f"biases N(0, {eq.BIAS_STD}), LayerNorm weights 1 + N(0, {eq.LAYER_NORM_STD}), tied heads sharing `wte` — "
        "placed into every backend "
        "through `twinformers.conversion.tables.to_backend`. Cells are the largest |Δ| over **every** output "
        "(logits, hidden states, attentions, cache, losses, pooled logits) of every call of the case, on "
        "valid (unmasked) query positions and cached keys only.",
        "",
        f"Bounds: float32 {fp32:.0e} absolute, bfloat16 {bf16_bound:.0e} absolute. "
        f"Overall: **{'PASS' if passed else 'FAIL'}** — worst float32 |Δ| "
        f"{max(logits_worst, cache_worst, files_worst):.1e}, worst bfloat16 |Δ| {bf16_worst:.1e}.",
        "",
        "Tiny configs (`tests/helpers.py`): vocab 97, hidden 24, 3 heads of 8, 19 positions, 2 layers, GPT-J "
        "rotary_dim 4 (< head dim 8), GPT-Neo window 5 (global + local layers); batch 3 (× 2 choices for "
        "double heads), sequence 7; classification heads 3 labels.",
        "",
        "## Cases",
        "",
        *_table(["case", "what", "heads"], case_rows),
        "",
        "Config variants (GPT-2 LM head, their own case lists): `scaled_upcast` = `scale_attn_by_inverse_layer_idx` "
        "and `reorder_and_upcast_attn`; `cross_attention` = `add_cross_attention`, with encoder states and an "
        "encoder mask with padding in every call. Cases: "
        + "; ".join(f"`{spec.variant}`: {', '.join(spec.cases)}" for spec in eq.SPECS if spec.variant) + ".",
        "",
        "## Backend pairs (float32)",
        "",
        *logits,
        "",
        "## Incremental decoding vs the full forward, within each backend (float32)",
        "",
        "The steps' per-token outputs joined, and the last cache, against the full forward.",
        "",
        *cache,
        "",
        "## Through files: saved by one backend, loaded by another (float32)",
        "",
        f"Case `{eq.FILE_CASE}`; the loaded model's outputs against the saving model's.",
        "",
        *files,
        "",
        "## bfloat16 (weights and compute in bf16 in every backend)",
        "",
        *bf16,
        "",
        "## Greedy generation",
        "",
        f"`generate(max_new_tokens={eq.MAX_NEW_TOKENS}, do_sample=False)` on the left-padded prompts of case "
        f"`{eq.GENERATION_CASE}`; the token ids must be identical.",
        "",
        *generation,
        "",
    ]
    if errors:
        lines += ["## Errors", "", *(f"- {error}" for error in errors), ""]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = f"{args.output}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    os.replace(tmp, args.output)  # atomic: a half-written report never replaces a good one
    print(f"wrote {args.output}: {'PASS' if passed else 'FAIL'} in {elapsed:.0f} s")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
