"""The executable split: one ONNX model per chiplet (and per piece of a split op), verified in onnxruntime."""
