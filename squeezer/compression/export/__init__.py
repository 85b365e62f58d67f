"""ONNX export of compressed models: standard QDQ, int8 weights, verified in onnxruntime."""
