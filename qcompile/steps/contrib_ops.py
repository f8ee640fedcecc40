"""ORT's contrib operators (``com.microsoft``: MatMulNBits, Attention, BiasGelu...) in models that ORT's own tools
wrote without importing their domain."""

from __future__ import annotations


def import_contrib_domain(proto) -> None:
    """Add the ``com.microsoft`` opset import when nodes use the domain and the model does not import it: ORT loads
    such a model anyway, onnx's checker (and every other tool) refuses it."""
    import onnx

    if any(n.domain == "com.microsoft" for n in proto.graph.node) and \
            not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
