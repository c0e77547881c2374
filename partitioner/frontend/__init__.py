"""ONNX in: read, fold constants, resolve shapes, cost each op, coarsen, decoder phases; synthetic graphs."""
