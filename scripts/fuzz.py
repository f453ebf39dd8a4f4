"""Long fuzzing runs of every reader: the properties of tests/test_fuzz_readers.py with many more examples.

    python scripts/fuzz.py                       # 5000 random examples per reader
    python scripts/fuzz.py --examples 100000 -k safetensors

CI runs the same properties with 25 fixed examples each. A failure prints the smallest input hypothesis found;
add it to the tests as a regression case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000, help="examples per reader (default 5000)")
    parser.add_argument("-k", dest="keyword", help="only readers whose test name matches (pytest -k)")
    args = parser.parse_args(argv)
    if args.examples < 1:
        parser.error("--examples must be >= 1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               os.path.join(ROOT, "tests", "test_fuzz_readers.py")]
    if args.keyword:
        command += ["-k", args.keyword]
    env = dict(os.environ, FUZZ_EXAMPLES=str(args.examples))
    return subprocess.call(command, env=env, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main())
