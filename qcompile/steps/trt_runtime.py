"""Evaluate and benchmark a TensorRT engine through the TensorRT runtime (TensorRT 10/11 tensor API).

``TrtSession`` answers the few calls evaluate and benchmark make of an ONNX Runtime session (``get_inputs``,
``get_outputs``, ``run``), so both steps keep one implementation of batching, metrics and timing. Device memory
comes from torch's CUDA allocator; a batch beyond the profile's maximum is run in slices.
Timed runs include the host-to-device and device-to-host copies (what an application pays per request).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from .base import register
from .benchmark import OrtBenchmarkStep
from .evaluate import OrtEvaluateStep
from .speedup import OrtSpeedupStep
from .trt_engine import require_gpu, trt_facts


class TrtSession:
    """An engine with one execution context, behind ONNX Runtime's session calls."""

    def __init__(self, engine_path, runtime: dict[str, Any]):
        import tensorrt as trt
        import torch

        require_gpu()
        self._trt, self._torch = trt, torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(open(engine_path, "rb").read())
        if self.engine is None:
            raise RuntimeError("TensorRT could not deserialize the engine (another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.max_batch = int(runtime.get("profile_batch", [1, 1, 1])[-1])
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_input[n]]
        self._outputs = [n for n in names if not is_input[n]]
        self._stream = torch.cuda.Stream()

    def _spec(self, name: str):
        shape = ["batch" if d < 0 else d for d in self.engine.get_tensor_shape(name)]
        return SimpleNamespace(name=name, shape=shape)

    def get_inputs(self):
        """Input names and shapes ("batch" for the dynamic axis), as ORT's NodeArg."""
        return [self._spec(n) for n in self._inputs]

    def get_outputs(self):
        """Output names and shapes."""
        return [self._spec(n) for n in self._outputs]

    def run(self, output_names, feed: dict[str, Any]) -> list[Any]:
        """Outputs for ``feed`` (numpy arrays, batch first), sliced into runs of at most the profile's batch."""
        import numpy as np

        n = len(next(iter(feed.values())))
        parts = [self._run_once({k: v[i:i + self.max_batch] for k, v in feed.items()})
                 for i in range(0, n, self.max_batch)]
        outs = [np.concatenate([p[j] for p in parts]) for j in range(len(self._outputs))]
        if output_names:
            return [outs[self._outputs.index(name)] for name in output_names]
        return outs

    def _run_once(self, feed: dict[str, Any]) -> list[Any]:
        torch, trt = self._torch, self._trt
        keep = []
        for name in self._inputs:
            t = torch.from_numpy(np_contiguous(feed[name])).cuda()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self._outputs:
            dtype = getattr(torch, trt.nptype(self.engine.get_tensor_dtype(name)).__name__)
            t = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            outs.append(t)
            self.context.set_tensor_address(name, t.data_ptr())
        if not self.context.execute_async_v3(self._stream.cuda_stream):
            raise RuntimeError("TensorRT's execute_async_v3 failed")
        self._stream.synchronize()
        return [t.cpu().numpy() for t in outs]


def np_contiguous(x):
    """``x`` as a C-contiguous numpy array (torch.from_numpy needs one)."""
    import numpy as np

    return np.ascontiguousarray(x)


class _OnTensorRT:
    """What the TensorRT evaluate and benchmark steps change in their ORT counterparts: the session and the key."""

    libraries = ("tensorrt", "torch", "numpy")

    def host_facts(self, params) -> dict[str, Any]:
        return trt_facts()

    def open_session(self, path, runtime: dict[str, Any], spinning: bool = True):
        return TrtSession(path, runtime)  # no thread pool to spin: TensorRT runs on the GPU


@register
class TrtEvaluateStep(_OnTensorRT, OrtEvaluateStep):
    """Evaluates an engine with the TensorRT runtime (same outputs and scores as ``evaluate.ort``)."""

    kind = "evaluate.tensorrt"


@register
class TrtBenchmarkStep(_OnTensorRT, OrtBenchmarkStep):
    """Times an engine with the TensorRT runtime, per batch size (copies to and from the GPU included)."""

    kind = "benchmark.tensorrt"


@register
class TrtSpeedupStep(_OnTensorRT, OrtSpeedupStep):
    """Times the FP32 and the variant's engines as a pair with the TensorRT runtime."""

    kind = "speedup.tensorrt"
