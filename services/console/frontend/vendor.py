"""Copy GOV.UK Frontend's compiled files from node_modules into ../static/govuk (run by `make console-assets`).

The copies are committed, so `make demo` and `make test` need neither Node.js nor the npm
registry. Two things are left out on purpose: the GDS Transport font and the GOV.UK crown
images are for services on GOV.UK only, and a safeguarding partnership's console is not one.
Its @font-face rules are removed, so text falls back to Arial, as the Design System asks of
services off GOV.UK.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DIST = HERE / "node_modules" / "govuk-frontend" / "dist" / "govuk"
OUT = HERE.parent / "static" / "govuk"


def main() -> int:
    if not DIST.is_dir():
        print(f"{DIST} is missing: run `npm ci` in {HERE} first", file=sys.stderr)
        return 1
    version = json.loads((DIST.parent.parent / "package.json").read_text())["version"]
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    css = (DIST / "govuk-frontend.min.css").read_text()
    css = re.sub(r"@font-face\{[^}]*\}", "", css)
    css = re.sub(r"/\*# sourceMappingURL=[^*]*\*/", "", css)
    (OUT / "govuk-frontend.min.css").write_text(css)
    js = (DIST / "govuk-frontend.min.js").read_text()
    (OUT / "govuk-frontend.min.js").write_text(re.sub(r"//# sourceMappingURL=\S+", "", js))
    (OUT / "VERSION").write_text(f"govuk-frontend {version} (MIT licence), copied by vendor.py\n")
    print(f"govuk-frontend {version} copied to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
