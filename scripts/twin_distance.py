"""How far each backend's family files are from the PyTorch ones: lines differing, as a diff counts them.

    python scripts/twin_distance.py            # the table for every family, PyTorch vs TensorFlow and vs Flax
    python scripts/twin_distance.py --show flax gptj   # the differing lines of one pair, diff-style

The distance between two files is the number of lines a minimal line diff removes or adds:
`len(a) + len(b) - 2 * LCS(a, b)`, the count `diff lib/pt/gpt2.py lib/flax/gpt2.py | grep -c '^[<>]'` gives.
Lines are compared as written (indentation included, trailing white space ignored). The twins are in lockstep
when the Flax and TensorFlow files are about equally far from the PyTorch one (see docs/design.md).
"""

from __future__ import annotations

import argparse
import difflib
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAMILIES = ("gpt2", "gptj", "gpt_neo")
BACKENDS = ("tf", "flax")


def read_lines(backend: str, family: str) -> list[str]:
    with open(os.path.join(ROOT, "lib", backend, f"{family}.py"), encoding="utf-8") as f:
        return [line.rstrip() for line in f]


def common_lines(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two line lists (dynamic programming, one row at a time)."""
    previous = [0] * (len(b) + 1)
    for line in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if line == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def distance(a: list[str], b: list[str]) -> int:
    """Lines a minimal diff removes from `a` plus lines it adds from `b`."""
    return len(a) + len(b) - 2 * common_lines(a, b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--show", nargs=2, metavar=("BACKEND", "FAMILY"), help="print the diff of one pair")
    args = parser.parse_args()
    if args.show:
        backend, family = args.show
        pt, other = read_lines("pt", family), read_lines(backend, family)
        diff = difflib.unified_diff(pt, other, f"lib/pt/{family}.py", f"lib/{backend}/{family}.py", lineterm="", n=1)
        print("\n".join(diff))
        return
    print("| family | lines pt / tf / flax | pt vs tf | pt vs flax |")
    print("|---|---|---|---|")
    for family in FAMILIES:
        pt = read_lines("pt", family)
        others = {backend: read_lines(backend, family) for backend in BACKENDS}
        sizes = " / ".join(str(len(lines)) for lines in (pt, *others.values()))
        distances = " | ".join(str(distance(pt, others[backend])) for backend in BACKENDS)
        print(f"| {family} | {sizes} | {distances} |")


if __name__ == "__main__":
    main()
