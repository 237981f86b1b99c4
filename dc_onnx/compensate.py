"""Error-compensating assignment of a layer's weights (OBQ / GPTQ, SparseGPT's fixed mask).

For a layer y = W x whose inputs x have the second moment H = sum x x^T over calibration
inputs, the output error of replacing W by Q is tr((W - Q) H (W - Q)^T). Rounding every
weight to its nearest allowed value ignores H. Here the columns (input features) are
rounded in order, and each column's rounding error is spread over the columns not yet
rounded, in the proportions that cancel it best given H (OBQ, Frantar & Alistarh 2022;
its fast column-order form GPTQ, Frantar et al. 2022; the same sweep with "0 where pruned,
unchanged elsewhere" is SparseGPT, Frantar & Alistarh 2023, with a fixed mask). The allowed
values of each entry are given by the caller (a `ColumnRounder`): the shared codebook, a
row-scaled codebook, or the pruning mask alone, so the result stays on the codebook and
zeros stay where the mask put them.

H comes from `dc_onnx.budget.activations`; a layer whose rows fall into groups with
different inputs (a grouped convolution) has one H per group, shape [groups, cols, cols].
An H smaller than the columns means each row is that many equal segments that all multiply
the same inputs: a recurrent weight stored [directions, gates * hidden x inputs] has one
[inputs, inputs] H for the rows of every gate.
Everything here is plain numpy and deterministic for the same arguments, so the budget's
simulation and the prune / cluster passes produce the same arrays.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

# Dampening added to the diagonal of H, as a share of its mean diagonal (GPTQ's 1%): it
# keeps H invertible where inputs are collinear or dead, and bounds each correction.
DAMP = 0.01
# Columns handled per lazy block: inside a block the updates are rank-1, the rest of the
# matrix gets one matrix product per block (GPTQ's lazy batch updates).
BLOCK = 128

RoundColumn = Callable[[int, np.ndarray], np.ndarray]  # (column index, values) -> rounded
# The factor of H^-1 is the costly part (O(cols^3)) and one H serves every setting of its
# weight: the last few are kept, keyed by the H array itself (while it lives).
_FACTORS: OrderedDict[int, tuple[weakref.ref[np.ndarray], np.ndarray]] = OrderedDict()
_FACTORS_KEPT = 8


def inverse_cholesky(hessian: np.ndarray, damp: float | None = None) -> np.ndarray:
    """The upper triangular U with U^T U = (H + damp * mean(diag H) * I)^-1, in float64.
    Columns no input reaches (a zero diagonal) get a unit diagonal: their rounding error
    reaches no output, so nothing is spread from them."""
    damp = DAMP if damp is None else damp
    h = np.array(hessian, dtype=np.float64, copy=True)
    diagonal = np.diagonal(h).copy()
    dead = diagonal <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0
    mean = float(np.mean(np.diagonal(h)))
    h[np.diag_indices_from(h)] += damp * (mean if mean > 0 else 1.0)
    # With J the reversal, J H J = L L^T gives H^-1 = (J L^-T J)(J L^-1 J), and J L^-1 J
    # is upper triangular: one factorisation and one inverse.
    lower = np.linalg.cholesky(h[::-1, ::-1])
    return np.ascontiguousarray(np.linalg.inv(lower)[::-1, ::-1])


def _factor(hessian: np.ndarray) -> np.ndarray:
    """inverse_cholesky(hessian), from the cache when this very array was seen."""
    key = id(hessian)
    kept = _FACTORS.get(key)
    if kept is not None and kept[0]() is hessian:
        _FACTORS.move_to_end(key)
        return kept[1]
    u = inverse_cholesky(hessian)
    _FACTORS[key] = (weakref.ref(hessian), u)
    while len(_FACTORS) > _FACTORS_KEPT:
        _FACTORS.popitem(last=False)
    return u


def compensate(
    matrix: np.ndarray, hessian: np.ndarray, round_column: RoundColumn, block: int = BLOCK
) -> np.ndarray:
    """`matrix` ([rows, cols]) with every column replaced by `round_column` of it, in
    column order, each column's error spread over the later columns through H. Returns
    float64; every entry is what `round_column` returned for it."""
    w = np.array(matrix, dtype=np.float64, copy=True)
    rows, cols = w.shape
    if hessian.shape != (cols, cols):
        raise ValueError(f"H is {hessian.shape}, the matrix has {cols} columns")
    u = _factor(hessian)
    out = np.empty_like(w)
    for start in range(0, cols, block):
        end = min(start + block, cols)
        part = w[:, start:end].copy()
        errors = np.empty((rows, end - start))
        u_block = u[start:end, start:end]
        for i in range(end - start):
            column = part[:, i]
            rounded = round_column(start + i, column)
            out[:, start + i] = rounded
            error = (column - rounded) / u_block[i, i]
            part[:, i + 1 :] -= np.outer(error, u_block[i, i + 1 :])
            errors[:, i] = error
        w[:, end:] -= errors @ u[start:end, end:]
    return out


def segments_of(matrix_cols: int, hessian: np.ndarray) -> int:
    """How many equal column segments share `hessian` (1 when H covers the row), or 0
    when H fits no whole number of them."""
    cols = hessian.shape[-1]
    return matrix_cols // cols if cols and matrix_cols % cols == 0 else 0


def compensate_groups(
    matrix: np.ndarray, hessian: np.ndarray, rounder: ColumnRounder
) -> np.ndarray:
    """`compensate` for H of shape [cols, cols] or [groups, cols, cols]: with groups, the
    rows split into that many equal consecutive parts, each with its own H (a grouped
    convolution's output channels read only their group's inputs). An H of fewer columns
    than the matrix covers each of its equal segments (see the module docstring)."""
    segments = segments_of(matrix.shape[1], hessian)
    if segments > 1:
        rows = matrix.shape[0]
        view = matrix.reshape(rows * segments, -1)
        out = compensate_groups(view, hessian, rounder.segmented(segments))
        return out.reshape(matrix.shape)
    if hessian.ndim == 2:
        return compensate(matrix, hessian, rounder)
    groups = hessian.shape[0]
    rows = matrix.shape[0]
    if rows % groups:
        raise ValueError(f"{rows} rows do not split into {groups} groups")
    per = rows // groups
    out = np.empty(matrix.shape, np.float64)
    for g in range(groups):
        part = slice(g * per, (g + 1) * per)
        out[part] = compensate(matrix[part], hessian[g], rounder.rows(part))
    return out


class ColumnRounder:
    """Rounds a column of a [rows, cols] matrix to allowed values: zero where `mask` is
    False, and elsewhere the nearest of `grid` (sorted values; per row, times `scales`
    when given), or the value itself when `grid` is None (pruning alone)."""

    def __init__(
        self,
        mask: np.ndarray,
        grid: np.ndarray | None = None,
        scales: np.ndarray | None = None,
    ) -> None:
        self.mask = mask
        self.grid = None if grid is None else np.asarray(grid, np.float64)
        self._bounds = None if self.grid is None else (self.grid[1:] + self.grid[:-1]) / 2
        self.scales = None if scales is None else np.asarray(scales, np.float64)

    def rows(self, part: slice) -> ColumnRounder:
        """The same rounding for a band of rows."""
        scales = None if self.scales is None else self.scales[part]
        return ColumnRounder(self.mask[part], self.grid, scales)

    def segmented(self, segments: int) -> ColumnRounder:
        """The same rounding for the matrix with each row cut into `segments` rows."""
        rows = self.mask.shape[0]
        scales = None if self.scales is None else np.repeat(self.scales, segments)
        return ColumnRounder(self.mask.reshape(rows * segments, -1), self.grid, scales)

    def __call__(self, j: int, column: np.ndarray) -> np.ndarray:
        keep = self.mask[:, j]
        if self.grid is None or self._bounds is None:
            return np.where(keep, column, 0.0)
        # Products of two float32 values are exact in float64, so values * scales rounds
        # to float32 as the decoder's float32(scale * codebook[code]) does.
        normalised = column if self.scales is None else column / self.scales
        values = self.grid[np.searchsorted(self._bounds, normalised)]
        if self.scales is not None:
            values = values * self.scales
        return np.where(keep, values, 0.0)
