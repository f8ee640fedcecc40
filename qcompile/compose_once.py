"""A plain ``qcompile build`` composes its recipe once, not twice.

Hydra 1.3's ``main`` composes the whole config a first time only to read ``hydra.mode`` (``Hydra.get_mode``), then
composes it again in ``Hydra.run``: on 2 cores each composition is about 0.2 s, a quarter of a fully cached build.
For a run without ``-m``, :func:`compose_once` composes in RUN mode exactly as ``Hydra.run`` will (same overrides,
logging configured the same way), reads the mode from that config, and hands the same config to ``Hydra.run``.
Whenever that composition fails or the recipe asks for another mode, Hydra's own path runs unchanged (Hydra then
reports the error or sweeps as it always does). The one visible difference: ``hydra.mode=RUN`` is not appended to
the recorded Hydra overrides, since the mode was read rather than defaulted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def compose_once(argv: list[str]) -> Iterator[None]:
    """Within this block, a Hydra run of ``argv`` (without ``-m``/``--multirun``) composes its config once."""
    if any(a in ("-m", "--multirun") for a in argv):
        yield
        return
    from hydra._internal.hydra import Hydra
    from hydra.types import RunMode

    stock_get_mode, stock_compose = Hydra.get_mode, Hydra.compose_config
    memo: dict = {}

    def compose_config(self, config_name, overrides, run_mode, with_log_configuration=False, from_shell=True,
                       validate_sweep_overrides=True):
        key = (config_name, list(overrides), run_mode, with_log_configuration, from_shell, validate_sweep_overrides)
        if memo.get("key") == key:
            memo.pop("key")
            return memo.pop("cfg")
        return stock_compose(self, config_name, overrides, run_mode, with_log_configuration, from_shell,
                             validate_sweep_overrides)

    def get_mode(self, config_name, overrides):
        # The arguments Hydra.run passes to compose_config (hydra/_internal/hydra.py, 1.3).
        key = (config_name, list(overrides), RunMode.RUN, True, True, True)
        try:
            cfg = compose_config(self, *key)
        except Exception:
            return stock_get_mode(self, config_name, overrides)
        if cfg.hydra.mode not in (None, RunMode.RUN):
            return stock_get_mode(self, config_name, overrides)
        memo.update(key=key, cfg=cfg)
        return RunMode.RUN

    Hydra.get_mode, Hydra.compose_config = get_mode, compose_config
    try:
        yield
    finally:
        Hydra.get_mode, Hydra.compose_config = stock_get_mode, stock_compose
