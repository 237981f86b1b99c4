"""Reading a weight a block at a time, so a pass holds a block of it and not the whole.

A weight mapped from a file (`ir.ExternalTensor`) is unmapped after each block: the pages
read leave the process's resident memory, and the next block maps the file again.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dc_onnx.layers import WeightGroup

BLOCK_BYTES = 16 << 20


def _rows_per_block(row_bytes: int) -> int:
    return max(1, BLOCK_BYTES // max(row_bytes, 1))


def weight_size(group: WeightGroup) -> int:
    tensor = group.weight.const_value
    assert tensor is not None
    return int(np.prod(tensor.shape.numpy(), dtype=np.int64))


def flat_blocks(group: WeightGroup) -> Iterator[np.ndarray]:
    """The weight's elements in storage order, as copies of at most BLOCK_BYTES."""
    size = weight_size(group)
    step = _rows_per_block(4)
    for start in range(0, size, step):
        block = np.array(group.array().reshape(-1)[start : start + step])
        group.release()
        yield block


def stored_row_blocks(group: WeightGroup) -> Iterator[np.ndarray]:
    """Row blocks of the stored [out, in] matrix (docs/format.md), as C-contiguous copies."""
    rows, cols = group.stored_matrix().shape  # a view: nothing is copied here
    group.release()
    step = _rows_per_block(cols * 4)
    for start in range(0, rows, step):
        matrix = group.stored_matrix()
        block = np.ascontiguousarray(matrix[start : start + step])
        del matrix
        group.release()
        yield block
