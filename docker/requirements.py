"""Print the requirements of EdgeGate's base install plus the given extras, read from pyproject.toml.

Used by docker/Dockerfile to install the heavy dependencies in their own cached layer before the
package source is copied:  python3 docker/requirements.py pyproject.toml pytorch tensorflow ...
"""

from __future__ import annotations

import re
import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    optional = project["optional-dependencies"]
    out: list[str] = list(project["dependencies"])
    seen: set[str] = set()

    def add(extra: str) -> None:
        if extra in seen:
            return
        seen.add(extra)
        for req in optional[extra]:
            nested = re.fullmatch(r"edgegate-ci\[(.+)\]", req.replace(" ", ""))
            if nested:
                for name in nested.group(1).split(","):
                    add(name)
            elif req not in out:
                out.append(req)

    for extra in extras:
        add(extra)
    return out


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
