"""The README's module map matches the tree: every module and package of `hybrid/` is in it, and everything it names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_map() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Module map", 1)[1].split("\n## ", 1)[0]


def test_every_module_and_package_is_in_the_map():
    section = module_map()
    top = [p for p in (ROOT / "hybrid").glob("*.py") if p.name != "__init__.py"]
    packages = [p for p in (ROOT / "hybrid").rglob("*") if p.is_dir() and (p / "__init__.py").exists() or (p.is_dir() and list(p.glob("*.py")))]
    for path in top:
        assert f"`hybrid/{path.name}`" in section, path.name
    for folder in packages:
        if "__pycache__" in folder.parts or "_data" in folder.parts:
            continue
        name = folder.relative_to(ROOT).as_posix()
        if name == "hybrid/evaluation":  # only its two sub-packages hold code
            continue
        assert f"`{name}/`" in section, name


def test_every_path_the_map_names_exists():
    section = module_map()
    for path in re.findall(r"`(hybrid/[\w/.]+)`", section):
        assert (ROOT / path).exists(), path
    rows = re.findall(r"^\| `(hybrid/[\w/]+/)` \| (.*) \|$", section, flags=re.M)
    for package, text in rows:  # a package's files named in its row exist there
        for name in re.findall(r"`(\w+\.py)`", text):
            assert (ROOT / package / name).exists(), package + name
