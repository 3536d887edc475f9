"""Weight-only int8 linear layers, for decoding on a CPU.

Why: decoding one token reads every decoder weight once, and on a CPU that read, not the
arithmetic, is the limit. Measured on the 2-core AVX512 machine, weights cold in cache as in a
real decode: a one-row 576x1536 matmul takes 262 us from float32 weights and 109 us from int8
(torch's `_weight_int8pack_mm`, bf16 activations); bfloat16 weights are no help there (312 us:
its one-row kernel is slow). Larger inputs (an image's finer scales, a prompt) use the float
weights, kept beside the int8 copy; de-quantizing at each call instead made an image 1.34x
slower. Where the float path takes over depends on its dtype (same measurement, 60 weights
cycled): float32 weights lose to int8 up to ~16 rows (726 vs 485 us at 16, 794 vs 1005 at 32);
bfloat16 weights (AMX) win from ~10 rows (295 vs 531 us at 10, 361 vs 1005 at 32), so with
them the int8 path stops at 8 rows. bf16 weights plus the int8 copy is the fastest pair on
this CPU: one-token text at int8 speed, an image's many-position forwards on AMX. Per-output-channel symmetric scales, as in torchao's int8
weight-only scheme. Not exact where the int8 kernel runs: one-token steps differ slightly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many rows the int8 kernel beats the float weights of that dtype (measured above).
SMALL_INPUT_ROWS = {torch.float32: 16, torch.bfloat16: 8}


class Int8Linear(nn.Module):
    """A linear layer with an int8 copy of its weight (one float scale per output row) for
    inputs of up to SMALL_INPUT_ROWS[its float dtype] rows, and its float weight for larger ones."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight  # the same tensor, not a copy
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
        self.register_buffer("weight_int8", (weight / scales[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))  # what the int8 kernel takes
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.small_rows = SMALL_INPUT_ROWS.get(linear.weight.dtype, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        if x.device.type == "cpu" and rows <= self.small_rows:
            flat = x.reshape(rows, self.in_features).to(torch.bfloat16)
            out = torch._weight_int8pack_mm(flat, self.weight_int8, self.scales)
            out = out.to(x.dtype).view(*x.shape[:-1], self.out_features)
            return out if self.bias is None else out + self.bias
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int8 copy for inputs of up to {self.small_rows} rows")


def quantize_linears_int8(module: nn.Module) -> int:
    """Replace every nn.Linear below `module` (the text head included) by an Int8Linear around
    the same float weight, in place, for generation; returns how many."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
            count += 1
        else:
            count += quantize_linears_int8(child)
    return count
