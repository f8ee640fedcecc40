# Benchmark harness, not part of qcompile: emulate a 2-core machine on a bigger one. With the process
# pinned to two CPUs (taskset), make every ONNX Runtime session that leaves intra_op_num_threads at 0 use
# QC_ORT_THREADS threads, patched in after onnxruntime is imported so processes that never import it pay nothing.
#
#   QC_ORT_THREADS=2 PYTHONPATH=$PWD/benchmarks/two_cores taskset -c 0,1 python benchmarks/olive_job.py --parts job
#
# (It takes the place of any other sitecustomize module on the path.)
#
# (ORT's calibrators and quantize_static create their own sessions with default options: this reaches them too.)
import importlib.abc
import os
import sys

THREADS = int(os.environ.get("QC_ORT_THREADS", "0"))


class _Patch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "onnxruntime" or not THREADS:
            return None
        sys.meta_path.remove(self)
        import importlib.util

        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            base = module.InferenceSession

            class Session(base):
                def __init__(self, path_or_bytes, sess_options=None, *a, **kw):
                    so = sess_options or module.SessionOptions()
                    if so.intra_op_num_threads == 0:
                        so.intra_op_num_threads = THREADS
                    super().__init__(path_or_bytes, so, *a, **kw)

            module.InferenceSession = Session
            import onnxruntime.capi.onnxruntime_inference_collection as c

            c.InferenceSession = Session

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _Patch())
