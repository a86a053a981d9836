"""broker/asyncapi.json passes the official AsyncAPI parser (@asyncapi/parser, package-lock.json).

The parser runs in Node (tests/broker/asyncapi_validate.mjs); `make web` (a prerequisite of
`make pytest`) installs it with the page's other npm packages.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from broker.contract import ASYNCAPI_PATH, asyncapi, render

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("asyncapi_validate.mjs")
PARSER = ROOT / "node_modules" / "@asyncapi" / "parser"

# Warnings left on purpose (code -> why). Diagnostics of severity "information" and "hint" are
# advice, not checked: today only "asyncapi-latest-version" (the document stays AsyncAPI 2.6 until
# the contract moves to 3.x; the parser reads both).
ALLOWED_WARNINGS = {
    "asyncapi-info-contact": "the project publishes no team address; an invented one would mislead",
}


def _diagnostics(path: Path) -> dict[str, Any]:
    node = shutil.which("node")
    assert node, "node is missing: install Node.js 20+ (Debian: apt-get install nodejs npm)"
    assert PARSER.is_dir(), f"{PARSER} is missing: run make web (npm ci)"
    done = subprocess.run(
        [node, str(SCRIPT), str(path)], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _by_severity(report: dict[str, Any], severity: str) -> list[dict[str, Any]]:
    return [d for d in report["diagnostics"] if d["severity"] == severity]


def test_the_official_parser_accepts_the_contract() -> None:
    report = _diagnostics(ASYNCAPI_PATH)
    assert _by_severity(report, "error") == []
    assert report["parsed"] is True
    warnings = [d for d in _by_severity(report, "warning") if d["code"] not in ALLOWED_WARNINGS]
    assert warnings == []


def test_the_parser_check_catches_an_invalid_contract(tmp_path: Path) -> None:
    # The document as it was before it passed: the reply channel named '<reply_to>', not a
    # uri-template, and a tagged union's OpenAPI-style discriminator object.
    document = asyncapi()
    channels = document["channels"]
    channels["<reply_to>"] = channels.pop("{replyTo}")
    del channels["<reply_to>"]["parameters"]
    batch = document["components"]["schemas"]["ReplyBatch"]["properties"]["frames"]["items"]
    batch["discriminator"] = {"propertyName": "type"}
    broken = tmp_path / "asyncapi.json"
    broken.write_text(render(document))
    report = _diagnostics(broken)
    errors = _by_severity(report, "error")
    assert report["parsed"] is False
    assert {d["path"] for d in errors} >= {
        "channels",
        "components/schemas/ReplyBatch/properties/frames/items/discriminator",
    }
