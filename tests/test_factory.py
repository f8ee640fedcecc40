"""model.kind=factory (issue #9): the user's own ``package.module:function``; its module's source is in the key, and
each way the user's code can fail is exit 2 naming model.function with nothing cached."""

from __future__ import annotations

import os

import pytest

from .conftest import cache_entries, run_cli

NET = """
from torch import nn


def build(width=4, classes=3):
    return nn.Sequential(nn.Conv2d(3, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, classes))


def not_a_model(**kwargs):
    return {"width": 4}


def broken(**kwargs):
    raise RuntimeError("cannot build today")


NOT_CALLABLE = 3
"""


@pytest.fixture
def user_code(tmp_path):
    """A user's package ``mynets`` with a model module, in its own folder (not on sys.path)."""
    pkg = tmp_path / "code" / "mynets"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(NET)
    return tmp_path / "code"


def _args(root, function="mynets.tiny:build", *extra):
    return ["model=factory", f"model.function={function}", f"model.root={root}", "model.kwargs={width: 4}",
            "model.input_shape=[3,16,16]", "model.num_classes=3", "data=synthetic", "data.eval_samples=4",
            "quant=int8_dynamic", "eval.max_accuracy_drop=null", *extra]


def _plan(args):
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe

    return compile_plan(load_recipe("demo", args))


def _status(plan, cache, name):
    from qcompile.run.scheduler import peek

    return next(o.status for o in peek(plan, cache) if o.name == name)


def test_editing_the_module_reruns_the_model_step_touching_does_not(user_code, tmp_path):
    from qcompile.cache import Cache
    from qcompile.graph import Plan
    from qcompile.run.scheduler import execute

    cache = Cache(tmp_path / "cache")
    plan = _plan(_args(user_code))
    only_model = Plan()
    only_model.add(plan.node("model"))
    (outcome,) = execute(only_model, cache)
    assert outcome.status == "ran" and outcome.result["class"] == "Sequential"
    assert _status(plan, cache, "model") == "cached"

    module = user_code / "mynets" / "tiny.py"
    stat = module.stat()
    os.utime(module, (stat.st_atime + 5, stat.st_mtime + 5))  # touched: same bytes, newer mtime
    again = _plan(_args(user_code))
    assert _status(again, cache, "model") == "cached"
    assert again.node("export").params == plan.node("export").params

    module.write_text(NET.replace("nn.ReLU()", "nn.ReLU6()"))  # edited: another model
    edited = _plan(_args(user_code))
    assert _status(edited, cache, "model") == "will run"
    # The export step's architecture names the source too: an edited forward() re-exports even with equal weights.
    assert edited.node("export").params.arch.source_sha256 != plan.node("export").params.arch.source_sha256


def test_factory_model_exports(user_code, tmp_path):
    """The export step rebuilds the user's architecture from the factory and exports it to a checked ONNX file."""
    from qcompile.cache import Cache
    from qcompile.graph import Plan
    from qcompile.run.scheduler import execute

    plan = _plan(_args(user_code))
    sub = Plan()
    sub.add(plan.node("model"))
    sub.add(plan.node("export"))
    outcomes = {o.name: o for o in execute(sub, Cache(tmp_path / "cache"))}
    assert outcomes["export"].status == "ran" and outcomes["export"].result["max_abs_diff"] <= 1e-3


@pytest.mark.parametrize("function, fragment", [
    ("mynets.missing:build", "does not import"),
    ("mynets.tiny:NOT_CALLABLE", "no callable 'NOT_CALLABLE'"),
    ("mynets.tiny:nothing_here", "no callable 'nothing_here'"),
    ("mynets.tiny:broken", "raised RuntimeError: cannot build today"),
    ("mynets.tiny:not_a_model", "returned dict, not a torch.nn.Module"),
])
def test_factory_bad_inputs_are_named(function, fragment, user_code, tmp_path):
    """Exit-2 errors (BadInput naming model.function) before anything is written to the cache."""
    from qcompile.builds import build
    from qcompile.cache import Cache
    from qcompile.errors import BadInput
    from qcompile.recipe.load import load_recipe

    cache = Cache(tmp_path / "cache")
    with pytest.raises(BadInput, match="model.function") as e:
        build(load_recipe("demo", _args(user_code, function)), tmp_path / "out", cache=cache)
    assert fragment in str(e.value)
    assert cache_entries(tmp_path / "cache") == []


def test_factory_module_that_does_not_import(user_code, cache_dir, tmp_path):
    """A syntax error in the user's module: exit 2 through the CLI, one line, nothing cached."""
    (user_code / "mynets" / "tiny.py").write_text("def build(:\n")
    proc = run_cli("build", *_args(user_code), cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "model.function" in proc.stderr and "does not import" in proc.stderr and "Traceback" not in proc.stderr
    assert cache_entries(cache_dir) == []


def test_unknown_exclude_name_fails_its_step_which_is_never_a_hit(user_code, cache_dir, tmp_path):
    """A torch model's node names are known once it is exported: a wrong one fails the quantize step (exit 2), which
    leaves no record, not even a failure one, and the next build runs the step again instead of replaying it."""
    args = _args(user_code, "mynets.tiny:build", "quant.exclude.names=[nope]")
    bad = run_cli("build", *args, "hydra.run.dir=bad", cache=cache_dir, cwd=tmp_path)
    assert bad.returncode == 2 and "quant.exclude.names" in bad.stderr and "Traceback" not in bad.stderr
    ls = run_cli("cache", "ls", "--failed", cache=cache_dir, cwd=tmp_path)
    assert ls.returncode == 0 and "nope" not in ls.stdout and cache_entries(cache_dir) == []
    again = run_cli("build", *args, "hydra.run.dir=bad2", cache=cache_dir, cwd=tmp_path)
    assert again.returncode == 2, "a failure is retried, never replayed from the cache"
    names = _fp32_node_names(tmp_path / "good0", user_code, cache_dir)
    gemm = next(name for name, op in names if op == "Gemm")
    good = run_cli("build", *_args(user_code, "mynets.tiny:build", f"quant.exclude.names=[{gemm}]"),
                   "hydra.run.dir=good", cache=cache_dir, cwd=tmp_path)
    assert good.returncode == 0, good.stderr[-2000:]
    import onnx

    plain = {n.op_type for n in onnx.load(str(tmp_path / "good0" / "artifacts" / "model.int8_dynamic.onnx")).graph.node}
    kept = {n.op_type for n in onnx.load(str(tmp_path / "good" / "artifacts" / "model.int8_dynamic.onnx")).graph.node}
    assert "MatMulInteger" in plain and "Gemm" not in plain, "without the exclusion the Gemm is quantized"
    assert "MatMulInteger" not in kept and "MatMul" in kept, "kept in float by the name model.fp32.onnx shows"


def _fp32_node_names(out, user_code, cache_dir):
    """(name, op type) of the nodes of a plain build's artifacts/model.fp32.onnx: what a user reads in netron."""
    import onnx

    proc = run_cli("build", *_args(user_code), f"hydra.run.dir={out}", cache=cache_dir, cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = onnx.load(str(out / "artifacts" / "model.fp32.onnx"))
    return [(n.name, n.op_type) for n in model.graph.node]
