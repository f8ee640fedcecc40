"""A TensorRT engine built from a (checked) QDQ ONNX model with the TensorRT 10/11 Python API.

Strongly typed network (precision comes from the model's Q/DQ and casts: the FP16/INT8 builder flags are
deprecated in 10.12 and gone in 11), the ONNX parser, one optimisation profile over a batch range, and a timing
cache that is its own artifact: fed in from the previous engine of the build (or a user's file) and written out.

An engine only runs with the TensorRT version that built it, on GPUs of the compute capability it was built
for: both join the step's key (``host_facts``), so another GPU or TensorRT never reuses it.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..kinds.targets.tensorrt import EngineParams
from .base import Step, StepContext, register


@functools.lru_cache(maxsize=1)
def gpu_compute_capability() -> str | None:
    """The first GPU's compute capability ("9.0"), from nvidia-smi; None without an NVIDIA GPU."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=30).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def trt_facts() -> dict[str, Any]:
    """TensorRT's version and the GPU's compute capability: what an engine is only valid for."""
    import tensorrt as trt

    return {"tensorrt": trt.__version__, "compute_capability": gpu_compute_capability()}


def require_gpu() -> None:
    """Bad input when this machine has no NVIDIA GPU to build or run an engine on."""
    if gpu_compute_capability() is None:
        raise BadInput("a TensorRT engine needs an NVIDIA GPU and none was found (nvidia-smi); build with "
                       "target.engine=false and run the bundle's trtexec command on the device", key="target.engine")


def _dims(network_input, sample: list[Any], batch: int) -> tuple[int, ...]:
    """A concrete shape for ``network_input`` at ``batch``: the network's static dims, else the signature's."""
    dims = list(network_input.shape)
    shape = [batch] + [d if isinstance(d, int) else -1 for d in sample]
    out = [d if d >= 0 else shape[i] for i, d in enumerate(dims)]
    if any(d < 0 for d in out):
        raise BadInput(f"input {network_input.name!r} has a dynamic axis besides the batch ({dims}); TensorRT "
                       "needs its range: export the model with fixed sizes", key="model")
    return tuple(out)


def build_engine(trt, onnx_path: Path, p: EngineParams, cache_in: bytes) -> tuple[bytes, bytes, dict[str, Any]]:
    """(serialized engine, serialized timing cache, facts) built with the ``tensorrt`` module ``trt``.

    Follows the TensorRT 10/11 API: never hard-codes flag bits (STRONGLY_TYPED is bit 1 in 10.x and 0, ignored,
    in 11.x)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BadInput(f"TensorRT's ONNX parser rejected the model: {errors}", key="target")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, p.target.workspace_mb << 20)
    config.builder_optimization_level = p.target.optimization_level
    profile = builder.create_optimization_profile()
    samples = {row[0]: list(row[1:]) for row in p.inputs}
    lo, opt, hi = p.target.profile_batch
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        sample = samples.get(inp.name, [])
        profile.set_shape(inp.name, _dims(inp, sample, lo), _dims(inp, sample, opt), _dims(inp, sample, hi))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_in)
    config.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT's builder returned no engine (see the TensorRT log above)")
    timing = config.get_timing_cache().serialize()
    return bytes(plan), bytes(timing), {"inputs": network.num_inputs, "profile_batch": list(p.target.profile_batch)}


@register
class TrtEngineStep(Step):
    """Builds a TensorRT engine and its timing cache from an ONNX model on this machine's GPU."""

    kind = "engine.tensorrt"
    version = 2  # 2: params hold the target section
    Params = EngineParams
    inputs = ("model", "timing_cache")  # timing_cache: the previous engine's, when there is one
    outputs = {"engine": "model.engine", "timing_cache": "timing.cache"}
    libraries = ("tensorrt",)
    file_fields = ("timing_cache",)
    # The engine switch and strictness are other steps' business; the user's timing cache is keyed by content
    # (``timing_cache``, on the first engine only).
    unkeyed = ("target.engine", "target.strict", "target.timing_cache")
    # Tactic timing makes two builds differ in bytes even on the same GPU.
    deterministic = False

    def host_facts(self, params: EngineParams) -> dict[str, Any]:
        return trt_facts()

    def run(self, ctx: StepContext, p: EngineParams) -> dict[str, Any]:
        import tensorrt as trt

        require_gpu()
        source = ctx.inputs.get("timing_cache") or (Path(p.timing_cache) if p.timing_cache else None)
        cache_in = Path(source).read_bytes() if source else b""
        engine, timing, facts = build_engine(trt, Path(ctx.inputs["model"]), p, cache_in)
        ctx.out("engine").write_bytes(engine)
        ctx.out("timing_cache").write_bytes(timing)
        return {**facts, **trt_facts(), "engine_bytes": len(engine), "timing_cache_in": len(cache_in)}
