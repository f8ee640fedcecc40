"""Install footprint: ``pip install .`` without extras against ``pip install '.[torch]'``, each into a fresh virtual
environment (size on disk and install time), then what the plain install can do: an ONNX model with a folder of
images plans and builds, and a torch model kind exits 2 naming the extra.

    python benchmarks/install_footprint.py [--keep DIR]

Install times depend on where pip finds the wheels (a local wheel folder or cache measures unpacking and linking,
not the network); the script prints pip's download cache size and any PIP_FIND_LINKS. The ONNX model is a small
convolutional classifier written with onnx.helper and the images are PNG files written with Pillow: random, for a
build that runs end to end, not for an accuracy claim.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MAKE_ASSETS = """
import sys
from pathlib import Path
import numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
out = Path(sys.argv[1])
rng = np.random.default_rng(0)
w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.2, "w")
fc = numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "fc")
nodes = [helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"], name="relu"),
         helper.make_node("GlobalAveragePool", ["r"], ["g"], name="pool"),
         helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
         helper.make_node("MatMul", ["f", "fc"], ["logits"], name="fc")]
x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])
y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])
graph = helper.make_graph(nodes, "tiny", [x], [y], [w, fc])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(out / "net.onnx"))
for c in range(4):
    (out / "photos" / str(c)).mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(out / "photos" / str(c) / f"{i}.png")
"""


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _install(venv: Path, spec: str) -> float:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    t0 = time.perf_counter()
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", spec], check=True)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", help="a folder to keep the environments in (default: a temporary one)")
    a = p.parse_args()
    cache = subprocess.run([sys.executable, "-m", "pip", "cache", "dir"], capture_output=True, text=True).stdout
    cache = (cache.strip().splitlines() or [""])[-1]
    cache_mb = _du(Path(cache)) / 2**20 if cache and Path(cache).is_dir() else 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(a.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = []
        for label, spec in (("pip install .", str(REPO)), ("pip install '.[torch]'", f"{REPO}[torch]")):
            venv = work / ("plain" if "torch" not in spec else "torch")
            seconds = _install(venv, spec)
            rows.append((label, seconds, _du(venv) / 2**20))
        print(f"pip's download cache: {cache_mb:.0f} MB before the installs; PIP_FIND_LINKS: "
              f"{os.environ.get('PIP_FIND_LINKS') or 'not set'}")
        print(f"{'install':<26} {'seconds':>8} {'venv MB':>9}")
        for label, seconds, mb in rows:
            print(f"{label:<26} {seconds:8.1f} {mb:9.0f}")
        print(f"[torch] / plain: {rows[1][2] / rows[0][2]:.1f}x the disk, {rows[1][1] / rows[0][1]:.1f}x the time")

        plain = work / "plain" / "bin"
        subprocess.run([str(plain / "python"), "-c", MAKE_ASSETS, str(work)], check=True)
        env = {**os.environ, "QCOMPILE_CACHE_DIR": str(work / "cache")}
        build = [str(plain / "qcompile"), "build", "name=onnx_images", "model=onnx", f"model.path={work}/net.onnx",
                 "model.normalize={scale: 0.00392156862745098, mean: [0.5], std: [0.25]}",
                 "data=image_folder", f"data.path={work}/photos", "data.eval_samples=24",
                 "quant.calibration.samples=24", "eval.max_accuracy_drop=null", "bench.batch_sizes=[1]",
                 "bench.max_seconds=1", f"hydra.run.dir={work}/out"]
        proc = subprocess.run(build, capture_output=True, text=True, env=env, cwd=work)
        torch_found = subprocess.run([str(plain / "python"), "-c", "import torch"], capture_output=True).returncode == 0
        print(f"\nwithout the extra (torch importable: {torch_found}):")
        print(f"  ONNX model + image folder build: exit {proc.returncode}; "
              f"{proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]}")
        demo = subprocess.run([str(plain / "qcompile"), "build", f"hydra.run.dir={work}/demo"], capture_output=True,
                              text=True, env=env, cwd=work)
        print(f"  the demo (model.kind=mnist_cnn): exit {demo.returncode}; {demo.stderr.strip()[-300:]}")
        r18 = subprocess.run([str(plain / "qcompile"), "build", "model=resnet18", "data=synthetic",
                              f"hydra.run.dir={work}/r18"], capture_output=True, text=True, env=env, cwd=work)
        print(f"  model=resnet18 data=synthetic: exit {r18.returncode}; {r18.stderr.strip()[-300:]}")
        return 0 if proc.returncode == 0 and demo.returncode == 2 and r18.returncode == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
