"""The container image, without Docker: the Dockerfile's own steps, replayed in a fresh venv.

There is no Docker engine where the tests run, so this reads the Dockerfile and
.dockerignore and does what they say: build the build context from the
allow-list, run the builder stage's ``pip wheel`` commands, then the runtime
stage's ``pip install`` into a brand-new venv, and the runtime stage's smoke
checks (``vigil run --help``, ``vigil version``, no scikit-learn). The commands
are taken from the Dockerfile, so the test and the image cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml

from .conftest import CHART_DIR, ROOT

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
#: Documented in docs/image.md: the runtime site-packages should stay below this.
SITE_PACKAGES_BUDGET_MB = 400


@dataclasses.dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]]

    def all(self, op: str) -> list[str]:
        return [args for instruction, args in self.instructions if instruction == op]

    def commands(self) -> list[str]:
        """Shell commands of the RUN instructions, split on ``&&``, without ``--mount`` flags."""
        commands: list[str] = []
        for run in self.all("RUN"):
            run = re.sub(r"^(--mount=\S+\s+)+", "", run)
            commands.extend(part.strip() for part in run.split("&&"))
        return commands


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append((current + line).strip())
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.partition(" ")
        op = op.upper()
        rest = re.sub(r"\s+", " ", rest.strip())
        if op == "FROM":
            match = re.fullmatch(r"(\S+)(?: AS (\S+))?", rest, flags=re.IGNORECASE)
            assert match, f"cannot parse FROM {rest!r}"
            stages.append(Stage(name=match.group(2) or str(len(stages)), base=match.group(1), instructions=[]))
        elif not stages:
            assert op == "ARG", f"{op} before the first FROM"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    _, parsed = parse_dockerfile(DOCKERFILE.read_text())
    return {stage.name: stage for stage in parsed}


# ---- static checks of the Dockerfile (fast) -----------------------------------------------------

def bootstrap_pip() -> str:
    """The pip version `make bootstrap` installs (scripts/bootstrap.sh's ``pip_version=``)."""
    found = re.search(r"^pip_version=(\S+)$", (ROOT / "scripts" / "bootstrap.sh").read_text(), re.M)
    assert found, "scripts/bootstrap.sh no longer sets pip_version="
    return found.group(1)


def test_dockerfile_stages_and_base_image() -> None:
    args, parsed = parse_dockerfile(DOCKERFILE.read_text())
    assert [s.name for s in parsed] == ["builder", "runtime"]
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")
    assert all(s.base == "${PYTHON_IMAGE}" for s in parsed)


def test_builder_builds_the_wheel_and_a_wheelhouse(stages: dict[str, Stage]) -> None:
    commands = stages["builder"].commands()
    # The wheel is built with the locked backends, by the pip `make bootstrap` pins.
    assert commands[0] == f"pip install pip=={bootstrap_pip()}"
    assert "pip wheel --no-deps --build-constraint requirements/build.lock --wheel-dir /wheels ." in commands
    # The wheelhouse holds the runtime lock's versions: the image runs what the tests ran.
    wheelhouse = "pip wheel --wheel-dir /wheels --constraint requirements/runtime.lock /wheels/vigil_operator-*.whl"
    assert wheelhouse in commands


def test_runtime_installs_only_the_wheel_without_extras(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    installs = [c for c in runtime.commands() if c.startswith("pip install")]
    assert installs == ["pip install --no-index --find-links=/wheels /wheels/vigil_operator-*.whl"]
    requirements = [t for t in shlex.split(installs[0])[2:] if not t.startswith("-")]
    assert requirements == ["/wheels/vigil_operator-*.whl"]
    assert all("[" not in r for r in requirements), "no extras in the image: never [train], [dev], [sandbox]"
    text = " ".join(args for _, args in runtime.instructions)
    for forbidden in ("apt-get", "apk ", "gcc", "build-essential", "scikit-learn", "sklearn==", "[train]", "-e "):
        assert forbidden not in text, f"the runtime stage must not use {forbidden!r}"
    # The wheelhouse is bind-mounted for the install only; it is not copied into a layer.
    assert not any(args.startswith("--from=builder") for args in runtime.all("COPY"))


def test_runtime_user_entrypoint_labels_and_env(stages: dict[str, Stage]) -> None:
    runtime = stages["runtime"]
    assert runtime.all("USER") == ["10001:10001"]
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["securityContext"]["runAsUser"] == values["podSecurityContext"]["runAsUser"] == 10001
    assert runtime.all("ENTRYPOINT") == ['["vigil", "run"]']
    labels = " ".join(runtime.all("LABEL"))
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    env = " ".join(runtime.all("ENV"))
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PIP_NO_CACHE_DIR=1", "PYTHONUNBUFFERED=1"):
        assert setting in env
    assert runtime.all("EXPOSE") == ["8080"]


def test_dockerignore_is_an_allow_list() -> None:
    patterns = _dockerignore()
    assert patterns[0] == "*"
    assert {p[1:] for p in patterns if p.startswith("!")} == {
        "pyproject.toml", "README.md", "operator/", "requirements/runtime.lock", "requirements/build.lock"}


# ---- the build, replayed (slow) -----------------------------------------------------------------

def _dockerignore() -> list[str]:
    return [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also matches everything below a match."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            ignored = not negated
    return ignored


def build_context(destination: pathlib.Path) -> list[str]:
    """Copy what `docker build .` would send, per .dockerignore; return the relative paths."""
    patterns = _dockerignore()
    roots = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    assert not any(ch in root for root in roots for ch in "*?["), "wildcard includes are not replayed here"
    copied: list[str] = []
    for root in roots:
        source = ROOT / root
        if not source.exists():
            continue  # an allow-list entry that matches nothing is fine for Docker too
        files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
        for path in files:
            relative = path.relative_to(ROOT).as_posix()
            if _ignored(relative, patterns):
                continue
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            copied.append(relative)
    return copied


def _run(argv: list[str], cwd: pathlib.Path, timeout: float = 600) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""})
    assert result.returncode == 0, f"{shlex.join(argv)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _expand(command: str, wheels: pathlib.Path) -> list[str]:
    tokens = []
    for token in shlex.split(command.replace("/wheels", str(wheels))):
        matches = sorted(glob.glob(token)) if "*" in token else [token]
        assert matches, f"{token} matches nothing"
        tokens.extend(matches)
    return tokens


@dataclasses.dataclass
class RuntimeVenv:
    path: pathlib.Path
    runtime_commands: list[str]
    pip_copy: pathlib.Path

    @property
    def bin(self) -> pathlib.Path:
        return self.path / "bin"

    def run(self, command: str, pythonpath: pathlib.Path | None = None) -> subprocess.CompletedProcess[str]:
        argv = shlex.split(command)
        argv[0] = str(self.bin / argv[0])
        env = {**os.environ, "PYTHONPATH": str(pythonpath or ""), "PATH": f"{self.bin}{os.pathsep}/usr/bin:/bin"}
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def runtime_venv(stages: dict[str, Stage], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeVenv]:
    tmp = tmp_path_factory.mktemp("image")
    context, wheels, venv = tmp / "context", tmp / "wheels", tmp / "venv"
    context.mkdir()
    copied = build_context(context)
    assert "pyproject.toml" in copied and any(p.startswith("operator/vigil/") for p in copied)
    assert not any("__pycache__" in p for p in copied)
    # Builder stage: every `pip wheel` command, from the build context (WORKDIR /src after COPY . .).
    for command in stages["builder"].commands():
        if command == f"pip install pip=={bootstrap_pip()}":
            continue  # the interpreter running the tests has that pip already (make bootstrap pins it)
        assert command.startswith("pip wheel"), f"builder step not replayed here: {command}"
        _run([sys.executable, "-m", *_expand(command, wheels)], cwd=context)
    # Runtime stage: a fresh interpreter environment (the python image's site-packages), then the install.
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp)
    runtime = stages["runtime"].commands()
    python = str(venv / "bin" / "python")
    for command in runtime:
        if command.startswith("pip install"):
            _run([python, "-m", *_expand(command, wheels)], cwd=tmp)
    # The image drops pip, setuptools and wheel after the smoke checks; measure it that way too.
    removal = [c for c in runtime if c.startswith("pip uninstall")]
    assert removal == ["pip uninstall --yes pip setuptools wheel"]
    keep_pip = runtime_pip_copy(venv)
    _run([python, "-m", *shlex.split(removal[0])], cwd=tmp)
    yield RuntimeVenv(venv, runtime, keep_pip)


def runtime_pip_copy(venv: pathlib.Path) -> pathlib.Path:
    """A copy of pip outside the venv, so the tests can still ask it what is installed."""
    site = next((venv / "lib").glob("python3.*/site-packages"))
    copy = venv.parent / "pip-tool"
    shutil.copytree(site / "pip", copy / "pip")
    return copy


def _size(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_runtime_venv_runs_the_operator_cli(runtime_venv: RuntimeVenv) -> None:
    command = next(c for c in runtime_venv.runtime_commands if c.startswith("vigil run --help"))
    result = runtime_venv.run(command.split(">")[0].strip())
    assert result.returncode == 0, result.stderr
    assert "--prometheus-url" in result.stdout and "--http-port" in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_runtime_venv_has_no_scikit_learn(runtime_venv: RuntimeVenv) -> None:
    command = next(c for c in runtime_venv.runtime_commands if "sklearn" in c)
    assert runtime_venv.run(command).returncode == 0, "the Dockerfile's own check: sklearn must not be importable"
    probe = runtime_venv.run("python -c 'import sklearn'")
    assert probe.returncode != 0 and "No module named 'sklearn'" in probe.stderr
    freeze = runtime_venv.run("python -m pip freeze", pythonpath=runtime_venv.pip_copy).stdout.lower().splitlines()
    installed = {re.split(r"==| @ ", line)[0].strip() for line in freeze if line}
    for package in ("scikit-learn", "skl2onnx", "onnx", "matplotlib", "pytest", "moto", "kmock", "mypy", "ruff"):
        assert package not in installed, f"{package} leaked into the runtime image"
    assert {"onnxruntime", "kopf", "vigil-operator"} <= installed


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_runtime_venv_ships_no_test_infrastructure(runtime_venv: RuntimeVenv) -> None:
    """The emulator, the sandbox's Prometheus and moto helpers, the fault proxy and the demo live in
    sandbox/ (vigil-sandbox), not in the operator's package: the image carries only the operator."""
    probe = runtime_venv.run("python -c 'import vigil_sandbox'")
    assert probe.returncode != 0 and "No module named 'vigil_sandbox'" in probe.stderr, probe.stderr
    probe = runtime_venv.run("python -c 'import vigil_sandbox'")
    assert probe.returncode != 0 and "No module named 'vigil_sandbox'" in probe.stderr, probe.stderr
    site = next((runtime_venv.path / "lib").glob("python3.*/site-packages"))
    shipped = {p.relative_to(site / "vigil").parts[0] for p in (site / "vigil").rglob("*.py")}
    assert shipped >= {"adapters", "domain", "engine", "api", "cli.py"}
    assert not shipped & {"sandbox", "tests"}, sorted(shipped)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_runtime_venv_is_the_runtime_lock(runtime_venv: RuntimeVenv) -> None:
    """The image must run the versions the tests ran: requirements/runtime.lock, nothing more or less."""
    freeze = runtime_venv.run("python -m pip freeze", pythonpath=runtime_venv.pip_copy).stdout.lower().splitlines()
    installed = dict(line.split("==", 1) for line in freeze if "==" in line)
    installed = {re.sub(r"[-_.]+", "-", name): version for name, version in installed.items()}
    installed.pop("vigil-operator", None)
    lock = (ROOT / "requirements" / "runtime.lock").read_text().lower().splitlines()
    locked = dict(line.split(" ")[0].split("==", 1) for line in lock if line and line[0].isalnum())
    assert installed == locked


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_runtime_venv_loads_the_builtin_model(runtime_venv: RuntimeVenv) -> None:
    if not list((ROOT / "operator" / "vigil" / "models").glob("*.onnx")):
        pytest.skip("operator/vigil/models/ has no .onnx yet (the built-in model is trained by `make train`); "
                    "the Dockerfile's `vigil version` step would fail the image build too")
    assert "vigil version" in runtime_venv.runtime_commands
    result = runtime_venv.run("vigil version")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "built-in model:" in result.stdout and "unavailable" not in result.stdout


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_runtime_size(runtime_venv: RuntimeVenv, capsys: pytest.CaptureFixture[str]) -> None:
    site = next((runtime_venv.path / "lib").glob("python3.*/site-packages"))
    total = _size(site)
    packages = sorted(((_size(p), p.name) for p in site.iterdir() if p.is_dir()), reverse=True)[:8]
    with capsys.disabled():
        print(f"\nruntime site-packages: {total / 2**20:.0f} MiB (budget {SITE_PACKAGES_BUDGET_MB} MiB); largest: "
              + ", ".join(f"{name} {size / 2**20:.0f}" for size, name in packages))
    assert total < SITE_PACKAGES_BUDGET_MB * 2**20, "the image grew past docs/image.md's budget"
