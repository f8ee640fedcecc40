"""Hydra callbacks of ``qcompile build`` (named in recipes/base.yaml).

They live here, not in ``qcompile.build``, because the package ``qcompile`` exports the function ``build``,
which hides the subpackage of that name from Hydra's ``_target_`` lookup.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback

from .builds.rundir import claim
from .errors import BadInput


class RunDirClaim(Callback):
    """Hydra callback: claim a single run's folder, or a sweep's folder, before Hydra writes anything there."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        """Claim ``hydra.run.dir``; on a conflict print one line and exit 2 before anything is written."""
        _claim_or_exit(str(config.hydra.run.dir))

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        """Claim ``hydra.sweep.dir``: a second sweep into it would rewrite its jobs' ``.hydra/`` records."""
        _claim_or_exit(str(config.hydra.sweep.dir))


def _claim_or_exit(folder: str) -> None:
    try:
        claim(folder)
    except BadInput as e:
        import sys

        print(f"qcompile: bad input: {e}", file=sys.stderr)
        raise SystemExit(2) from None
