"""Each training image encoded once per tokenizer, not once per step.

The tokenizer is frozen while the decoder trains, so an image's codes and residual never
change; a cache keyed by the image's pixels (and owned by one tokenizer) turns every
repeat into a look-up. Each image is encoded on its own, so its tokens do not depend on
which batch first brought it (a resumed run gets the same tokens bit for bit).
"""

from __future__ import annotations

import hashlib

import torch

from vlm.tokenizer import HybridTokenizer, HybridTokens


class TokenCache:
    def __init__(self, tokenizer: HybridTokenizer, max_images: int = 200_000):
        self.tokenizer = tokenizer
        self.max_images = max_images  # ~8 KB each at 64x64: 200k images ~1.6 GB at most
        self._tokens: dict[str, HybridTokens] = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(pixels_CHW: torch.Tensor) -> str:
        return hashlib.sha1(pixels_CHW.detach().cpu().contiguous().numpy().tobytes()).hexdigest()

    @torch.no_grad()
    def tokens(self, pixels_BCHW: torch.Tensor) -> HybridTokens:
        """Tokens of a batch of model-space pixels, encoding only images not seen before."""
        found = []
        for image in pixels_BCHW:
            key = self.key(image)
            tokens = self._tokens.get(key)
            if tokens is None:
                self.misses += 1
                tokens = self.tokenizer.encode_pixels(image[None]).to("cpu")
                if len(self._tokens) < self.max_images:
                    self._tokens[key] = tokens
            else:
                self.hits += 1
            found.append(tokens)
        device = self.tokenizer.device
        return HybridTokens([torch.cat([tokens.codes[scale] for tokens in found]).to(device)
                             for scale in range(len(found[0].codes))],
                            torch.cat([tokens.residual for tokens in found]).to(device))
