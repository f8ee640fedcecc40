"""Whole builds: build, lockfile, reproduce and checkout (and, later, search loops). Nothing below imports it."""

from .build import BuildResult, build

__all__ = ["BuildResult", "build"]
