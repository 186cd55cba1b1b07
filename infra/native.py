"""Compile the projections core with mypyc, in place (`make native`; ADR 31).

    python -m infra.native          # build projections/*.so next to the sources
    python -m infra.native --clean  # remove them: back to pure Python

The core is plain, fully typed Python (mypy strict), so mypyc compiles it unchanged to
C extensions: the fold, replay, rebuild and the projector's own work run 1.4–1.8x
faster (docs/scaling.md). Every module is compiled except `__init__` (kept as Python,
so the package imports the shared library as `projections._native__mypyc`, inside the
package, from any working directory) and `ports` (abstract classes the adapters
subclass; compiled classes cannot be subclassed by interpreted ones).

An extension module shadows its `.py`: after editing the core, build again. `make`
does (the targets depend on the sources), and the test suite refuses to run on a
build older than its sources (tests/conftest.py, `stale()`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
PACKAGE: Final = ROOT / "projections"
GROUP: Final = "projections._native"
KEPT_AS_PYTHON: Final = frozenset({"__init__.py", "ports.py"})


def sources() -> list[Path]:
    """The modules compiled."""
    return sorted(p for p in PACKAGE.glob("*.py") if p.name not in KEPT_AS_PYTHON)


def built() -> list[Path]:
    """The extension modules in the package (empty: pure Python)."""
    return sorted(PACKAGE.glob("*.so"))


def stale() -> list[str]:
    """Sources newer than their extension module, or compiled ones whose source is gone
    (empty when nothing is built, or the build is current)."""
    extensions = {p.name.split(".", 1)[0]: p for p in built()}
    if not extensions:
        return []
    out = []
    for source in sources():
        extension = extensions.get(source.stem)
        if extension is None or source.stat().st_mtime > extension.stat().st_mtime:
            out.append(source.name)
    return out


def clean() -> None:
    for path in built():
        path.unlink()
    shutil.rmtree(ROOT / "build" / "native", ignore_errors=True)
    (PACKAGE / ".native-stamp").unlink(missing_ok=True)


def build() -> None:
    """Compile in a scratch directory that links to the packages (setuptools must not
    read the project's own pyproject.toml here), writing the extensions in place."""
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - a dev tool, only for this command
        from setuptools import setup  # noqa: PLC0415
    except ImportError as exc:
        missing = (exc.name or "mypyc").split(".")[0]
        raise SystemExit(
            f"cannot compile the core: {missing} is not installed (it comes with eventcrm's "
            "dev tools: make install); pure Python works without it"
        ) from None

    clean()
    work = ROOT / "build" / "native"
    work.mkdir(parents=True)
    for package in ("projections", "domain"):
        (work / package).symlink_to(ROOT / package, target_is_directory=True)
    here = Path.cwd()
    os.chdir(work)
    try:
        setup(
            name="eventcrm-native",
            packages=[],
            ext_modules=mypycify(
                [f"projections/{p.name}" for p in sources()], group_name=GROUP, opt_level="3"
            ),
            script_args=["build_ext", "--inplace", "--quiet"],
        )
    finally:
        os.chdir(here)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.native", description=__doc__)
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    args = parser.parse_args()
    if args.clean:
        clean()
        print("projections: pure Python")
        return
    build()
    print(f"projections: {len(built())} compiled modules", file=sys.stderr)


if __name__ == "__main__":
    main()
