"""The container action's packaging: action.yml, the Dockerfile's install, the entrypoint, the workflows.

There is no Docker engine here, so the Dockerfile's own `pip install` command is run on exactly the files
its COPY lines bring in, into a fresh venv (offline: dependencies come from the test environment), and
the installed `opi` and the entrypoint script are exercised from there.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _yaml(path: Path) -> Any:
    # PyYAML comes with `responses` (a dev dependency).
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_basics() -> None:
    instructions = _instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    run = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    for package in ("git", "ripgrep", "util-linux"):
        assert re.search(rf"\b{package}\b", run)
    assert "git config --system --add safe.directory '*'" in run
    assert ("ENTRYPOINT", '["/usr/local/bin/opi-entrypoint"]') in instructions


def test_action_yml_declares_every_input_and_output_the_code_reads() -> None:
    from bot.action.main import OUTPUT_NAMES

    action = _yaml(ROOT / "action.yml")
    assert action["runs"]["using"] == "docker" and action["runs"]["image"] == "Dockerfile"
    assert action["runs"]["post-entrypoint"] == "/usr/local/bin/opi-post-entrypoint"
    assert set(action["outputs"]) == set(OUTPUT_NAMES)
    assert action["inputs"]["github_token"]["default"] == "${{ github.token }}"
    assert action["inputs"]["trigger"]["default"] == "/opi"
    code = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "bot" / "action").glob("*.py"))
    read = set(re.findall(r'_(?:input|positive_int|positive_float)\(source, "([a-z_]+)"', code))
    read |= set(re.findall(r'"([a-z_]+_api_key)": "[A-Z_]+"', code))
    assert read <= set(action["inputs"]), read - set(action["inputs"])


def test_workflows_are_least_privilege_and_guarded() -> None:
    opi = _yaml(ROOT / ".github" / "workflows" / "opi.yml")
    on = opi.get("on", opi.get(True))  # YAML 1.1 reads a bare `on` key as True
    assert set(on) == {"issue_comment", "pull_request_review_comment"}
    job = next(iter(opi["jobs"].values()))
    assert "/opi" in job["if"] and "[bot]" in job["if"]
    assert "github.event.issue.number || github.event.pull_request.number" in job["concurrency"]["group"]
    assert job["permissions"] == {"contents": "write", "pull-requests": "write", "issues": "write",
                                  "actions": "read", "checks": "read"}
    checkout = job["steps"][0]
    assert checkout["uses"].startswith("actions/checkout@") and checkout["with"]["persist-credentials"] is False
    maintenance = _yaml(ROOT / ".github" / "workflows" / "maintenance.yml")
    on = maintenance.get("on", maintenance.get(True))
    assert "schedule" in on and "prompt" in on["workflow_dispatch"]["inputs"]
    assert (ROOT / ".github" / "workflows" / "ci.yml").is_file()


@pytest.mark.slow
def test_the_dockerfile_install_works_in_a_fresh_venv(tmp_path: Path) -> None:
    instructions = _instructions()
    # Stage exactly what the image gets: the COPY sources into the WORKDIR.
    workdir = tmp_path / "image" / "opt" / "opi-bot"
    workdir.mkdir(parents=True)
    for keyword, rest in instructions:
        if keyword != "COPY":
            continue
        *sources, dest = shlex.split(rest)
        if dest.startswith("/"):
            continue  # the entrypoint script, checked below
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
            target = workdir / (dest if dest not in ("./", ".") else path.name)
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, target)
    install = next(rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest)
    args = shlex.split(install)[shlex.split(install).index("install") + 1:]

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    # Offline: the dependencies (and setuptools for the build) come from this test environment.
    Path(site, "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
           "--no-build-isolation", "--quiet", *args]
    result = subprocess.run(pip, cwd=workdir, capture_output=True, text=True, timeout=300, check=False)
    if "invalid command 'bdist_wheel'" in result.stderr:
        pytest.fail("building offline needs `wheel` (or setuptools >= 70.1) in the test environment: "
                    "it is a dev dependency")
    assert result.returncode == 0, result.stderr

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "STATE_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = subprocess.run([str(python), "-c", "import bot; print(bot.__file__)"], capture_output=True,
                           text=True, check=True, timeout=30, cwd=tmp_path, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the installed copy, not the editable checkout
    version = subprocess.run([str(venv / "bin" / "opi"), "--version"], capture_output=True, text=True,
                             timeout=30, env=env, check=False)
    assert version.returncode == 0 and version.stdout.startswith("opi "), version.stderr

    # The entrypoint script, under both of its names.
    bin_dir = tmp_path / "usr-local-bin"
    bin_dir.mkdir()
    shutil.copy2(ROOT / "docker" / "entrypoint.sh", bin_dir / "opi-entrypoint")
    (bin_dir / "opi-post-entrypoint").symlink_to("opi-entrypoint")
    env.update({"GITHUB_WORKSPACE": str(tmp_path), "RUNNER_TEMP": str(tmp_path)})
    main = subprocess.run([str(bin_dir / "opi-entrypoint")], capture_output=True, text=True, timeout=60,
                          env=env, cwd=tmp_path, check=False)
    assert main.returncode == 2 and "GITHUB_EVENT_PATH is not set" in main.stderr
    post = subprocess.run([str(bin_dir / "opi-post-entrypoint")], capture_output=True, text=True, timeout=60,
                          env=env, cwd=tmp_path, check=False)
    assert post.returncode == 0 and "nothing to finalise" in post.stderr
