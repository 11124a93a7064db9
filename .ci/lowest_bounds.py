"""Print pip constraints pinning every direct dependency of the project (and of the named extras) to the lower
bound its requirement declares: ``name>=X`` (with or without an upper bound) becomes ``name==X``.

    python .ci/lowest_bounds.py pyproject.toml test > constraints.txt

A requirement without a lower bound is left to the resolver. Extras (``ray[tune]``) are dropped from the
constraint, as pip requires. Standard library only: it runs in a fresh venv before anything is installed.
"""

import re
import sys
import tomllib

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def lowest(requirements: list[str]) -> list[str]:
    """``["ray[tune]>=2.60.0", "ruff>=0.17.6,<0.18"]`` -> ``["ray==2.60.0", "ruff==0.17.6"]``."""
    out = []
    for text in requirements:
        match = REQUIREMENT.match(text.split(";")[0])
        if not match:
            raise SystemExit(f"lowest_bounds: cannot read the requirement {text!r}")
        name, specifiers = match.groups()
        floors = [v.strip() for op, v in re.findall(r"(>=|==|~=)\s*([^,\s]+)", specifiers)]
        if floors:
            out.append(f"{name}=={floors[0]}")
    return out


def main() -> None:
    path, extras = sys.argv[1], sys.argv[2:]
    with open(path, "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    print("\n".join(dict.fromkeys(lowest(reqs))))


if __name__ == "__main__":
    main()
