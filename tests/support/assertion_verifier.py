"""Verifies X-LTI-Assertion tokens for the fake upstream (tests/support/upstream.rs)
with the README's Python recipe ("Verifying the assertion in your platform"), run as
written there but for its three constants (JWKS_URL, ISSUER, AUDIENCE), which are set
to the deployment under test.

Argument: JSON {"jwks_url": ..., "issuer": ..., "audience": ...}. Prints
{"ready": true} once the recipe is loaded; then reads one token a line on stdin and
prints one JSON line for each: {"ok": true, "claims": {...}} or
{"ok": false, "error": "<exception class>: <message>"}.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
HEADING = "### Verifying the assertion in your platform"


def recipe() -> str:
    """The first ```python block after the heading."""
    section = README.read_text().split(HEADING, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def configured(code: str, config: dict) -> str:
    for name, key in (("JWKS_URL", "jwks_url"), ("ISSUER", "issuer"), ("AUDIENCE", "audience")):
        code, n = re.subn(
            rf'^{name} = ".*?"', f"{name} = {json.dumps(config[key])}", code, count=1, flags=re.M
        )
        if n != 1:
            raise SystemExit(f"the README's recipe sets no {name}")
    return code


def main() -> None:
    config = json.loads(sys.argv[1])
    namespace: dict = {"__name__": "readme_recipe"}
    exec(compile(configured(recipe(), config), str(README), "exec"), namespace)
    verified_identity = namespace["verified_identity"]
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        token = line.strip()
        try:
            out = {"ok": True, "claims": verified_identity(token)}
        except Exception as e:  # every refusal is reported, whatever its class
            out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
