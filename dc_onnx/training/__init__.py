"""Retraining through onnxruntime-training: the trainable graph, the loop, the losses."""
