"""Bytes of the dense form (`index_bits` 0) against the relative-index form, by density.

Prints, for codebooks of 15 to 255 equally likely codes at random positions, the dense
form's bytes over those of the relative-index form at its best index bits (streams plus
code lengths): where the ratio is under 1 the compiler writes the dense form
(`dc_onnx.codecs.smaller_form`). The figures in docs/format.md come from this script.

    python models/dense_form_sizes.py
"""

from __future__ import annotations

import numpy as np

from dc_onnx.codecs import EncodedWeight, encode_weight

DENSITIES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def size(encoded: EncodedWeight) -> int:
    return len(encoded.codes) + len(encoded.gaps) + int(encoded.code_lengths.size)


def main() -> None:
    rng = np.random.default_rng(0)
    print("codes | " + " | ".join(f"{d:.0%} non-zero" for d in DENSITIES))
    for k in (15, 31, 63, 255):
        codebook = np.concatenate([[0.0], np.linspace(-1, 1, k)]).astype(np.float32)
        ratios = []
        for density in DENSITIES:
            codes = rng.integers(1, k + 1, size=(256, 1024)).astype(np.uint8)
            codes[rng.random(codes.shape) >= density] = 0
            dense = size(encode_weight(codes, codebook, 0))
            sparse = min(size(encode_weight(codes, codebook, ib)) for ib in range(1, 9))
            ratios.append(dense / sparse)
        print(f"{k} | " + " | ".join(f"{r:.3f}" for r in ratios))


if __name__ == "__main__":
    main()
