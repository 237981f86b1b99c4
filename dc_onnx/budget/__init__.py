"""The output-error budget: calibration inputs, per-layer sensitivity, allocation.

`dc-onnx compile` without explicit compression settings measures how much each weight's
compression changes the model's outputs (sensitivity), chooses per-layer settings that
minimise bytes under `--max-error` (allocation), and checks the compiled model end to end.
`dc-onnx analyze` prints and plots the sensitivity curves alone.
"""
