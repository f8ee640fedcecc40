"""The way in, for a person: one composition path (Hydra's public compose API) for build, plan and the library;
mistakes answered once, with the right message, in one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import qcompile
from qcompile import BadInput

from .conftest import REPO, run_cli
from .test_trust import bad, labels, tiny_recipes


@pytest.mark.parametrize("verb", ["build", "plan"])
def test_a_misspelt_override_gets_did_you_mean_first(verb, cache_dir, tmp_path):
    proc = run_cli(verb, "quant.per_chanel=false", cache=cache_dir, cwd=tmp_path)
    bad(proc, "quant.per_chanel: unknown key; did you mean 'per_channel'?", cache=cache_dir)
    assert "+" not in proc.stderr.split("did you mean")[0], "no advice to append the key with +"
    assert not (tmp_path / "qcompile-out").exists()


def test_the_library_gives_the_same_first_message():
    with pytest.raises(BadInput, match=r"^quant\.per_chanel: unknown key; did you mean 'per_channel'\?"):
        qcompile.load_recipe("demo", ["quant.per_chanel=false"])


def test_a_field_no_recipe_file_sets_can_be_overridden_and_deleted():
    """Group files hold only what differs from the defaults: any field is still an override away."""
    r = qcompile.load_recipe("demo", ["bench.max_seconds=3", "quant.calibration.num_bins=512"])
    assert r.bench.max_seconds == 3 and r.quant.calibration.num_bins == 512
    back = qcompile.load_recipe("demo", ["~quant.calibration"])
    assert back.quant.calibration == type(r.quant.calibration)()  # deleted: every option at its default
    with pytest.raises(BadInput, match=r"^quant\.calibration\.bins: unknown key"):
        qcompile.load_recipe("demo", ["~quant.calibration.bins"])


def test_an_unrelated_broken_file_in_the_recipe_folder_does_not_block_a_valid_recipe(cache_dir, tmp_path):
    args = tiny_recipes(tmp_path)
    folder = Path(args[1])
    (folder / "draft.yaml").write_text("name: [unfinished\n")
    (folder / "data" / "draft.yaml").write_bytes(b"\xff\xfe not text")
    plan = run_cli("plan", *args, cache=cache_dir, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr[-2000:]
    # ...while the broken file itself, once a recipe reads it, is named with its line.
    proc = run_cli("plan", *args, "data=draft", cache=cache_dir, cwd=tmp_path)
    bad(proc, "data/draft.yaml: not UTF-8", cache=cache_dir)
    proc = run_cli("plan", "--config-dir", str(folder), "--config-name", "draft", cache=cache_dir, cwd=tmp_path)
    bad(proc, "draft.yaml: invalid YAML at line 2", cache=cache_dir)


@pytest.mark.parametrize("override, key, fragment", [
    ("name=${nope}", "name", "Interpolation key 'nope' not found"),
    ("eval=[1,2]", "eval", "a section takes a mapping of keys"),
    ("quant=[int8_static]", "quant", "takes the name of one quant recipe"),
    ("model=resnet51", "model", "did you mean 'resnet50'?"),
    ("foo=1", "foo", "unknown key"),
])
def test_composition_errors_are_one_line_naming_the_key(override, key, fragment, cache_dir, tmp_path):
    proc = run_cli("build", override, cache=cache_dir, cwd=tmp_path)
    bad(proc, f"{key}: ", fragment, cache=cache_dir)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "qcompile-out").exists(), "nothing written, not even a run folder"


def test_a_list_where_a_section_belongs_in_a_recipe_file_names_the_key(cache_dir, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "mine.yaml").write_text("defaults: [demo, _self_]\nquant: [1, 2]\n")
    proc = run_cli("build", "--config-dir", str(tmp_path / "r"), "--config-name", "mine", cache=cache_dir,
                   cwd=tmp_path)
    bad(proc, "quant: a section takes a mapping of keys", "mine", cache=cache_dir)


def test_a_user_folder_is_searched_before_the_packaged_recipes(tmp_path):
    """A packaged recipe built with --config-dir picks up the user's group files first, as Hydra's own does."""
    (tmp_path / "r" / "quant").mkdir(parents=True)
    (tmp_path / "r" / "quant" / "int8_static.yaml").write_text("kind: static\nper_channel: false\n")
    r = qcompile.load_recipe("demo", [], tmp_path / "r")
    assert r.name == "demo" and r.quant.per_channel is False
    assert qcompile.load_recipe("demo").quant.per_channel is True


def test_build_help_lists_the_packaged_recipes_and_survives_a_closed_pipe(tmp_path):
    proc = run_cli("build", "--help", cache=tmp_path / "c", cwd=tmp_path)
    assert proc.returncode == 0
    recipes = sorted(p.stem for p in (REPO / "qcompile" / "recipes").glob("*.yaml") if p.stem != "base")
    assert f"packaged recipes (--config-name): {', '.join(recipes).replace('demo', 'demo (default)')}" \
        in proc.stdout.replace("\n", " ").replace("  ", " ")
    piped = subprocess.run(f"{sys.executable} -m qcompile build --help | head -1", shell=True, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert piped.stdout.startswith("usage: qcompile build") and "Traceback" not in piped.stderr, piped.stderr


def test_a_build_records_what_it_composed(cache_dir, tmp_path):
    args = tiny_recipes(tmp_path, y=labels())
    proc = run_cli("build", *args, "quant.per_channel=false", "hydra.run.dir=out", cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recorded = yaml.safe_load((tmp_path / "out" / "recipe.yaml").read_text())
    assert recorded["quant"]["per_channel"] is False and recorded["name"] == "tiny"
    assert qcompile.validate(recorded) == qcompile.load_recipe("tiny", ["quant.per_channel=false"], args[1])
    assert yaml.safe_load((tmp_path / "out" / "overrides.yaml").read_text()) == \
        ["quant.per_channel=false", "hydra.run.dir=out"]
    assert not (tmp_path / "out" / ".hydra").exists()


def test_no_module_reaches_into_hydra_internals():
    hits = [p for p in (REPO / "qcompile").rglob("*.py") if "_internal" in p.read_text()]
    assert hits == []


def test_a_sweep_refuses_a_misspelt_swept_key_before_any_job(cache_dir, tmp_path):
    proc = run_cli("build", "-m", "quant.per_chanel=true,false", "hydra.sweep.dir=sw", cache=cache_dir, cwd=tmp_path)
    bad(proc, "quant.per_chanel: unknown key; did you mean 'per_channel'?", cache=cache_dir)
    assert not (tmp_path / "sw").exists()


def test_a_sweep_that_starts_no_job_leaves_its_folder_free(cache_dir, tmp_path):
    """Also from a folder whose path holds characters of Hydra's override grammar (the sweep folder is quoted)."""
    work = tmp_path / "a,b=c"
    work.mkdir()
    proc = run_cli("build", "-m", "model=resnet51,mnist_cnn", cache=cache_dir, cwd=work)
    assert proc.returncode == 2 and "resnet51" in proc.stderr and "Sweeping over" not in proc.stderr, proc.stderr
    assert not (work / "qcompile-out").exists() or not any((work / "qcompile-out").rglob(".qcompile-build"))


def test_each_composition_resolves_against_itself():
    """${hydra:...} in a recipe reads the composition it belongs to, never the one before it."""
    first = qcompile.load_recipe("demo", ["name=${hydra:runtime.choices.model}"])
    other = qcompile.load_recipe("demo", ["model=resnet18", "data=synthetic", "name=${hydra:runtime.choices.model}"])
    again = qcompile.load_recipe("demo", ["name=${hydra:runtime.choices.model}"])
    assert (first.name, other.name, again.name) == ("mnist_cnn", "resnet18", "mnist_cnn")


def test_a_deletion_and_a_value_beneath_it_are_refused():
    with pytest.raises(BadInput, match=r"^quant\.calibration: ~quant\.calibration deletes what "):
        qcompile.load_recipe("demo", ["~quant.calibration", "quant.calibration.num_bins=512"])


def test_a_users_own_config_group_is_chosen_as_hydra_does(tmp_path):
    (tmp_path / "r" / "preset").mkdir(parents=True)
    (tmp_path / "r" / "preset" / "slow.yaml").write_text("# @package _global_\nbench: {iterations: 200}\n")
    (tmp_path / "r" / "preset" / "fast.yaml").write_text("# @package _global_\nbench: {iterations: 5}\n")
    (tmp_path / "r" / "mine.yaml").write_text("defaults: [demo, {preset: slow}, _self_]\n")
    assert qcompile.load_recipe("mine", [], tmp_path / "r").bench.iterations == 200
    assert qcompile.load_recipe("mine", ["preset=fast"], tmp_path / "r").bench.iterations == 5
