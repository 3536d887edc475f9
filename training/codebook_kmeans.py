"""Initialise a tokenizer's codebook by k-means on the vectors its quantizer actually looks up.

A random codebook wastes the first thousands of training steps (most codes are never the
nearest to anything and must be restarted one by one). The vectors a multi-scale quantizer
looks up depend on the codes chosen at the earlier scales, so one k-means is not enough:
we alternate a quantizer pass over real images (collecting every scale's looked-up
vectors) with Lloyd iterations on them, a few rounds, so the codebook settles on the rests
the quantizer really sees.
"""

from __future__ import annotations

import logging

import torch

from vlm.tokenizer import HybridTokenizer

logger = logging.getLogger(__name__)


def nearest(vectors_NC: torch.Tensor, centres_KC: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest centre (squared L2) for each vector, in chunks to bound memory."""
    norms = centres_KC.square().sum(dim=-1)
    return torch.cat([(norms[None] - 2 * part @ centres_KC.T).argmin(dim=-1) for part in vectors_NC.split(chunk)])


def lloyd(vectors_NC: torch.Tensor, centres_KC: torch.Tensor, iterations: int,
          generator: torch.Generator) -> torch.Tensor:
    """Plain k-means; an empty cluster takes a random vector, so every code ends up used."""
    centres = centres_KC.clone()
    for _ in range(iterations):
        assignment = nearest(vectors_NC, centres)
        counts = torch.bincount(assignment, minlength=centres.shape[0]).float()
        sums = torch.zeros_like(centres).index_add_(0, assignment, vectors_NC)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
        empty = (~filled).nonzero().flatten()
        if empty.numel():
            centres[empty] = vectors_NC[torch.randint(0, vectors_NC.shape[0], (empty.numel(),), generator=generator)]
    return centres


@torch.no_grad()
def looked_up_vectors(model: HybridTokenizer, pixels_BCHW: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Every vector the quantizer looks up (all scales) for these images, with the current codebook."""
    vectors = []
    for batch in pixels_BCHW.split(batch_size):
        output = model.quantizer(model.encoder(batch.to(model.device)))
        vectors += [part.float().cpu() for part in output.latents_per_scale]
    return torch.cat(vectors)


@torch.no_grad()
def kmeans_codebook(model: HybridTokenizer, pixels_BCHW: torch.Tensor, rounds: int = 4, iterations: int = 15,
                    max_vectors: int = 400_000, seed: int = 0) -> dict[str, float]:
    """Set `model`'s codebook by alternating quantizer passes and k-means; returns the last
    round's mean squared distance of a vector to its code (the quantization error)."""
    generator = torch.Generator().manual_seed(seed)
    size = model.config.codebook_size
    was_training = model.training
    model.eval()
    error = float("nan")
    for round_index in range(rounds):
        if round_index == 0:
            # Start from latent vectors at every scale's size (no codes chosen yet): the first
            # round's rests are the latents themselves at scale 1 and their differences below it.
            latents = torch.cat([model.encoder(batch.to(model.device)).float().cpu()
                                 for batch in pixels_BCHW.split(256)])
            centred = latents - latents.mean(dim=(0, 2, 3), keepdim=True)
            vectors = centred.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        else:
            vectors = looked_up_vectors(model, pixels_BCHW)
        if vectors.shape[0] > max_vectors:
            vectors = vectors[torch.randperm(vectors.shape[0], generator=generator)[:max_vectors]]
        if vectors.shape[0] < size:
            raise ValueError(f"k-means for {size} codes needs at least {size} vectors, got {vectors.shape[0]}; "
                             "give it more images")
        start = vectors[torch.randperm(vectors.shape[0], generator=generator)[:size]] if round_index == 0 \
            else model.quantizer.codebook.weight.detach().float().cpu()
        centres = lloyd(vectors, start, iterations, generator)
        model.quantizer.codebook.weight.copy_(centres.to(model.device))
        error = float((vectors - centres[nearest(vectors, centres)]).square().sum(dim=-1).mean())
        logger.info("k-means round %d/%d: %d vectors, mean squared quantization error %.4f",
                    round_index + 1, rounds, vectors.shape[0], error)
    model.train(was_training)
    return {"kmeans_error": error}
