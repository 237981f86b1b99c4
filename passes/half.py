"""half: store the weights the error budget chose float16 for (dc_onnx.budget.candidates,
FLOAT16) as float16 initializers, each read through a Cast back to float32.

A weight that 8-bit codes would change too much for the budget used to stay float32
whole; float16 halves it for an error near float16's rounding (2^-11 of each value). The
result is standard ONNX: ORT folds the Cast at session creation, so a Run reads the same
float32 values the allocation simulated, and any ONNX runtime loads it. A float16 weight
of 16 MiB or more is external data in the `.data` file (dc_onnx/scratch.py, writer.py).
The allocate pass marks such a weight `keep` as well, so no other pass takes it for a
layer or a storage weight; the float16 initializer keeps both marks until the lower pass
clears them.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from dc_onnx import scratch
from dc_onnx.layers import ANNOTATION_PREFIX, add_initializer, annotate
from dc_onnx.pipeline import CompilerPass


class HalfPass(CompilerPass):
    name = "half"

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        chosen = [
            value
            for value in graph.initializers.values()
            if value.metadata_props.get(ANNOTATION_PREFIX + "float16")
        ]
        casts = []
        for value in chosen:
            name = str(value.name)
            tensor = value.const_value
            assert tensor is not None
            halved = tensor.numpy().astype(np.float16)
            scratch.discard(tensor)
            graph.initializers.pop(name)
            half = add_initializer(graph, name, halved)
            # 16 MiB or more to a scratch file, which the writer copies into the `.data`
            # file as it does a weight left dense: a large model stays under protobuf's
            # 2 GiB, and memory holds one weight at a time
            half.const_value = scratch.as_tensor(halved, name)
            annotate(half, keep=1, float16=1)
            cast = ir.node("Cast", [half], {"to": int(ir.DataType.FLOAT)}, name=f"{name}.float32")
            out = cast.outputs[0]
            out.name, out.type, out.shape = f"{name}.float32", value.type, value.shape
            value.replace_all_uses_with(out, replace_graph_outputs=True)
            casts.append(cast)
        if casts:
            graph.insert_before(graph[0], casts)
        self.stats = {"float16": [str(v.name) for v in chosen]}
        return ir.passes.PassResult(model, bool(casts))
