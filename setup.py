"""Build step of the wheel: besides the code, it carries the shipped refiners, recipes and evaluation suites inside
the package (hybrid/_data/), where hybrid.resources finds them through importlib.resources. Everything else about the
package is declared in pyproject.toml."""

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hybrid.resources import SHIPPED  # noqa: E402  (imports nothing but the standard library)


class BuildWithShippedFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):  # an editable install reads the files where they are
            return
        target = Path(self.build_lib) / "hybrid" / "_data"
        for relative in SHIPPED:
            source = Path(relative)
            if source.is_dir():
                shutil.copytree(source, target / relative, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            elif source.is_file():
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / relative)


setup(cmdclass={"build_py": BuildWithShippedFiles})
