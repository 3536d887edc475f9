"""Folding LoRA adapters into the backbone for inference, and taking them out again for training.

Unmerged, peft rebuilds the whole embedding matrix and runs every adapter on each forward
(decoding ~3x slower on a CPU); merged but still wrapped, its wrappers cost ~4% per token.
So folding merges the adapters and then swaps each wrapper for its base layer; unfolding
puts the wrappers back and unmerges. These are explicit operations (not a side effect of
`train()`/`eval()`), so evaluating inside a training run never changes the weights' numerics.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from peft import PeftModel
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import TrainableTokensWrapper
from torch import nn


class AdapterFolding:
    """The folded/unfolded state of one peft-wrapped backbone, and the wrappers set aside while folded."""

    def __init__(self, backbone: PeftModel):
        self.backbone = backbone
        self._set_aside: list[tuple[nn.Module, str, nn.Module]] = []  # (parent, attribute, wrapper)
        self.folded = False

    def fold(self) -> None:
        """Merge the adapters into the base weights and take the wrappers out of the forward path."""
        if self.folded:
            return
        self.backbone.merge_adapter()
        self._set_wrappers_aside()
        self.folded = True

    def unfold(self) -> None:
        """Put the wrappers back and unmerge: the adapters are trainable again."""
        if not self.folded:
            return
        self._put_wrappers_back()
        self.backbone.unmerge_adapter()
        self.folded = False

    @contextmanager
    def wrapped(self) -> Iterator[None]:
        """The wrappers in place (weights untouched), e.g. to read the adapters' state dict while folded."""
        aside = bool(self._set_aside)
        self._put_wrappers_back()
        try:
            yield
        finally:
            if aside:
                self._set_wrappers_aside()

    def _set_wrappers_aside(self) -> None:
        model = self.backbone.get_base_model()
        swaps = []
        for name, module in model.named_modules():
            if any(name.startswith(swapped + ".") for swapped, *_ in swaps):
                continue  # inside a wrapper already swapped out
            if isinstance(module, TrainableTokensWrapper):
                base = module.token_adapter.get_base_layer()
            elif isinstance(module, BaseTunerLayer):
                base = module.get_base_layer()
            else:
                continue
            parent_name, _, attribute = name.rpartition(".")
            swaps.append((name, model.get_submodule(parent_name), attribute, module, base))
        for _, parent, attribute, _, base in swaps:
            setattr(parent, attribute, base)
        self._set_aside = [(parent, attribute, wrapper) for _, parent, attribute, wrapper, _ in swaps]

    def _put_wrappers_back(self) -> None:
        for parent, attribute, wrapper in self._set_aside:
            setattr(parent, attribute, wrapper)
        self._set_aside = []
