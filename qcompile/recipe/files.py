"""Check a user's recipe folder before Hydra reads it, so a broken file is named in one line (exit 2) instead
of surfacing as a parser traceback from deep inside the composition."""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput


def check_recipe_dir(config_dir: str | Path) -> None:
    """Every ``*.yaml`` under ``config_dir`` must be UTF-8, valid YAML, and a mapping (or empty)."""
    import yaml

    root = Path(config_dir)
    if not root.is_dir():
        raise BadInput(f"config dir not found: {root}", key="--config-dir")
    for path in sorted(root.rglob("*.yaml")):
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadInput(f"{path}: not UTF-8 text (byte {e.start}); save the recipe as UTF-8") from None
        except OSError as e:
            raise BadInput(f"{path}: cannot be read ({e.strerror})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise BadInput(f"{path}: invalid YAML{where}: {problem}") from None
        if data is not None and not isinstance(data, dict):
            raise BadInput(f"{path}: a recipe file must be a mapping of keys, not a {type(data).__name__}")
