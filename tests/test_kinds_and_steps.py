"""Kinds and steps: found the same way (no list), named apart, params checked at plan time, one build(arch)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _fresh(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return proc.stdout.strip()


def test_steps_are_found_without_importing_kinds_first_and_import_no_heavy_library():
    """A lockfile is replayed without a recipe schema: every step, the digits one included, is found by importing
    qcompile.steps' modules; importing them loads neither torch, numpy nor onnx."""
    out = _fresh("import sys\nfrom qcompile.steps.base import get_step\n"
                 "print(get_step('data.digits').kind, get_step('data.npy_folder').kind,"
                 " [m for m in ('torch', 'numpy', 'onnx', 'onnxruntime') if m in sys.modules])")
    assert out == "data.digits data.npy_folder []"


def test_no_class_name_is_both_a_kind_and_a_step():
    from qcompile.kinds import GROUPS, kinds
    from qcompile.steps import load_all
    from qcompile.steps.base import _REGISTRY

    load_all()
    sections = {cls.__name__ for group in GROUPS for cls in kinds(group).values()}
    steps = {cls.__name__ for cls in _REGISTRY.values() if cls.__module__.startswith("qcompile.")}  # not tests' own
    assert not sections & steps
    assert all(name.endswith("Step") for name in steps) and not any(name.endswith("Step") for name in sections)


def test_a_node_must_hold_its_steps_params():
    import qcompile
    from qcompile.graph import Node, StepParams
    from qcompile.plan import _check_params

    plan = qcompile.compile_plan(qcompile.load_recipe("demo"))
    plan.add(Node("odd", "data.mnist", StepParams()))
    with pytest.raises(RuntimeError, match="data.mnist takes MnistParams, got StepParams"):
        _check_params(plan)


def test_step_params_embed_the_section_objects():
    """Options reach the steps as the sections that declare them: the very recipe objects, not copies."""
    import qcompile

    recipe = qcompile.load_recipe("demo")
    plan = qcompile.compile_plan(recipe)
    assert plan.node("data").params.data is recipe.data
    assert plan.node("quantize").params.quant is recipe.quant
    assert plan.node("train").params is recipe.model.train
    assert plan.node("export").params.export is recipe.model.export
    assert plan.node("evaluate.fp32").params.eval is recipe.eval


def test_arch_union_builds_and_the_stored_module_loads(tmp_path):
    import torch
    from pydantic import TypeAdapter

    from qcompile.models import build, load_module, save_module
    from qcompile.models.arch import Arch, MnistCnnArch, TorchvisionArch

    arch = TypeAdapter(Arch).validate_python({"family": "torchvision", "name": "resnet18", "num_classes": 4})
    assert isinstance(arch, TorchvisionArch) and build(arch).fc.out_features == 4
    torch.manual_seed(0)
    cnn = build(MnistCnnArch()).eval()
    save_module(cnn, tmp_path / "a.pt")
    save_module(cnn, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes(), "equal modules, equal bytes"
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(load_module(MnistCnnArch(), tmp_path / "a.pt")(x), cnn(x))
