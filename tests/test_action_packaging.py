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
import tomllib
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


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            stages.append([])
        stages[-1].append((keyword, rest))
    return stages


def test_dockerfile_pins_its_base_and_installs_from_the_lock() -> None:
    base, build, final = _stages()
    image, _, name = base[0][1].partition(" AS ")
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    assert len(base) == 1 and name == "base"  # `buildah bud --from` swaps the first FROM: the base only
    assert build[0] == ("FROM", "base AS build") and final[0] == ("FROM", "base")
    build_run = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert "--require-hashes" in build_run and "-r requirements/image.lock" in build_run
    assert "--only-binary=:all:" in build_run  # nothing compiled, so no compiler anywhere
    final_run = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert "pip" not in final_run and "gcc" not in final_run and "build-essential" not in final_run
    for package in ("git", "ripgrep", "tini", "util-linux", "ca-certificates"):
        assert re.search(rf"\b{package}\b", final_run)
    assert "rm -rf /var/lib/apt/lists/*" in final_run
    assert "git config --system --add safe.directory '*'" in final_run
    assert ("COPY", "--from=build /opt/opi /opt/opi") in final
    assert ("ENTRYPOINT", '["/usr/local/bin/opi-entrypoint"]') in final


def test_the_entrypoint_runs_opi_as_root_under_tini() -> None:
    script = (ROOT / "docker" / "entrypoint.sh").read_text(encoding="utf-8")
    commands = [line.strip() for line in script.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "exec tini -s -- opi \"$@\"" in commands and commands[-1] == 'exec opi "$@"'
    assert "setpriv" not in "\n".join(commands) and "chown" not in "\n".join(commands)


def _lock_entries() -> dict[str, tuple[str, list[str], str]]:
    """name -> (version, hashes, via text) from requirements/image.lock."""
    entries: dict[str, tuple[str, list[str], str]] = {}
    current = ""
    for line in (ROOT / "requirements" / "image.lock").read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==(\S+)", line)
        if match:
            current = _normalise(match.group(1))
            entries[current] = (match.group(2), [], "")
        elif current and "--hash=sha256:" in line:
            entries[current][1].append(line.split("--hash=sha256:", 1)[1].split()[0])
        elif current and line.strip().startswith("#"):
            version, hashes, via = entries[current]
            entries[current] = (version, hashes, via + line)
    return entries


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# Left out of the image on purpose (requirements/README.md): the REPL's libraries, and what only they need.
IMAGE_LEAVES_OUT = {"rich": ("rich",), "prompt-toolkit": ("prompt_toolkit",), "pygments": ("pygments",),
                    "wcwidth": ("wcwidth",)}


def test_the_lock_matches_pyproject() -> None:
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = {_normalise(Requirement(spec).name): Requirement(spec) for spec in project["dependencies"]
              if _normalise(Requirement(spec).name) not in IMAGE_LEAVES_OUT}
    entries = _lock_entries()
    assert not set(IMAGE_LEAVES_OUT) & set(entries), "the REPL's libraries are not meant to be in the image"
    missing = set(wanted) - set(entries)
    assert not missing, f"requirements/image.lock lacks {missing}: regenerate it (requirements/README.md)"
    for name, requirement in wanted.items():
        version = entries[name][0]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"the lock pins {name}=={version}, outside pyproject's {requirement.specifier}: regenerate it")
    direct = {name for name, (_, _, via) in entries.items() if "opi-bot (pyproject.toml)" in via}
    assert direct == set(wanted), f"the lock was compiled from other dependencies: {direct ^ set(wanted)}"
    unhashed = [name for name, (_, hashes, _) in entries.items() if not hashes]
    assert not unhashed and all(re.fullmatch(r"[0-9a-f]{64}", h) for _, hs, _ in entries.values() for h in hs)


def test_the_action_runs_without_the_libraries_the_image_leaves_out(tmp_path: Path) -> None:
    blocked = [module for modules in IMAGE_LEAVES_OUT.values() for module in modules]
    code = ("import sys\n"
            f"for name in {blocked!r}: sys.modules[name] = None  # any import of them now fails\n"
            "import bot.action.main, bot.action.post, bot.action.continuation, bot.action.runner\n"
            "import bot.cli.main, bot.cli.print_mode\n"
            "from bot.cli.main import main\n"
            "sys.argv = ['opi', '--version']\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and done.stdout.startswith("opi "), done.stderr


def test_runtime_dependencies_have_upper_bounds() -> None:
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for spec in project["dependencies"]:
        operators = {s.operator for s in Requirement(spec).specifier}
        assert operators & {"<", "<=", "==", "~=", "==="}, f"{spec} has no upper bound"


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
    _, build, _ = _stages()
    # Stage exactly what the build stage gets: its COPY sources into the WORKDIR.
    workdir = tmp_path / "image" / "src"
    workdir.mkdir(parents=True)
    for keyword, rest in build:
        if keyword != "COPY":
            continue
        *sources, dest = shlex.split(rest)
        for source in sources:
            path = ROOT / source
            assert path.exists(), f"the Dockerfile copies {source}, which does not exist"
            target = workdir / (dest if dest not in ("./", ".") else path.name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, target)
    build_run = " ".join(rest for keyword, rest in build if keyword == "RUN")
    assert "python -m pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist ." in build_run

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    # Offline: the dependencies (and setuptools for the build) come from this test environment.
    Path(site, "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    dist = tmp_path / "dist"
    wheel = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(dist), "."], cwd=workdir, capture_output=True, text=True,
                           timeout=300, check=False)
    if "invalid command 'bdist_wheel'" in wheel.stderr:
        pytest.fail("building offline needs `wheel` (or setuptools >= 70.1) in the test environment: "
                    "it is a dev dependency")
    assert wheel.returncode == 0, wheel.stderr
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "--quiet", *map(str, dist.glob("*.whl"))],
                             capture_output=True, text=True, timeout=300, check=False)
    assert install.returncode == 0, install.stderr

    # No PYTHONPATH either: .ci/run sets one to the clone under test, which would shadow the installed copy.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "INPUT_", "STATE_")) and k != "PYTHONPATH"}
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
