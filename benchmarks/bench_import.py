"""Import cost of ``import medmix_sklearn`` and ``medmix --help``, as a ratio.

Each command runs in a fresh interpreter (``sys.executable``); the runs of
the commands are interleaved, so a change in machine load hits all of them
alike, and the median of ``--runs`` runs is kept. The baseline is
``import sklearn.linear_model`` in the same interpreter and environment. The
target (issue #11) is a ratio of at most 1.5 for both commands.

Two ratios are printed: of the wall times as measured, and of the wall times
minus a bare interpreter start (``python -c pass``), which is the cost of
the import itself.

Usage::

    python benchmarks/bench_import.py            # 9 runs each
    python benchmarks/bench_import.py --runs 15 --json import.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": "pass",
    "import sklearn.linear_model": "import sklearn.linear_model",
    "import medmix_sklearn": "import medmix_sklearn",
    "medmix --help": (
        "import sys\n"
        "from medmix_sklearn.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
    ),
}
BASELINE = "import sklearn.linear_model"
TARGET = 1.5


def _time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return time.perf_counter() - start


def measure(runs: int) -> dict:
    for code in COMMANDS.values():  # warm the file system cache once
        _time(code)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(runs):
        for name, code in COMMANDS.items():
            times[name].append(_time(code))
    median = {name: statistics.median(values) for name, values in times.items()}
    start = median["python -c pass"]
    base, base_net = median[BASELINE], median[BASELINE] - start
    result = {"runs": runs, "python": sys.version.split()[0], "median_seconds": median,
              "ratios": {}}
    for name in ("import medmix_sklearn", "medmix --help"):
        result["ratios"][name] = {
            "wall": median[name] / base,
            "net_of_interpreter_start": (median[name] - start) / base_net,
        }
    result["target_met"] = all(r["wall"] <= TARGET for r in result["ratios"].values())
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs per command (median kept)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = parser.parse_args(argv)
    result = measure(args.runs)
    for name, seconds in result["median_seconds"].items():
        print(f"{name:<30} median {seconds * 1000:8.1f} ms")
    for name, ratio in result["ratios"].items():
        print(f"{name:<30} / {BASELINE}: {ratio['wall']:.2f}x wall, "
              f"{ratio['net_of_interpreter_start']:.2f}x net of interpreter start "
              f"(target <= {TARGET}x)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0 if result["target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
