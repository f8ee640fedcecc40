"""The user's own metrics (``eval.metrics``): imported from their module, called on one variant's outputs, and
compared with the reference's. Anything wrong with them is the user's: bad input naming the metric and function."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..errors import BadInput

if TYPE_CHECKING:
    from ..kinds.measure import UserMetric


def _key(name: str) -> str:
    return f"eval.metrics.{name}.function"


def load_metric(name: str, metric: UserMetric) -> Callable[..., Any]:
    """The function ``metric.function`` names, imported from ``metric.root`` (the module reloaded when it was
    imported before in this process, since the file may have changed)."""
    import importlib

    module_name, _, fn_name = metric.function.partition(":")
    root = str(Path(metric.root).resolve())  # the default "." named as the folder it is, in messages too
    sys.path.insert(0, root)
    try:
        importlib.invalidate_caches()
        if module_name in sys.modules:
            module = importlib.reload(sys.modules[module_name])
        else:
            module = importlib.import_module(module_name)
    except Exception as e:  # the user's module: any error while importing it is theirs
        raise BadInput(f"metric {name!r}: {metric.function} does not import from {root}: {type(e).__name__}: "
                       f"{str(e)[:200]}", key=_key(name)) from e
    finally:
        if sys.path and sys.path[0] == root:
            sys.path.pop(0)
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        what = "is missing" if fn is None else f"is a {type(fn).__name__}, not callable"
        raise BadInput(f"metric {name!r}: {metric.function} {what} (module {module_name} has no callable "
                       f"{fn_name!r})", key=_key(name))
    return fn


def user_scores(metrics: dict[str, UserMetric], outputs: dict[str, Any], labels: Any) -> dict[str, float]:
    """Every user metric of one variant: ``function(outputs, labels)`` as a finite float, by metric name.

    The function's own exception (labels it cannot use, outputs it did not expect) is bad input naming the metric
    and its function; it is chained, so ``QCOMPILE_FULL_ERROR=1`` shows its traceback.
    """
    values = {}
    for name, metric in sorted(metrics.items()):
        fn = load_metric(name, metric)
        # Copies: a metric that writes into its arguments must not change what the next metric or the stored
        # outputs see.
        args = {k: v.copy() for k, v in outputs.items()}
        try:
            value = fn(args, None if labels is None else labels.copy())
        except Exception as e:  # the user's function
            raise BadInput(f"metric {name!r}: {metric.function}(outputs, labels) raised {type(e).__name__}: "
                           f"{str(e)[:200]}", key=_key(name)) from e
        values[name] = _as_float(name, metric, value)
    return values


def _as_float(name: str, metric: UserMetric, value: Any) -> float:
    """``value`` as a finite float (a Python or numpy scalar, a 0-d or one-element array), else bad input."""
    import numpy as np

    if isinstance(value, (bool, np.bool_)):  # a bool is an int to Python, but never a metric value
        got = None
    else:
        try:
            arr = np.asarray(value, dtype=np.float64)
            got = float(arr.reshape(())) if arr.size == 1 and arr.ndim <= 1 else None
        except (TypeError, ValueError):
            got = None
    if got is None:
        raise BadInput(f"metric {name!r}: {metric.function} returned {type(value).__name__} "
                       f"{str(value)[:80]!r}, not a number", key=_key(name))
    if not math.isfinite(got):
        raise BadInput(f"metric {name!r}: {metric.function} returned {got}, not a finite number", key=_key(name))
    return got


def user_drops(ref: dict[str, float], out: dict[str, float], higher: dict[str, bool]) -> dict[str, float]:
    """How much each user metric got worse from the reference to the variant: ref - out when higher is better,
    out - ref when lower is (an error that rises has dropped); negative when the variant is better."""
    return {k: round((ref[k] - out[k]) if higher.get(k, True) else (out[k] - ref[k]), 9)
            for k in sorted(ref) if k in out}
