"""What the packaged recipes folder offers, read from the folder itself (for ``qcompile build --help``)."""

from __future__ import annotations

from .compose import DEFAULT_RECIPE, RECIPES_MODULE

_HIDDEN = {"base"}  # pulled in by every recipe, not built on its own


def packaged() -> dict[str, list[str]]:
    """Recipe names at the top of the packaged folder (``""``) and the options of each config group."""
    from importlib.resources import files

    root = files(RECIPES_MODULE)
    found: dict[str, list[str]] = {"": sorted(p.name[:-5] for p in root.iterdir()
                                             if p.name.endswith(".yaml") and p.name[:-5] not in _HIDDEN)}
    for group in sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))):
        if group == "hydra":
            launchers = root / "hydra" / "launcher"
            found["hydra/launcher"] = sorted(p.name[:-5] for p in launchers.iterdir() if p.name.endswith(".yaml"))
            continue
        found[group] = sorted(p.name[:-5] for p in (root / group).iterdir() if p.name.endswith(".yaml"))
    return found


def help_footer() -> str:
    """The epilog of ``qcompile build --help``: packaged recipes, group options, launchers, exit codes."""
    found = packaged()
    names = [f"{n} (default)" if n == DEFAULT_RECIPE else n for n in found.pop("")]
    lines = [f"packaged recipes (--config-name): {', '.join(names)}", "groups (group=option):"]
    launchers = found.pop("hydra/launcher", [])
    lines += [f"  {group}: {', '.join(options)}" for group, options in found.items()]
    if launchers:
        lines.append(f"  hydra/launcher (with -m): {', '.join(launchers)}")
    lines.append("exit codes: 0 built, 1 bug, 2 bad input, 3 gate failed")
    return "\n".join(lines)
