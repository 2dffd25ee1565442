"""Checks the built distributions as a new user gets them (`make check-wheel`).

1. The wheel holds the package and nothing else: every ``sigmoid_xent/**.py`` of the checkout,
   ``py.typed``, and its dist-info (with the LICENSE); no tests, benchmarks or notebooks.
2. The sdist is the whole source tree: every tracked file but ``.gitignore``, so that its tests
   run (``tests/conftest.py``, the notebooks and READMEs they read included).
3. The wheel, installed into a fresh virtual environment in a temporary directory outside the
   checkout (with pytest and nothing else), imports, and its doctests pass when run there with
   ``pytest --doctest-modules --pyargs sigmoid_xent``. A module whose import fails because an
   optional dependency (keras, torch, ...) is absent is left out, and said so; any other import
   failure is an error.

Usage: ``python .ci/check_wheel.py [--python PYTHON] [DIST_DIR]``.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "sigmoid_xent"
# Imports an installed module may lack: the extras' packages (optax: the `demo` extra), never the
# core dependencies.
OPTIONAL = ("keras", "torch", "flax", "equinox", "matplotlib", "tensorflow", "optax")
DOCTEST_FLAGS = "NORMALIZE_WHITESPACE NUMBER"  # as pyproject.toml's [tool.pytest.ini_options]

# Run by the fresh environment's interpreter: which installed modules import, which are optional.
PROBE = r"""
import importlib, json, os, pkgutil
import {package}
optional, failed = {{}}, {{}}
for info in pkgutil.walk_packages({package}.__path__, "{package}."):
    path = os.path.join(info.module_finder.path, info.name.rsplit(".", 1)[1])
    path = path if info.ispkg else path + ".py"
    try:
        importlib.import_module(info.name)
    except ImportError as error:
        # A module that needs an extra fails on its import, or says how to install it.
        root = (getattr(error, "name", None) or "").split(".")[0]
        hit = root in {optional} or any(name in str(error).lower() for name in {optional})
        (optional if hit else failed)[info.name] = [path, repr(error)]
    except Exception as error:  # noqa: BLE001 - report every kind of failure
        failed[info.name] = [path, repr(error)]
print(json.dumps({{"file": {package}.__file__, "optional": optional, "failed": failed}}))
"""


def tracked(prefix: str) -> list[str]:
    """Tracked files under ``prefix`` (git), or every file there when this is no git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "--", prefix], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        return [line for line in out.splitlines() if line]
    except (OSError, subprocess.CalledProcessError):
        return [
            str(p.relative_to(ROOT))
            for p in (ROOT / prefix).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ]


def check_wheel_contents(wheel: pathlib.Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = [n for n in names if n.split("/")[0].endswith(".dist-info")]
    package = [n for n in names if n.startswith(PACKAGE + "/")]
    stray = sorted(set(names) - set(dist_info) - set(package))
    assert not stray, f"{wheel.name}: files outside {PACKAGE}/ and the dist-info: {stray}"
    expected = {p for p in tracked(PACKAGE) if p.endswith(".py")} | {f"{PACKAGE}/py.typed"}
    missing = sorted(expected - set(package))
    assert not missing, f"{wheel.name}: missing {missing}"
    extra = sorted(n for n in package if not n.endswith(".py") and n != f"{PACKAGE}/py.typed")
    assert not extra, f"{wheel.name}: unexpected non-Python files in the package: {extra}"
    assert any(n.endswith("licenses/LICENSE") for n in dist_info), f"{wheel.name}: no LICENSE"
    print(f"wheel: {len(package)} package files + dist-info, nothing else")


def check_sdist_contents(sdist: pathlib.Path) -> None:
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    expected = set(tracked(".")) - {".gitignore"}
    missing = sorted(expected - names)
    assert not missing, f"{sdist.name}: missing {missing}"
    assert "tests/conftest.py" in names, f"{sdist.name}: no tests/conftest.py"
    print(f"sdist: all {len(expected)} tracked files present (tests/conftest.py included)")


def check_installed(wheel: pathlib.Path, python: str) -> None:
    import json

    with tempfile.TemporaryDirectory(prefix="sigmoid_xent-wheel-") as tmp:
        work = pathlib.Path(tmp)
        venv = work / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        py = str(venv / "bin" / "python")
        pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, str(wheel), "pytest"], check=True)
        probe = PROBE.format(package=PACKAGE, optional=OPTIONAL)
        out = subprocess.run(
            [py, "-c", probe], cwd=work, check=True, capture_output=True, text=True
        ).stdout
        report = json.loads(out.splitlines()[-1])
        where = pathlib.Path(report["file"]).resolve()
        assert ROOT not in where.parents, f"imported the checkout ({where}), not the wheel"
        assert not report["failed"], f"modules that do not import: {report['failed']}"
        ignores = []
        for name, (path, why) in sorted(report["optional"].items()):
            print(f"doctests of {name} left out (optional dependency missing): {why}")
            ignores.append(f"--ignore={path}")
        command = [
            py,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--doctest-modules",
            "-o",
            f"doctest_optionflags={DOCTEST_FLAGS}",
            *ignores,
            "--pyargs",
            PACKAGE,
        ]
        print("in", work, ":", " ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=work, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dist", nargs="?", default=str(ROOT / "dist"))
    parser.add_argument("--python", default=sys.executable, help="interpreter for the fresh venv")
    args = parser.parse_args(argv)
    dist = pathlib.Path(args.dist)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, f"expected one wheel and one sdist in {dist}"
    check_wheel_contents(wheels[0])
    check_sdist_contents(sdists[0])
    check_installed(wheels[0], args.python)
    print("check-wheel: OK")


if __name__ == "__main__":
    main()
