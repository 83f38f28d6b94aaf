"""Print the module map (one line a module, from each module's docstring) that CONTRIBUTING.md holds.

    python scripts/module_map.py            # print it
    python scripts/module_map.py --write    # rewrite the map between the markers in CONTRIBUTING.md

tests/test_layout.py fails when CONTRIBUTING.md's map differs from this output, so the map never
drifts from the code.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("studio", "training", "ui")
BEGIN, END = "<!-- module map: begin -->", "<!-- module map: end -->"


def summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ").strip()


def module_map() -> str:
    lines = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if path.name == "__init__.py" and not summary(path):
                continue
            lines.append(f"- `{rel}` — {summary(path)}")
    return "\n".join(lines)


def with_map(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{module_map()}\n{END}{tail}"


def main() -> int:
    if "--write" in sys.argv:
        target = ROOT / "CONTRIBUTING.md"
        target.write_text(with_map(target.read_text(encoding="utf-8")), encoding="utf-8")
        return 0
    print(module_map())
    return 0


if __name__ == "__main__":
    sys.exit(main())
