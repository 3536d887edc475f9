"""Drawing images with a UnifiedVLM by next-scale prediction, one step at a time.

The model defines what a step reads and writes; a generation loop (generation/loop.py)
decides only what to sample and when to feed the decoder. Teacher forcing
(`UnifiedVLM.image_inputs`) builds its scale inputs with the same `RunningSum`, so the
inputs at inference are those training showed, by construction rather than by a test.

One image's steps: `block_inputs()` (the start vector, then the running discrete sum at each
next scale's size) -> the decoder -> `code_logits(hidden)` -> sample -> `add(codes)`; after
the last scale `sample_residual(...)` (the diffusion head's continuous residual) and
`finish(residual)` (the finished latent, its pixels, and the final block's inputs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from vlm.quantizer import RunningSum

if TYPE_CHECKING:
    from vlm.unified_model import UnifiedVLM


class ImageDrawing:
    """`count` images being drawn together, scale by scale."""

    def __init__(self, model: UnifiedVLM, count: int, sources: list[torch.Tensor | None] | None = None):
        """`sources`: per image, the finished latent (1, C, h, w) of the conversation's image
        before it, or None; read through the source hint when the model has one."""
        self.model = model
        self.count = count
        self.sources, self.present = None, None
        if model.config.source_hint and sources is not None and any(source is not None for source in sources):
            if len(sources) != count:
                raise ValueError(f"{len(sources)} sources for {count} images")
            shape = next(source for source in sources if source is not None).shape[1:]
            self.sources = torch.cat([source if source is not None else torch.zeros(1, *shape)
                                      for source in sources]).to(model.device)
            self.present = torch.tensor([source is not None for source in sources], device=model.device)
        self.scales = model.image_tokenizer.config.scales
        self.running = RunningSum(model.image_tokenizer.quantizer)
        self.codes: list[torch.Tensor] = []  # (count, s, s) per scale drawn so far

    @property
    def scale_index(self) -> int:
        """The scale the next `block_inputs` / `add` is for."""
        return self.running.scales_done

    def block_inputs(self, hinted: bool = True) -> torch.Tensor:
        """(count, s * s, hidden): the decoder inputs of the next scale block; `hinted=False`
        leaves out the source hint (guidance's unconditional branch, which sees no context)."""
        running = None if self.scale_index == 0 else self.running.next_input()
        hint = None
        if hinted and self.sources is not None:
            hint = self.model.source_hint(self.sources, self.scale_index, running, self.present)
        return self.model.image_block_embeddings(self.scale_index, running, self.count, hint)

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(count, s * s, codebook) logits from the scale block's last hidden states."""
        return self.model.image_head(hidden)

    def add(self, codes_Bss: torch.Tensor) -> None:
        """The sampled (count, s, s) codes of the next scale."""
        self.running.add(codes_Bss)
        self.codes.append(codes_Bss)

    def keep(self, positions: torch.Tensor) -> None:
        """Go on with these of the images only (one candidate per reply, once every scale is drawn)."""
        positions = positions.to(self.model.device)
        if self.running.latent is not None:
            self.running.latent = self.running.latent[positions]
        self.codes = [codes[positions] for codes in self.codes]
        if self.sources is not None:
            self.sources, self.present = self.sources[positions], self.present[positions]
        self.count = len(positions)

    def discrete_pixels(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(count, 3, H, W) in [-1, 1]: the codes so far decoded (a coarse-to-fine preview); of
        the images at `positions` only, when given."""
        latent = self.running.latent if positions is None else self.running.latent[positions.to(self.model.device)]
        return self.model.image_tokenizer.decode_latent(latent)

    def sample_residual(self, hidden: torch.Tensor, steps: int, generator: torch.Generator | None,
                        hidden_unconditional: torch.Tensor | None = None, guidance: float = 0.0) -> torch.Tensor:
        """(count, C, h, w): the residual head's sample, conditioned on the last scale block's
        hidden states and codes (and guided by the unconditional branch's, when given)."""
        if self.scale_index != len(self.scales):
            raise ValueError(f"the residual comes after the last scale; {self.scale_index} of "
                             f"{len(self.scales)} are drawn")
        last_codes = self.codes[-1].flatten(1)
        condition = self.model.residual_condition(hidden, last_codes).flatten(0, 1)
        unconditional = None if hidden_unconditional is None else \
            self.model.residual_condition(hidden_unconditional, last_codes).flatten(0, 1)
        sampled = self.model.residual_head.sample(condition, steps, generator, unconditional, guidance)
        side = self.scales[-1]
        return sampled.view(self.count, side, side, -1).permute(0, 3, 1, 2).to(self.running.latent.dtype)

    def no_residual(self) -> torch.Tensor:
        """A zero residual: the image is its discrete codes alone."""
        return torch.zeros_like(self.running.latent)

    def finish(self, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(finished latent, its pixels in [-1, 1], the final block's decoder inputs)."""
        finished = self.running.latent + residual
        pixels = self.model.image_tokenizer.decode_latent(finished)
        return finished, pixels, self.model.image_block_embeddings(len(self.scales), finished)
