"""``target.kind=tensorrt``: TensorRT 10/11 on an NVIDIA GPU, from an explicitly quantized (QDQ) model.

TensorRT takes INT8 only as explicit Q/DQ: symmetric int8 activations and weights (zero points 0), per-channel
weights along the output channels, float bias. The target sets those quantization defaults, checks every
quantized variant against the rules (``check.tensorrt_qdq``, no TensorRT needed), then builds one engine per
variant with a strongly typed network. ``engine: false`` stops after the checked QDQ model, so a CPU-only build
machine makes the ONNX and the ``trtexec`` line that builds the engine on the device.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ...errors import BadInput
from ...graph import Node, Ref, StepParams
from ..registry import register
from ..section import Kind, UserFile

INSTALL = ("pip install 'qcompile[tensorrt]' (TensorRT 10/11 wheels: pip install --extra-index-url "
           "https://pypi.nvidia.com tensorrt)")
# Evaluated with the engine: the TensorRT runtime instead of ONNX Runtime.
ENGINE_STEPS = {"evaluate": "evaluate.tensorrt", "benchmark": "benchmark.tensorrt", "speedup": "speedup.tensorrt"}
# Without an engine the checked QDQ model is measured with ONNX Runtime on this CPU at its basic optimisation
# level: Q/DQ then run as written (the arithmetic TensorRT does). At "all" ORT fuses them into x86 int8 kernels
# that saturate on symmetric int8 activations (MNIST demo: 85.0% top-1 instead of 93.8%).
NVIDIA_GPUS = "/proc/driver/nvidia/gpus"  # one folder per GPU the NVIDIA driver sees
ORT_HOST = {"providers": ["CPUExecutionProvider"], "threads": 0, "level": "basic",
            "measured_on": "build host CPU with ONNX Runtime (no engine built): not TensorRT's accuracy or latency"}


def missing_tensorrt() -> str | None:
    """Why an engine cannot be built on this machine (TensorRT or an NVIDIA GPU missing), or None."""
    try:
        found = importlib.util.find_spec("tensorrt") is not None
    except ValueError:  # in sys.modules without a spec (a stand-in module)
        found = True
    if not found:
        return f"TensorRT is not installed: {INSTALL}"
    if not (shutil.which("nvidia-smi") or (os.path.isdir(NVIDIA_GPUS) and os.listdir(NVIDIA_GPUS))):
        return "no NVIDIA GPU found (nvidia-smi): TensorRT builds and runs engines on NVIDIA GPUs only"
    return None


@register("target")
class TensorRTTarget(Kind):
    """TensorRT on an NVIDIA GPU (strongly typed network from QDQ; TensorRT 10 or 11)."""

    kind: Literal["tensorrt"]
    engine: bool = Field(True, description="build the engine here (needs TensorRT and a GPU); false stops after "
                                           "the checked QDQ model and bundles the trtexec command for the device")
    strict: bool = Field(False, description="a Q/DQ rule violation is bad input (exit 2) instead of a warning")
    profile_batch: tuple[int, int, int] = Field(
        (1, 1, 32), description="the optimisation profile's batch range: min, opt, max")
    workspace_mb: int = Field(1024, gt=0, description="builder workspace memory pool limit, MiB")
    optimization_level: int = Field(3, ge=0, le=5, description="builder optimisation level (TensorRT's default 3)")
    timing_cache: UserFile | None = Field(
        None, description="a timing cache from an earlier build (artifacts/timing.cache) to start from")

    @model_validator(mode="after")
    def _batch_range(self) -> TensorRTTarget:
        lo, opt, hi = self.profile_batch
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"profile_batch must satisfy 1 <= min <= opt <= max, got {list(self.profile_batch)}")
        return self

    def declare(self, b) -> None:
        if self.engine:
            problem = missing_tensorrt()
            if problem:
                raise BadInput(f"target=tensorrt builds a TensorRT engine, but {problem}; or set target.engine=false "
                               "to stop at the checked QDQ model (any machine)", key="target.engine")
        b.provide("quant.defaults", {"activation_type": "int8", "activation_symmetric": True,
                                     "quantize_bias": False}, self)
        b.provide("runtime", {"engine": True, "profile_batch": list(self.profile_batch)} if self.engine else ORT_HOST,
                  self)
        if self.engine:
            b.provide("runtime.steps", ENGINE_STEPS, self)

    def compile(self, b) -> None:
        sig = b.need("signature", self)
        cache: Ref | None = None
        bundles = {}
        for v in b.variants:
            model = v.model
            if v.scheme.get("kind") != "fp32":
                check = b.add(Node(f"trt_check.{v.name}", "check.tensorrt_qdq", TrtCheckParams(target=self),
                                   inputs={"model": v.model},
                                   publish={"violations": f"trt_check.{v.name}.json"}))
                model = Ref(check.name, "model")
            files = {"model.onnx": model}
            if self.engine:
                # One timing cache threads through the engines: each build starts from the previous one's.
                params = EngineParams(target=self, inputs=[[t.name, *t.sample_shape] for t in sig.inputs],
                                      timing_cache=self.timing_cache if cache is None else None)
                node = b.add(Node(f"engine.{v.name}", "engine.tensorrt", params,
                                  inputs={"model": model, **({"timing_cache": cache} if cache else {})}))
                cache = Ref(node.name, "timing_cache")
                v.deploy = Ref(node.name, "engine")
                files["timing.cache"] = cache
                bundles[v.name] = {"model_file": "model.engine", "files": files}
            else:
                v.deploy = model if model is not v.model else None
                bundles[v.name] = {"model_file": "model.onnx", "files": {},
                                   "texts": {"trtexec.txt": trtexec_command(sig, self.profile_batch,
                                                                            self.workspace_mb)}}
        if cache is not None:
            b.plan.node(cache.node).publish["timing_cache"] = "timing.cache"
        b.provide("bundle.files", bundles, self)


class TrtCheckParams(StepParams):
    """Params of the ``check.tensorrt_qdq`` step: the target section (``strict`` decides a violation's fate)."""

    target: TensorRTTarget


class EngineParams(StepParams):
    """Params of the ``engine.tensorrt`` step: the target section, the model's inputs, and the timing cache file
    the first engine starts from (later ones start from the previous engine's)."""

    target: TensorRTTarget
    inputs: list[list[Any]]  # [name, *sample_shape] per network input (batch axis excluded)
    timing_cache: Path | None = None


def trtexec_command(sig, batch: tuple[int, int, int], workspace_mb: int) -> str:
    """The trtexec line (TensorRT 10/11) that builds the engine from the bundle's model.onnx on the device.

    No ``--int8``, ``--calib`` or ``--batch``: TensorRT 10 removed implicit batch and 11 removed calibrators;
    precision comes from the model's Q/DQ nodes (strongly typed)."""
    def shapes(n: int) -> str:
        return ",".join(f"{t.name}:" + "x".join(str(d) for d in (n, *t.sample_shape)) for t in sig.inputs)

    lo, opt, hi = batch
    return ("# Build the TensorRT engine on the target GPU (TensorRT 10 or 11). Strongly typed: the INT8 precision\n"
            "# comes from the model's Q/DQ nodes, so no --int8/--calib/--batch flags. --stronglyTyped is needed on\n"
            "# 10.x and is the default (a no-op) on 11.x. Keep timing.cache to make later builds faster.\n"
            f"trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped "
            f"--minShapes={shapes(lo)} --optShapes={shapes(opt)} --maxShapes={shapes(hi)} "
            f"--memPoolSize=workspace:{workspace_mb}M --timingCacheFile=timing.cache\n")
