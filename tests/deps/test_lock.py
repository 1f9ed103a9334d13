"""requirements/*.lock agree with pyproject.toml: pure file checks, no network, no install.

Why: bootstrap installs dev.lock and the image runtime.lock, so a pyproject.toml edit that is not
followed by `make lock` would be silently ignored (or break a fresh install only). These checks fail
first, naming the requirement, and the digest check says "run make lock" for any edit of the
dependency tables.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
import tomllib
from types import ModuleType

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[2]
PYPROJECT_TEXT = (ROOT / "pyproject.toml").read_text()
PROJECT = tomllib.loads(PYPROJECT_TEXT)["project"]
SELF = canonicalize_name(PROJECT["name"])
#: Training, plotting, sandbox and test tools: never in the container image (docs/image.md).
NOT_IN_RUNTIME = ("scikit-learn", "skl2onnx", "onnx", "matplotlib", "moto", "kmock", "pytest", "mypy", "ruff", "uv")


def _lock_script() -> ModuleType:
    """scripts/lock.py computes the digest it writes; the test uses the same code to recompute it."""
    spec = importlib.util.spec_from_file_location("lock_script", ROOT / "scripts" / "lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = _lock_script()


def _pins(path: pathlib.Path) -> dict[str, str]:
    """name -> version of a `uv pip compile` output: `name==version` lines, comments skipped."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"{path.name}: {line!r} is not an exact pin"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


DEV = _pins(LOCK.DEV_LOCK)
RUNTIME = _pins(LOCK.RUNTIME_LOCK)


def _environment(extra: str = "") -> dict[str, str]:
    """The platform the locks are resolved for (scripts/lock.py), not the one running the test."""
    env = dict(default_environment())
    env.update(python_version=LOCK.PYTHON_VERSION, python_full_version=f"{LOCK.PYTHON_VERSION}.0",
               sys_platform="linux", platform_system="Linux", platform_machine="x86_64", os_name="posix",
               implementation_name="cpython", platform_python_implementation="CPython", extra=extra)
    return env


def _requirements(group: str) -> list[Requirement]:
    """The requirements of `dependencies` or of one extra, self-references like `vigil-operator[plot]` expanded."""
    raw = PROJECT["dependencies"] if group == "" else PROJECT["optional-dependencies"][group]
    found: list[Requirement] = []
    for text in raw:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) == SELF:
            for extra in sorted(requirement.extras):
                found.extend(_requirements(extra))
        elif requirement.marker is None or requirement.marker.evaluate(_environment(group)):
            found.append(requirement)
    return found


GROUPS = ["", *PROJECT["optional-dependencies"]]


def test_the_locks_were_made_from_this_pyproject() -> None:
    expected = LOCK.digest(PYPROJECT_TEXT)
    for path in (LOCK.DEV_LOCK, LOCK.RUNTIME_LOCK):
        recorded = LOCK.recorded_digest(path.read_text())
        assert recorded == expected, (
            f"{path.relative_to(ROOT)} was compiled from other pyproject.toml dependency tables "
            f"(recorded {recorded}, now {expected}): run make lock"
        )


@pytest.mark.parametrize("group", GROUPS, ids=[g or "dependencies" for g in GROUPS])
def test_every_requirement_is_locked_within_its_specifier(group: str) -> None:
    requirements = _requirements(group)
    assert requirements
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in DEV, f"{requirement} ({group or 'dependencies'}) is not in requirements/dev.lock: run make lock"
        assert requirement.specifier.contains(DEV[name], prereleases=True), (
            f"requirements/dev.lock pins {name}=={DEV[name]}, outside {requirement}: run make lock"
        )


def test_runtime_lock_has_every_runtime_requirement_at_the_dev_version() -> None:
    for requirement in _requirements(""):
        name = canonicalize_name(requirement.name)
        assert name in RUNTIME, f"{requirement} is not in requirements/runtime.lock: run make lock"
        pinned = RUNTIME[name]
        assert requirement.specifier.contains(pinned, prereleases=True), f"{name}=={pinned}: {requirement}"
    # The image must run what the tests ran: every runtime pin is the dev pin.
    differing = {name: (version, DEV.get(name)) for name, version in RUNTIME.items() if DEV.get(name) != version}
    assert not differing, f"runtime.lock and dev.lock disagree (runtime, dev): {differing}: run make lock"


def test_runtime_lock_has_no_training_or_test_packages() -> None:
    leaked = sorted(set(NOT_IN_RUNTIME) & set(RUNTIME))
    assert not leaked, f"requirements/runtime.lock holds {leaked}: the image would install them"


def test_kubernetes_stays_below_the_broken_release() -> None:
    """37.0.2 needs python-dateutil>=3, botocore <3 (pyproject.toml): the pin must survive `make lock`."""
    assert "<37.0.2" in next(r for r in PROJECT["dependencies"] if r.startswith("kubernetes"))
    assert tuple(int(part) for part in re.findall(r"\d+", DEV["kubernetes"])[:3]) < (37, 0, 2)


def test_digest_ignores_formatting_and_sees_a_bound_change() -> None:
    reformatted = PYPROJECT_TEXT.replace('"pyyaml>=6",', '"pyyaml>=6",  # a comment')
    assert reformatted != PYPROJECT_TEXT
    assert LOCK.digest(reformatted) == LOCK.digest(PYPROJECT_TEXT)
    raised = PYPROJECT_TEXT.replace('"pyyaml>=6"', '"pyyaml>=7"')
    assert LOCK.digest(raised) != LOCK.digest(PYPROJECT_TEXT)


def test_the_build_backends_are_pinned_and_bootstrap_uses_the_pins() -> None:
    """pip builds both distributions (the operator and sandbox/) in isolated environments whose setuptools
    and wheel would be the newest of the day: requirements/build.lock pins every `build-system.requires`
    within its specifier, and scripts/bootstrap.sh passes it to every install as `--build-constraint`."""
    build = _pins(LOCK.BUILD_LOCK)
    for text in LOCK.build_requirements():
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in build, f"{text} is not in {LOCK.BUILD_LOCK.name}: run make lock"
        assert requirement.specifier.contains(build[name]), f"{name}=={build[name]} is outside {text}"
    bootstrap = (ROOT / "scripts" / "bootstrap.sh").read_text()
    editable = bootstrap.count(" -e ")
    assert editable == 2 and bootstrap.count('--build-constraint "$build_lock"') == editable
