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
this CPU: one-token text at int8 speed, an image's many-position forwards on AMX.
Per-output-channel symmetric scales, as in torchao's int8 weight-only scheme. Not exact where
the int8 kernel runs: one-token steps differ slightly.

bfloat16 weights are also kept pre-packed in oneDNN's blocked layout for the larger inputs:
`F.linear` re-packs its weight at every call, and an image's scale forwards make ~1,300 such
calls. Same kernel, so the outputs are the same bits (tested); measured on 30 cycled 576x1536
weights: 306 -> 252 us at 18 rows, 489 -> 358 at 72, 769 -> 520 at 128. It costs a second
bf16 copy of the weights (~270 MB for the default backbone). Packed bf16 also beats the int8
kernel from 6 rows on (whose time jumps past 4 rows: 3072x576 at 4/6/8 rows 260/629/565 us
against 365/400/373 packed), so with packing the int8 path stops at 4 rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Up to this many rows the int8 kernel beats the float weights of that dtype (measured above).
SMALL_INPUT_ROWS = {torch.float32: 16, torch.bfloat16: 8}
# The row count oneDNN packs bf16 weights for (a hint: any input size runs on them).
PACKING_ROWS_HINT = 64
# Up to this many rows the int8 kernel beats the packed bf16 weights (measured above).
PACKED_SMALL_INPUT_ROWS = 4


def _as_bf16(x: torch.Tensor) -> torch.Tensor:
    """`x` in bf16 (what the int8 kernel takes); a bf16 `x` skips the `.to` call, which costs a
    dispatch even when it has nothing to do (~240 per decoded token)."""
    return x if x.dtype is torch.bfloat16 else x.to(torch.bfloat16)


def packs_bf16(weight: torch.Tensor) -> bool:
    """Whether `weight` gets a pre-packed oneDNN copy (bf16 on a CPU whose oneDNN runs bf16)."""
    return (weight.dtype == torch.bfloat16 and weight.device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _packed_copy(weight: torch.Tensor) -> torch.Tensor | None:
    """An opaque oneDNN copy of `weight` where packs_bf16 holds, else None. Opaque: no storage,
    so it is never saved, copied or pickled; the objects holding one rebuild it instead."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKING_ROWS_HINT) if packs_bf16(weight) else None


def _runs_packed(packed: torch.Tensor | None, x: torch.Tensor) -> bool:
    """The packed kernel has no gradients: it serves bf16 inputs on the CPU with autograd off."""
    return packed is not None and x.dtype is torch.bfloat16 and x.is_cpu and not torch.is_grad_enabled()


class Int8Linear(nn.Module):
    """A linear layer with an int8 copy of its weight (one float scale per output row) for
    inputs of up to SMALL_INPUT_ROWS[its float dtype] rows, and its float weight for larger ones.
    A bf16 weight on a CPU whose oneDNN runs bf16 (packs_bf16) also gets a pre-packed copy, which
    larger inputs use while autograd is off, and then the int8 path stops at
    PACKED_SMALL_INPUT_ROWS. For generation: the copies are made once, so they do not follow
    later changes to the weight, and the int8 path takes no gradients."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight  # the same tensor, not a copy
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
        self.register_buffer("weight_int8", (weight / scales[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(torch.bfloat16))  # what the int8 kernel takes
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = _packed_copy(linear.weight)  # not a buffer: never saved
        self.small_rows = (PACKED_SMALL_INPUT_ROWS if self.packed is not None
                           else SMALL_INPUT_ROWS.get(linear.weight.dtype, 16))
        self.small_numel = self.small_rows * self.in_features

    def __getstate__(self) -> dict:
        # Deep copies and pickles take the weight and rebuild the packed copy from it.
        return {**self.__dict__, "packed": self.packed is not None}

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self.packed = _packed_copy(self.weight) if self.packed else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Called ~200 times per decoded token: the checks stay on cheap tensor attributes.
        if x.is_cpu and x.numel() <= self.small_numel:
            out = torch._weight_int8pack_mm(_as_bf16(x.reshape(-1, self.in_features)), self.weight_int8, self.scales)
            out = out.view(*x.shape[:-1], self.out_features)
            out = out if x.dtype is torch.bfloat16 else out.to(x.dtype)
            return out if self.bias is None else out + self.bias
        if _runs_packed(self.packed, x):
            out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, self.in_features), self.packed, self.bias,
                                                     "none", [], "")
            return out.view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        packed = ", oneDNN-packed bf16 for larger ones" if self.packed is not None else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int8 copy for inputs of up to {self.small_rows} rows{packed}")


class FusedInt8:
    """Several Int8Linear layers that read the same input (q, k, v; gate, up) as one matmul.

    Why: a decoded token makes ~200 small int8 calls, and each call has a fixed cost besides
    its weight bytes; one call over the stacked weights replaces three (or two). The members'
    int8 weights and scales become views into the stacked ones, so no memory is added and the
    outputs are theirs exactly (every output row is the same dot product with the same scale).
    Larger bf16 inputs run on one oneDNN-packed copy of the stacked weights, which replaces the
    members' packed copies (same bits; 30 layers of q/k/v and gate/up at 72 rows: 31.4 -> 25.4
    ms). Called one by one, the members then run their plain bf16 weights above
    PACKED_SMALL_INPUT_ROWS (slower, but the same bits: the backbone's own forward and the lean
    path in vlm/lean_decoder.py agree exactly).
    Not a module: the layers keep their own names and state-dict keys.
    """

    def __init__(self, layers: list[Int8Linear]):
        self.sizes = [layer.out_features for layer in layers]
        self.query_heads = self.rotated_heads = 0  # set for attention (q, k, v) by quantize_linears_int8
        self.small_numel = min(layer.small_numel for layer in layers)
        self.in_features = layers[0].in_features
        self.weight_int8 = torch.cat([layer.weight_int8 for layer in layers])
        self.scales = torch.cat([layer.scales for layer in layers])
        start = 0
        for layer, size in zip(layers, self.sizes):
            layer.weight_int8 = self.weight_int8[start:start + size]
            layer.scales = self.scales[start:start + size]
            start += size
        self.members = layers
        self.packed = None
        if all(layer.packed is not None for layer in layers):
            self.packed = self._stacked_packed_copy()
            for layer in layers:
                layer.packed = None

    def _stacked_packed_copy(self) -> torch.Tensor | None:
        return _packed_copy(torch.cat([layer.weight.detach() for layer in self.members]))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "packed": self.packed is not None}  # see Int8Linear.__getstate__

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.packed = self._stacked_packed_copy() if self.packed else None

    def takes(self, x: torch.Tensor) -> bool:
        """Whether `stacked` runs for `x`: few rows (int8), or bf16 with autograd off (packed)."""
        return x.is_cpu and (x.numel() <= self.small_numel or _runs_packed(self.packed, x))

    def stacked(self, x: torch.Tensor) -> torch.Tensor:
        """The members' outputs side by side (..., sum of their sizes)."""
        flat = x.reshape(-1, self.in_features)
        if x.numel() <= self.small_numel:
            out = torch._weight_int8pack_mm(_as_bf16(flat), self.weight_int8, self.scales)
            out = out if x.dtype is torch.bfloat16 else out.to(x.dtype)
        else:
            out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, None, "none", [], "")
        return out.view(*x.shape[:-1], -1)

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.stacked(x).split(self.sizes, dim=-1)


def quantize_linears_int8(module: nn.Module) -> int:
    """Replace every nn.Linear below `module` (the text head included) by an Int8Linear around
    the same float weight, in place, for generation; returns how many. Bias-free projections
    that share an input (Llama's q/k/v, gate/up) also get a FusedInt8 (`int8_fused`) that
    vlm/lean_decoder.py uses."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child))
            count += 1
        else:
            count += quantize_linears_int8(child)
    for names in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")):
        layers = [getattr(module, name, None) for name in names]
        if all(isinstance(layer, Int8Linear) and layer.bias is None for layer in layers):
            module.int8_fused = FusedInt8(layers)
            if hasattr(module, "head_dim"):  # attention: q heads then k heads take the rotary embedding
                module.int8_fused.query_heads = layers[0].out_features // module.head_dim
                module.int8_fused.rotated_heads = (layers[0].out_features + layers[1].out_features) // module.head_dim
    return count
