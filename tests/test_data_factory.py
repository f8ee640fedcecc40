"""data.kind=factory: the user's own dataloader ``package.module:function``, its batches streamed to disk. Its
module's source and kwargs are in the key, memory stays bounded by a batch, and each way the user's code can fail is
exit 2 naming data.function with nothing cached."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from .conftest import after_ctime_tick, cache_entries, export_tiny_onnx, run_cli

LOADER = '''
import json
import weakref

import numpy as np


def batches(n=40, batch=8, seed=0, split=None):
    """Batches of the tiny classifier's input with integer labels (the same samples whatever the batch size); per
    split when asked."""
    rng = np.random.default_rng([seed, {None: 0, "calib": 1, "eval": 2}[split]])
    x, y = rng.standard_normal((n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, n)
    for start in range(0, n, batch):
        yield {"input": x[start:start + batch], "labels": y[start:start + batch]}


def whole(n=40):
    return next(batches(n=n, batch=n))


def one_by_one(n=40):
    b = whole(n)
    for x, y in zip(b["input"], b["labels"]):
        yield {"input": x, "labels": int(y)}


def scored(n=40):
    for b in batches(n=n):
        yield {"input": b["input"], "labels": np.ones((len(b["labels"]), 2, 3), np.float32)}


def broken(**kwargs):
    raise RuntimeError("no data today")


def broken_midway():
    yield next(batches())
    raise ValueError("the disk went away")


def wrong_name():
    yield {"image": np.zeros((8, 1, 28, 28), np.float32), "labels": np.zeros(8, np.int64)}


def wrong_dtype():
    yield {"input": np.zeros((8, 1, 28, 28), np.int32), "labels": np.zeros(8, np.int64)}


def wrong_shape():
    yield {"input": np.zeros((8, 1, 14, 14), np.float32), "labels": np.zeros(8, np.int64)}


def float_labels():
    yield {"input": np.zeros((60, 1, 28, 28), np.float32), "labels": np.zeros(60, np.float32)}


NOT_CALLABLE = 3


def tracked(batches=40, batch=2000, record="alive.json"):
    """Many large batches; records the most earlier batches still alive whenever a new one is made."""
    alive, most = [0], 0

    def gone():
        alive[0] -= 1

    def make(i):
        x = np.full((batch, 1, 28, 28), i % 7, np.float32)
        weakref.finalize(x, gone)
        alive[0] += 1
        return {"input": x, "labels": np.full(batch, i % 10, np.int64)}

    for i in range(batches):
        most = max(most, alive[0])
        yield make(i)
    with open(record, "w") as f:
        json.dump({"most_alive": most, "batches": batches}, f)
'''


@pytest.fixture
def code(tmp_path):
    """A user's package ``mydata`` with a loader module, in its own folder (not on sys.path), and the tiny model."""
    pkg = tmp_path / "code" / "mydata"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "loader.py").write_text(LOADER)
    export_tiny_onnx(tmp_path / "model.onnx")
    return tmp_path / "code"


def _args(code, function="mydata.loader:batches", *extra):
    return ["model=onnx", f"model.path={code.parent / 'model.onnx'}", "data=factory", f"data.function={function}",
            f"data.root={code}", "data.eval_samples=20", "quant=int8_dynamic", "eval.max_accuracy_drop=null",
            "bench.batch_sizes=[1]", "bench.iterations=5", "bench.max_seconds=0.5", *extra]


def _recipe(args):
    from qcompile.recipe.load import load_recipe

    return load_recipe("demo", args)


def _build(args, out, cache):
    from qcompile.builds import build

    result = build(_recipe(args), out, cache=cache)
    return result, {o.name: o for o in result.outcomes}


def test_builds_and_evaluates_with_its_labels(code, cache_dir, tmp_path):
    proc = run_cli("build", *_args(code, "mydata.loader:batches", "data.kwargs={n: 44, batch: 8}"),
                   "hydra.run.dir=out", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    data = next(s for s in rep["steps"] if s["name"] == "data")
    assert data["kind"] == "data.factory"
    assert rep["metrics"]["fp32"]["accuracy"] is not None, "labelled by the function"


@pytest.mark.parametrize("function", ["mydata.loader:whole", "mydata.loader:one_by_one", "mydata.loader:batches"])
def test_a_dict_a_batch_stream_or_samples_give_the_same_bytes(function, code, tmp_path):
    """Whatever form the function gives its samples in, the splits are the bytes ``save_samples`` writes for them."""
    from qcompile.cache import Cache
    from qcompile.graph import Plan
    from qcompile.plan import compile_plan
    from qcompile.run.scheduler import execute
    from qcompile.steps.arrays import SampleFile, save_samples
    from qcompile.steps.data import split

    cache = Cache(tmp_path / "cache")
    plan = compile_plan(_recipe(_args(code, function, "quant=int8_static", "quant.calibration.samples=10")))
    only = Plan()
    only.add(plan.node("data"))
    (o,) = execute(only, cache)
    assert o.result == {"samples": 40, "calib": 10, "eval": 20, "labels": True}
    whole = next(_load(code).batches(n=40, batch=40))
    eval_idx, _, calib_idx = split(40, 20, 10, 0)
    save_samples(tmp_path / "eval.npz", {"input": whole["input"][eval_idx]}, whole["labels"][eval_idx])
    save_samples(tmp_path / "calib.npz", {"input": whole["input"][calib_idx]})
    for name in ("eval", "calib"):
        got = _blob(cache, o.key, name)
        assert got.read_bytes() == (tmp_path / f"{name}.npz").read_bytes()
        assert np.array_equal(SampleFile(got).batch(3, 7)["input"], whole["input"][(eval_idx if name == "eval"
                                                                                    else calib_idx)[3:7]])


def _load(code):
    import importlib.util

    spec = importlib.util.spec_from_file_location("loader_for_test", code / "mydata" / "loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _blob(cache, key, name):
    """The stored file of output ``name`` of the action ``key``."""
    rec = next(r for _, r, _ in cache.iter_action_files() if r is not None and r.key == key)
    return cache.blobs.path(rec.outputs[name])


def test_splits_given_by_the_function(code, tmp_path):
    """data.splits=function: split='calib' and split='eval' give each split; only what is asked is read."""
    from qcompile.cache import Cache
    from qcompile.graph import Plan
    from qcompile.plan import compile_plan
    from qcompile.run.scheduler import execute
    from qcompile.steps.arrays import load_samples

    cache = Cache(tmp_path / "cache")
    plan = compile_plan(_recipe(_args(code, "mydata.loader:batches", "data.splits=function", "quant=int8_static",
                                      "quant.calibration.samples=12")))
    only = Plan()
    only.add(plan.node("data"))
    (o,) = execute(only, cache)
    loader = _load(code)
    for name, n in (("calib", 12), ("eval", 20)):
        x, y = load_samples(_blob(cache, o.key, name))
        want = next(loader.batches(n=40, batch=40, split=name))  # the first n of what the function gives
        assert np.array_equal(x["input"], want["input"][:n])
        assert (y is None) if name == "calib" else np.array_equal(y, want["labels"][:n])


def test_editing_the_module_reruns_data_and_what_follows_touching_does_not(code, tmp_path):
    from qcompile.cache import Cache

    cache = Cache(tmp_path / "cache")
    _, first = _build(_args(code), tmp_path / "b1", cache)
    assert first["data"].status == "ran"
    module = code / "mydata" / "loader.py"
    stat = module.stat()
    os.utime(module, (stat.st_atime + 5, stat.st_mtime + 5))  # touched: same bytes, newer mtime
    _, touched = _build(_args(code), tmp_path / "b2", cache)
    assert {o.status for o in touched.values()} == {"cached"}
    after_ctime_tick(module, tmp_path)
    module.write_text(LOADER.replace("np.random.default_rng([seed,", "np.random.default_rng([seed + 7,"))
    _, edited = _build(_args(code), tmp_path / "b3", cache)
    assert edited["data"].status == "ran" and edited["evaluate.fp32"].status == "ran"
    assert edited["evaluate.int8_dynamic"].status == "ran"
    _, kwargs = _build(_args(code, "mydata.loader:batches", "data.kwargs={seed: 3}"), tmp_path / "b4", cache)
    assert kwargs["data"].status == "ran", "the kwargs are in the key"


def test_more_data_than_the_memory_budget_is_streamed(code, cache_dir, tmp_path):
    """40 batches of 6 MB (250 MB in all) pass through the data step holding at most one, and calibration keeps to
    its budget: the step's peak memory stays below the data's size, and no earlier batch is alive when the function
    makes the next."""
    record = tmp_path / "alive.json"
    proc = run_cli("build", *_args(code, "mydata.loader:tracked", f"data.kwargs={{record: '{record}'}}",
                                   "quant=int8_static", "quant.calibration.samples=64",
                                   "quant.calibration.memory_mb=8"),
                   "hydra.run.dir=out", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(record.read_text())
    assert seen["batches"] == 40 and seen["most_alive"] <= 1, seen
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    data = next(s for s in rep["steps"] if s["name"] == "data")
    total_mb = 40 * 2000 * 28 * 28 * 4 / 2**20
    assert data["peak_mb"] is not None and data["peak_mb"] < total_mb * 0.8, (data, total_mb)


@pytest.mark.parametrize("function, extra, fragment", [
    ("mydata.missing:batches", (), "does not import"),
    ("mydata.loader:NOT_CALLABLE", (), "no callable 'NOT_CALLABLE'"),
    ("mydata.loader:broken", (), "raised RuntimeError: no data today"),
    ("mydata.loader:broken_midway", (), "raised ValueError at batch 1: the disk went away"),
    ("mydata.loader:wrong_name", (), "no array for 'input'"),
    ("mydata.loader:wrong_dtype", (), "input 'input' as int32"),
    ("mydata.loader:wrong_shape", (), "input 'input' of shape (8, 1, 14, 14)"),
    ("mydata.loader:float_labels", (), "one integer class index per sample"),
    ("mydata.loader:batches", ("data.labels=false",), "['labels'] in batch 0"),
    ("mydata.loader:batches", ("data.kwargs={n: 15}",), "gave 15 samples"),
    ("mydata.loader:batches", ("data.splits=function", "data.kwargs={n: 15}"), "(split='eval') gave 15 samples"),
    ("mydata.loader:whole", ("data.splits=function",), "unexpected keyword argument 'split'"),
])
def test_bad_functions_are_named(function, extra, fragment, code, tmp_path):
    """Exit-2 errors (BadInput naming data.function) with nothing written to the cache."""
    from qcompile.builds import build
    from qcompile.cache import Cache
    from qcompile.errors import BadInput

    cache = Cache(tmp_path / "cache")
    with pytest.raises(BadInput) as e:
        build(_recipe(_args(code, function, *extra)), tmp_path / "out", cache=cache)
    assert e.value.key == "data.function" and fragment in str(e.value), str(e.value)
    assert cache_entries(tmp_path / "cache") == []


def test_labels_of_any_shape_for_an_embedding_model(code, tmp_path):
    """Labels need not be class indices where the model is no classifier: stored with their own dtype and shape."""
    from qcompile.cache import Cache
    from qcompile.graph import Plan
    from qcompile.plan import compile_plan
    from qcompile.run.scheduler import execute
    from qcompile.steps.arrays import load_samples

    cache = Cache(tmp_path / "cache")
    plan = compile_plan(_recipe(_args(code, "mydata.loader:scored", "model.task=embedding")))
    only = Plan()
    only.add(plan.node("data"))
    (o,) = execute(only, cache)
    _, y = load_samples(_blob(cache, o.key, "eval"))
    assert y.shape == (20, 2, 3) and y.dtype == np.float32


def test_a_raising_function_through_the_cli(code, cache_dir, tmp_path):
    """One line naming data.function, exit 2, nothing cached (no failure record either); QCOMPILE_FULL_ERROR=1
    prints the user's traceback."""
    proc = run_cli("build", *_args(code, "mydata.loader:broken"), cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "data.function" in proc.stderr and "no data today" in proc.stderr and "Traceback" not in proc.stderr
    assert cache_entries(cache_dir) == [] and not (cache_dir / "failures").exists()
    traced = run_cli("build", *_args(code, "mydata.loader:broken"), cache=cache_dir, cwd=tmp_path,
                     extra_env={"QCOMPILE_FULL_ERROR": "1"})
    assert traced.returncode == 2 and 'loader.py", line' in traced.stderr, traced.stderr[-2000:]
