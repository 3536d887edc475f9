"""What every evaluation task shares: batched replies and the settings images are drawn with."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tqdm.auto import tqdm

from generation import GenerationConfig, generate
from generation.config import PerScale
from generation.loop import CodeHook
from generation.reply import Reply
from vlm.unified_model import UnifiedVLM


@dataclass
class EvalSettings:
    """How much to evaluate and how to sample; `quick()` is a smoke-test size."""

    seed: int = 0
    batch_size: int = 8
    cfg_scale: float = 3.0
    residual_steps: int = 8
    # How image codes are sampled (GenerationConfig's defaults unless told): a half-trained model
    # draws cleaner shapes from its more likely codes, so these are worth sweeping per model.
    image_temperature: PerScale = GenerationConfig.image_temperature
    image_top_k: PerScale = GenerationConfig.image_top_k
    image_top_p: PerScale = GenerationConfig.image_top_p
    image_candidates: int = GenerationConfig.image_candidates  # drawings per image, the likeliest kept
    geneval_prompts: int = 24  # per category: one prompt moves a category by 0.04 (8 moved it by 0.125)
    # Each prompt drawn this often for the headline (hybrid) GenEval, its score the mean: one
    # drawing left a model's overall uncertain by ~0.04, enough to pick the luckier seed, not the
    # better model; four halve that for ~5 min more.
    geneval_draws: int = 4
    cfg_sweep: tuple[float, ...] = (1.0, 2.0, 3.0, 5.0)
    cfg_sweep_prompts: int = 8  # per category and scale: the sweep shows a trend, the headline score uses 24
    emoji_prompts: int = 100
    # 60 questions left the score a draw of 0.52-0.77 for one model over eight seeds; 240 cost ~1 min
    # and start with the same 60 (questions come from one seeded stream).
    vqa_questions: int = 240
    naming_images: int = 60
    steps_requests: int = 4  # per procedure: 24 replies, each scored on all its steps
    text_chats: int = 24
    edit_singles: int = 48
    edit_chains: int = 16

    @classmethod
    def quick(cls) -> EvalSettings:
        return cls(batch_size=4, geneval_prompts=1, geneval_draws=2, cfg_sweep=(1.0, 3.0), cfg_sweep_prompts=1,
                   emoji_prompts=2, vqa_questions=2, naming_images=2, steps_requests=1, text_chats=2, edit_singles=2,
                   edit_chains=1)


def image_config(settings: EvalSettings, **overrides) -> GenerationConfig:
    """Replies that may draw one image (and say a few words around it)."""
    values = dict(max_images=1, max_new_tokens=32, temperature=0.7, cfg_scale=settings.cfg_scale,
                  residual_steps=settings.residual_steps, seed=settings.seed,
                  image_temperature=settings.image_temperature, image_top_k=settings.image_top_k,
                  image_top_p=settings.image_top_p, image_candidates=settings.image_candidates)
    values.update(overrides)
    return GenerationConfig(**values)


def text_config(settings: EvalSettings, max_new_tokens: int = 32) -> GenerationConfig:
    """Greedy text-only answers: understanding is scored on the model's most likely reply."""
    return GenerationConfig(max_images=0, max_new_tokens=max_new_tokens, temperature=0.0, seed=settings.seed)


def replies(model: UnifiedVLM, conversations: list[list[dict]], config: GenerationConfig, batch_size: int,
            desc: str, code_hook: CodeHook | None = None) -> list[Reply]:
    """One reply per conversation, in batches (one batched generation run each), seeded per batch.
    A `code_hook` (generation.loop) is called with indices into `conversations`, not the batch."""
    out: list[Reply] = []
    for first in tqdm(range(0, len(conversations), batch_size), desc=desc, leave=False):
        batch = conversations[first:first + batch_size]
        seeded = replace(config, seed=None if config.seed is None else config.seed + first)
        hook = None if code_hook is None else (
            lambda rows, scale_index, sampled, first=first: code_hook([first + row for row in rows], scale_index,
                                                                      sampled))
        out += generate(model, batch, seeded, code_hook=hook)
    return out


def first_image(reply: Reply):
    images = reply.images
    return images[0] if images else None
