"""Where ResNet-50's INT8 time goes on ONNX Runtime CPU, and which knobs move the INT8/FP32 ratio.

Standalone (torch, torchvision, onnx, onnxruntime; no qcompile install) so it runs on any machine with those:
it exports a seeded random-init ResNet-50, quantizes it as qcompile's default recipe does (QDQ, per-channel
int8 weights, uint8 activations, MinMax, every op type), prints which operators remain float after ORT's
fusions, and times batch 1 with one session alive at a time, for the variants below.

    python benchmarks/int8_ceiling.py [THREADS]        # default 2 intra-op threads
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import time


def main() -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    import torchvision
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    flags = ""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    model_name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                       if line.startswith("model name")), "?")
    isa = [f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx512f", "avx2") if f in flags.split()]
    print(f"cpu: {model_name}; {os.cpu_count()} cores; {' '.join(isa)}; onnxruntime {ort.__version__}; "
          f"{threads} threads", flush=True)
    work = tempfile.mkdtemp(prefix="int8-ceiling-")
    torch.manual_seed(0)
    net = torchvision.models.resnet50().eval()
    fp32 = f"{work}/resnet50.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 224, 224),), fp32, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}}, opset_version=17, dynamo=False)
    prep = f"{work}/prep.onnx"
    quant_pre_process(fp32, prep)
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((32, 3, 224, 224), dtype=np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {"input": b}

    def quantize(path: str, **kw) -> str:
        args = dict(quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
        args.update(kw)
        quantize_static(prep, path, Reader(), **args)
        return path

    first_conv = next(n.name for n in onnx.load(prep).graph.node if n.op_type == "Conv")
    last_gemm = [n.name for n in onnx.load(prep).graph.node if n.op_type in ("Gemm", "MatMul")]
    models = {
        "fp32": fp32,
        "int8 default": quantize(f"{work}/int8.onnx"),
        "int8, first conv float": quantize(f"{work}/int8_first.onnx", nodes_to_exclude=[first_conv]),
        "int8, classifier float": quantize(f"{work}/int8_fc.onnx", nodes_to_exclude=last_gemm),
        "int8, per-tensor weights": quantize(f"{work}/int8_pt.onnx", per_channel=False),
        "int8, int8 activations": quantize(f"{work}/int8_s8.onnx", activation_type=QuantType.QInt8),
    }

    so = ort.SessionOptions()
    so.optimized_model_filepath = f"{work}/int8.opt.onnx"
    ort.InferenceSession(models["int8 default"], so, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(f"{work}/int8.opt.onnx").graph.node)
    print("int8 default after ORT's fusions:", dict(ops.most_common()), flush=True)

    x = calib[:1]

    def p50(path: str, spinning: bool = True, n_threads: int = threads) -> float:
        so = ort.SessionOptions()
        so.intra_op_num_threads = n_threads
        if not spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(20):
            s.run(None, {"input": x})
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            s.run(None, {"input": x})
            times.append(time.perf_counter() - t0)
        del s
        return float(np.median(times) * 1000)

    base = p50(fp32)
    print(f"\n{'variant':<34} {'p50 ms':>8} {'fp32/int8':>10}")
    print(f"{'fp32':<34} {base:8.2f} {1:10.2f}")
    for name, path in models.items():
        if name != "fp32":
            t = p50(path)
            print(f"{name:<34} {t:8.2f} {base / t:10.2f}", flush=True)
    # Twice each, alternating, so a drift of the machine shows up as disagreement between repeats.
    for label, kw in (("spinning off", {"spinning": False}), ("spinning on", {}), ("spinning off", {"spinning": False}),
                      ("spinning on", {}), ("1 thread", {"n_threads": 1}), ("4 threads", {"n_threads": 4})):
        f, q = p50(fp32, **kw), p50(models["int8 default"], **kw)
        print(f"{'int8 default, ' + label:<34} {q:8.2f} {f / q:10.2f}   (fp32 {f:.2f} ms)", flush=True)


if __name__ == "__main__":
    main()
