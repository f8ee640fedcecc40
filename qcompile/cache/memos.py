"""Memos: what a build learnt about the user's files (their content digests, an ONNX model's signature), remembered
by stat stamp under ``memo/`` and written only once the build that learnt them ends well.

A build rejected as bad input leaves no memo, like nothing else (ARCHITECTURE.md). Planning code has no
:class:`~qcompile.cache.Cache` at hand: it hands its memo files to :func:`learn`, and the cache writes those under
its root when a build there is flushed; until then :func:`recall` answers from memory, so a second look in the same
process parses nothing again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .journal import Journal
from .keys import StatMemo

_LEARNT: dict[Path, bytes] = {}  # memo file -> content, waiting for a build on its cache to end well


def learn(path: Path, text: str) -> None:
    """Keep the memo file ``path`` (under a cache's ``memo/``) to be written once a build on that cache ends well."""
    _LEARNT[Path(path)] = text.encode()


def recall(path: Path) -> str | None:
    """The text of the memo file ``path``: learnt in this process and not written yet, or as stored; None when
    there is none (or it cannot be read)."""
    pending = _LEARNT.get(Path(path))
    if pending is not None:
        return pending.decode()
    try:
        return Path(path).read_text()
    except (OSError, ValueError):
        return None


class Memo(StatMemo):
    """The cache's stat memo. ``flush`` also writes what was :func:`learn`-ed for this cache; while a build's
    lease is open (``busy``) it only asks for that, and the cache writes them when the lease closes without error."""

    def __init__(self, root: Path, journal: Journal, busy: Callable[[], bool]):
        super().__init__(root)
        self.journal = journal
        self.busy = busy
        self.requested = False

    def flush(self) -> None:
        """Write the memos learnt so far, now or, inside a build, when it ends well."""
        if self.busy():
            self.requested = True
            return
        self.write()

    def write(self) -> None:
        """Write the pending memos now (nothing on a read-only cache)."""
        self.requested = False
        if self.journal.read_only:
            return
        try:
            super().flush()
            for path in [p for p in _LEARNT if p.is_relative_to(self.root)]:
                self.journal.write(path, _LEARNT.pop(path))
        except OSError as e:  # a memo saves work, no more: a build never fails for want of one
            self.journal.refused(e)
