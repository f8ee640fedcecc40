"""torchvision weights named as torchvision names them (issue #9): read from the local torch hub cache (TORCH_HOME),
never downloaded; their transform and class names become the model's contract and labels."""

from __future__ import annotations

import pytest

from .conftest import cache_entries, run_cli

FILE = "resnet18-f37072fd.pth"  # the file name torchvision gives resnet18's IMAGENET1K_V1 weights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A TORCH_HOME whose hub cache holds a resnet18 state_dict (random values) under torchvision's file name."""
    import torch
    import torchvision

    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(123)
    torch.save(torchvision.models.resnet18().state_dict(), home / "hub" / "checkpoints" / FILE)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _args(weights):
    return ["model=resnet18", f"model.weights={weights}", "data=synthetic", "quant=int8_dynamic",
            "eval.max_accuracy_drop=null"]


def _plan(args):
    from qcompile.plan import compile_plan
    from qcompile.recipe.load import load_recipe

    return compile_plan(load_recipe("demo", args))


@pytest.mark.parametrize("weights", ["IMAGENET1K_V1", "DEFAULT"])
def test_named_weights_load_from_the_torch_hub_cache(weights, torch_home, tmp_path):
    """The model step loads exactly the tensors of the hub file; the weights' transform and class names become the
    model's preprocessing contract (preprocess.json) and labels."""
    import torch

    from qcompile.steps.base import StepContext, get_step

    plan = _plan(_args(weights))
    node = plan.node("model")
    assert node.params.weights_file == torch_home / "hub" / "checkpoints" / FILE
    assert node.params.pretrained == "IMAGENET1K_V1"
    ctx = StepContext(inputs={}, workdir=tmp_path, outputs={"module": "model.pt"})
    result = get_step(node.kind).run(ctx, node.params)
    assert result["pretrained"] == "IMAGENET1K_V1"
    saved = torch.load(tmp_path / "model.pt", weights_only=False).state_dict()
    expected = torch.load(torch_home / "hub" / "checkpoints" / FILE, weights_only=True)
    assert saved.keys() == expected.keys() and all(torch.equal(saved[k], expected[k]) for k in expected)

    package = plan.node("package").params
    assert len(package.labels) == 1000 and package.labels[0] == "tench" and package.labels[281] == "tabby"
    contract = package.normalize
    assert (contract["resize"], contract["crop"], contract["interpolation"]) == (256, [224, 224], "bilinear")
    assert contract["normalize"]["mean"] == [0.485, 0.456, 0.406]


def test_editing_the_hub_file_changes_the_model_key(torch_home):
    """The hub file's content is in the key: replacing it rebuilds the model."""
    import torch

    from qcompile.cache import Cache
    from qcompile.run.scheduler import peek

    cache = Cache(torch_home.parent / "cache")
    key = next(o.key for o in peek(_plan(_args("IMAGENET1K_V1")), cache) if o.name == "model")
    path = torch_home / "hub" / "checkpoints" / FILE
    state = torch.load(path, weights_only=True)
    state["fc.bias"] += 1
    torch.save(state, path)
    assert next(o.key for o in peek(_plan(_args("IMAGENET1K_V1")), cache) if o.name == "model") != key


def test_weights_file_absent_is_exit_2_naming_file_and_folder(cache_dir, tmp_path):
    """No file in the hub cache: exit 2 naming the file, where it goes and how to get it; nothing downloaded."""
    home = tmp_path / "empty_home"
    proc = run_cli("build", *_args("IMAGENET1K_V1"), cache=cache_dir, cwd=tmp_path,
                   extra_env={"TORCH_HOME": str(home)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = " ".join(proc.stderr.split())
    assert "model.weights" in err and FILE in err and str(home / "hub" / "checkpoints") in err
    assert "get_state_dict" in err and "Traceback" not in proc.stderr
    assert not home.exists() and cache_entries(cache_dir) == []


def test_unknown_weights_name_lists_the_valid_ones(torch_home):
    """resnet18 has no IMAGENET1K_V2 in torchvision: the message lists what it has."""
    from qcompile.errors import BadInput

    with pytest.raises(BadInput, match=r"model.weights: 'IMAGENET1K_V2' is not a weights name of resnet18 "
                                       r"\(valid: IMAGENET1K_V1, DEFAULT\)"):
        _plan(_args("IMAGENET1K_V2"))


def test_static_weights_table_matches_installed_torchvision():
    """Planning never imports torchvision; the table it reads instead must equal the installed release."""
    from torchvision.models import get_model_weights

    from qcompile.kinds.model._torchvision_names import TORCHVISION_CLASSIFIERS
    from qcompile.kinds.model._torchvision_weights import DEFAULTS, IMAGENET_CATEGORIES, WEIGHTS

    seen = {}
    for name in TORCHVISION_CLASSIFIERS:
        enum = get_model_weights(name)
        assert DEFAULTS[name] == enum.DEFAULT.name
        for w in enum:
            if w.meta.get("categories") is None:
                continue  # feature extractors: no classifier head
            t = w.transforms()
            seen[(name, w.name)] = (w.url.rsplit("/", 1)[1], t.resize_size[0], t.crop_size[0], t.interpolation.value,
                                    tuple(t.mean), tuple(t.std))
            assert tuple(w.meta["categories"]) == IMAGENET_CATEGORIES
    assert seen == WEIGHTS
