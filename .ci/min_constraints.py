"""Print pip constraints that pin each runtime dependency to its lowest allowed version.

pip has no "lowest versions" resolution, so ``make test-min`` turns every lower
bound of ``[project] dependencies`` in pyproject.toml into a pin: ``pkg>=1.6``
becomes ``pkg==1.6.*`` (the oldest minor release, with its bug fixes) and
``pkg>=0.4.1`` becomes ``pkg==0.4.1``. Packages named with ``--skip`` keep what
the resolver picks (torch: the wheel on the local disk). Optional extras named
with ``--extra`` are pinned too (pyarrow must match the pinned numpy); test tools
are not pinned.

Usage::

    python .ci/min_constraints.py [--skip torch] [--extra parquet] > constraints-min.txt
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def lowest_pins(dependencies: list[str], skip: set[str]) -> list[str]:
    """``name==version`` pins from the ``>=`` bound of each requirement string."""
    pins = []
    for requirement in dependencies:
        requirement = requirement.split(";")[0]  # environment markers
        match = _REQUIREMENT.match(requirement)
        if match is None:
            raise ValueError(f"cannot read the requirement {requirement!r}")
        name, _, specifiers = match.groups()
        if name.lower().replace("_", "-") in skip:
            continue
        lower = re.search(r">=\s*([0-9][0-9A-Za-z.]*)", specifiers)
        if lower is None:
            raise ValueError(f"{requirement!r} has no lower bound (>=): add one to pyproject.toml")
        version = lower.group(1)
        pins.append(f"{name}=={version}" if version.count(".") >= 2 else f"{name}=={version}.*")
    return pins


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", action="append", default=[], help="a package to leave unpinned")
    parser.add_argument(
        "--extra", action="append", default=[], help="also pin the lower bounds of this optional extra"
    )
    args = parser.parse_args(argv)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    skip = {name.lower().replace("_", "-") for name in args.skip}
    requirements = list(project["dependencies"])
    for extra in args.extra:
        requirements += project["optional-dependencies"][extra]
    sys.stdout.write("".join(pin + "\n" for pin in lowest_pins(requirements, skip)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
