"""Prove the dependency set installs from wheels alone on each platform we promise.

`pip install --dry-run --only-binary=:all:` resolves the project's dependencies (the test
extra included) for a Python version and platform other than this machine's, without
installing anything: a dependency that drops a platform fails CI here instead of on a
user's machine. Run by .ci/run; needs network access to the package index.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
# (python version, platform tag). pip widens a macOS tag to older macOS versions itself, but
# takes a manylinux tag literally: `platform_tags` adds the older glibc tags such a machine runs.
TARGETS = (
    ("3.13", "manylinux_2_28_aarch64"),
    ("3.14", "manylinux_2_28_x86_64"),
    ("3.12", "macosx_14_0_arm64"),
    ("3.12", "macosx_13_0_x86_64"),
)


def requirements() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["test"]]


def for_target(reqs: list[str], python: str, platform: str) -> list[str]:
    """The requirements that apply on the target, markers evaluated for it, not for us.

    pip evaluates environment markers against the machine it runs on even with --platform,
    so a dependency left out on one platform (`; sys_platform != 'darwin'`) is judged here.
    """
    darwin = platform.startswith("macosx")
    # macosx_14_0_arm64, manylinux_2_28_x86_64: the machine is what follows the version.
    machine = platform.split("_", 3)[-1]
    env = {
        "sys_platform": "darwin" if darwin else "linux",
        "platform_system": "Darwin" if darwin else "Linux",
        "platform_machine": machine,
        "os_name": "posix",
        "python_version": python,
        "python_full_version": f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    kept = []
    for line in reqs:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate(env):
            req.marker = None
            kept.append(str(req))
    return kept


def platform_tags(platform: str) -> list[str]:
    """`manylinux_2_28_x86_64` and every manylinux tag a glibc 2.28 machine also installs."""
    if not platform.startswith("manylinux_2_"):
        return [platform]
    glibc_minor, arch = platform.removeprefix("manylinux_2_").split("_", 1)
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(int(glibc_minor), 4, -1)]
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    return tags + [f"{name}_{arch}" for name, minor in legacy.items() if minor <= int(glibc_minor)]


def check(python: str, platform: str, reqs: list[str]) -> bool:
    platforms = [arg for tag in platform_tags(platform) for arg in ("--platform", tag)]
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
        "--only-binary=:all:", *platforms, "--python-version", python,
        "--implementation", "cp", "--target", tempfile.gettempdir(),
        *for_target(reqs, python, platform),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    ok = done.returncode == 0
    print(f"wheels for CPython {python} on {platform}: {'ok' if ok else 'MISSING'}")
    if not ok:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        print("\n".join(errors or done.stderr.splitlines()[-20:]), file=sys.stderr)
    return ok


def main() -> int:
    reqs = requirements()
    results = [check(python, platform, reqs) for python, platform in TARGETS]
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
