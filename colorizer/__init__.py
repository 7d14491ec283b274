"""colorizer: a reference-based anime sketch colorizer, with fused kernels and export.

See README.md. Subpackages: models, ops (functional ops and kernel backends), palette, sketch,
data, train, checkpoint, kernels (Triton), export (ONNX / TensorRT).
"""

__version__ = "0.1.0"
