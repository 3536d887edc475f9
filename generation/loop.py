"""The interleaved generation loop: text tokens and whole images from one decoder, streamed.

Text is sampled a token per forward. When a row samples `<|image_start|>` (or the caller
forces an image), it draws an image by next-scale prediction: one forward per scale over
the KV cache, every position of a scale sampled at once, guided by an unconditional
branch (extra rows of the same cache, fed in the same forwards); then the residual head
adds the continuous residual, the tokenizer decodes pixels (the image goes out to the caller
here), and the finished latent goes back in as the image's final block followed by
`<|image_end|>`, so the text that follows sees the whole image.

Rows of a batch (n answers to one prompt, or several prompts) run in lockstep: a row that
is drawing while another writes text feeds nothing in the other's forward (its slot is
masked padding), so every row's output is what it would be alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from generation.config import GenerationConfig, for_scale
from generation.events import (
    CANCELLED,
    END_OF_TURN,
    MAX_IMAGES,
    MAX_TOKENS,
    STOP_STRING,
    Done,
    Event,
    ImageFinished,
    ImageStarted,
    ScalePreview,
    TextDelta,
)
from generation.sampling import code_log_likelihood, filter_logits, guide, penalise_repeats
from generation.timing import StageTimer
from vlm.decoding_cache import DecodingCache
from vlm.image_io import tensor_to_pil
from vlm.messages import ConversationError
from vlm.next_scale import ImageDrawing
from vlm.tokenizer import HybridTokens
from vlm.unified_model import UnifiedVLM

logger = logging.getLogger(__name__)

# (kind, logits): "text" (rows choosing a text token), and per drawn scale "image" (conditional),
# "image_unconditional" (guidance's blind branch, when it runs) and "image_guided" (what is sampled from).
LogitsHook = Callable[[str, torch.Tensor], None]
# (the batch's row indices being drawn, scale index, the sampled (rows, s, s) codes) -> the codes to
# keep: lets a benchmark hold some scales at known codes and see what the model draws from them.
CodeHook = Callable[[list[int], int, torch.Tensor], torch.Tensor]


class Cancelled(Exception):
    """Raised inside the loop when the caller's cancel event is set."""


@dataclass
class _Row:
    """One sequence's progress through its reply."""

    seen_ids: list[int]  # prompt and reply text ids (the repetition penalty's memory)
    new_tokens: int = 0
    images: int = 0
    segment_ids: list[int] = field(default_factory=list)  # text ids since the last image
    emitted: str = ""  # text of `segment_ids` already streamed
    pending_ids: list[int] = field(default_factory=list)  # sampled ids not yet attached to a delta
    done: str | None = None


RESIDUAL_STREAM = 0x2545F4914F6CDD1D  # mixed into the seed for the residual head's noise (< 2**63)


def _gumbel_sample(scores_NV: torch.Tensor, temperature: float, generator: torch.Generator) -> torch.Tensor:
    """Sample from softmax(scores) with noise drawn on the CPU, so a seed gives the same tokens
    on every device; temperature 0 is argmax."""
    if temperature == 0:
        return scores_NV.argmax(dim=-1)
    uniform = torch.rand(scores_NV.shape, generator=generator).to(scores_NV.device)
    exponential = -torch.log(uniform.clamp_min(1e-20))
    gumbel = -torch.log(exponential.clamp_min(1e-20))
    return (scores_NV.float() + gumbel).argmax(dim=-1)


class InterleavedGenerator:
    """Streams `Event`s for one request. Use `stream_generate` unless you need the object."""

    def __init__(self, model: UnifiedVLM, config: GenerationConfig, cancel: threading.Event | None = None,
                 logits_hook: LogitsHook | None = None, timer: StageTimer | None = None,
                 code_hook: CodeHook | None = None):
        self.model = model
        self.code_hook = code_hook
        self.timer = timer
        self.config = config
        self.cancel = cancel
        self.logits_hook = logits_hook
        processor = model.processor
        self.tokenizer = processor.tokenizer
        self.image_start_id = processor.image_start_id
        self.image_end_id = processor.image_end_id
        stop_ids = set(config.stop_token_ids)
        eos = model.language_model.generation_config.eos_token_id
        stop_ids |= set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            stop_ids.add(self.tokenizer.eos_token_id)
        self.stop_ids = stop_ids
        self.blocked_ids = [processor.image_end_id, processor.image_token_id]
        seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, ()).item())
        self.generator = torch.Generator().manual_seed(seed)
        # The residual head's noise has a stream of its own, so the codes (and text) drawn for a
        # seed do not depend on how many residual steps ran: 0, 1 and 8 steps give the same
        # discrete images, and the evaluation's hybrid and discrete-only scores are paired.
        self.residual_generator = torch.Generator().manual_seed(seed ^ RESIDUAL_STREAM)
        self.scales = model.image_tokenizer.config.scales
        self.sources: list[torch.Tensor | None] = []  # per row, its last image's finished latent (stream)

    # ----- helpers -----

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _check_cancel(self) -> None:
        if self._cancelled():
            raise Cancelled

    def _stage(self, name: str) -> AbstractContextManager:
        """Times a stage when a `StageTimer` was given (benchmarks.speed's breakdown)."""
        return self.timer(name) if self.timer is not None else nullcontext()

    def _hook(self, kind: str, logits: torch.Tensor) -> None:
        if self.logits_hook is not None:
            self.logits_hook(kind, logits.detach())

    def _hooked_codes(self, indices: list[int], scale_index: int, codes: torch.Tensor) -> torch.Tensor:
        kept = self.code_hook(indices, scale_index, codes)
        if kept.shape != codes.shape or kept.dtype != codes.dtype:
            raise ValueError(f"code_hook returned {tuple(kept.shape)} {kept.dtype} codes for scale {scale_index}; "
                             f"the loop sampled {tuple(codes.shape)} {codes.dtype}")
        size = self.model.image_tokenizer.config.codebook_size
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= size):
            raise ValueError(f"code_hook returned codes outside 0..{size - 1} for scale {scale_index}")
        return kept.to(codes.device)

    def _text_embeddings(self, token_id: int, count: int) -> torch.Tensor:
        ids = torch.full((count, 1), token_id, dtype=torch.long, device=self.model.device)
        return self.model.text_embeddings(ids)

    def _extend_rows(self, cache: DecodingCache, chunk: torch.Tensor, offsets: torch.Tensor,
                     rows: torch.Tensor) -> torch.Tensor:
        """Feed `chunk` (R, Q, hidden) for `rows` only; the other rows get masked padding."""
        self._check_cancel()  # before every forward, so a cancel costs at most the forward in flight
        batch, length = cache.batch_size, chunk.shape[1]
        offsets = offsets.to(self.model.device).expand(batch, length)
        if len(rows) == batch:
            return self.model.extend(cache, chunk, offsets)
        full = chunk.new_zeros(batch, length, chunk.shape[2])
        full[rows] = chunk
        valid = torch.zeros(batch, length, dtype=torch.bool, device=self.model.device)
        valid[rows] = True
        return self.model.extend(cache, full, offsets, valid)[rows]

    def _pick_text(self, logits_V: torch.Tensor, row: _Row) -> int:
        config = self.config
        logits_V = logits_V.float().clone()
        logits_V[self.blocked_ids] = float("-inf")
        if config.max_images == 0:  # a text-only request: the model cannot start an image
            logits_V[self.image_start_id] = float("-inf")
        if row.new_tokens < config.min_new_tokens:
            logits_V[list(self.stop_ids)] = float("-inf")
        logits_V = penalise_repeats(logits_V, row.seen_ids, config.repetition_penalty)
        scores = filter_logits(logits_V[None], config.temperature, config.top_k, config.top_p)
        return int(_gumbel_sample(scores, config.temperature, self.generator)[0])

    def _take_text(self, index: int, row: _Row, token: int) -> Iterator[Event]:
        """Append one text token to a row: stream its delta and apply the stop strings."""
        row.seen_ids.append(token)
        row.segment_ids.append(token)
        row.pending_ids.append(token)
        row.new_tokens += 1
        text = self.tokenizer.decode(row.segment_ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 character: wait for the next token
            return
        stops = [position for position in (text.find(stop) for stop in self.config.stop_strings) if position >= 0]
        if stops:
            text = text[:min(stops)]
            row.done = STOP_STRING
        if len(text) > len(row.emitted) or row.pending_ids:
            yield TextDelta(index, text[len(row.emitted):], row.pending_ids)
            row.pending_ids = []
        row.emitted = max(text, row.emitted, key=len)
        if row.done:
            yield Done(index, row.done)

    # ----- the loop -----

    @torch.inference_mode()  # on a generator, torch applies it only while the generator runs, not between events
    def stream(self, conversations: Sequence[list]) -> Iterator[Event]:
        model, config = self.model, self.config
        batch = model.processor(list(conversations), add_generation_prompt=True)
        if batch.input_ids.shape[1] >= model.context_length:
            raise ConversationError(f"the conversation is {batch.input_ids.shape[1]} tokens; this model reads at "
                                    f"most {model.context_length}: shorten it or start a new one")
        size = batch.input_ids.shape[0]
        rows = [_Row(seen_ids=batch.input_ids[index, :int(batch.padding_mask[index].sum())].tolist())
                for index in range(size)]
        try:
            self._check_cancel()
            tokens = None
            if model.config.source_hint and len(batch.pixels):  # encoded here: the hint reads them too
                tokens = model.image_tokenizer.encode_pixels(batch.pixels.to(model.device))
            hidden, cache = model.start_decoding(batch, tokens)
            # Per row, the finished latent of its last image: what its next drawing is hinted with.
            self.sources = model.last_image_latents(batch, tokens)
            lengths = batch.padding_mask.sum(dim=1).to(model.device)
            last_hidden = hidden[torch.arange(size, device=model.device), lengths - 1]
            first = True
            while True:
                active = [index for index, row in enumerate(rows) if row.done is None]
                if not active:
                    return
                self._check_cancel()
                logits = model.text_logits(last_hidden[active])
                self._hook("text", logits)
                drawing, writing = [], []
                for position, index in enumerate(active):
                    row = rows[index]
                    token = self.image_start_id if first and config.force_image else \
                        self._pick_text(logits[position], row)
                    if token in self.stop_ids:
                        row.done = END_OF_TURN
                    elif token == self.image_start_id:
                        if row.images >= config.max_images:
                            row.done = MAX_IMAGES
                        else:
                            drawing.append(index)
                    elif row.new_tokens >= config.max_new_tokens:
                        row.done = MAX_TOKENS
                    else:
                        yield from self._take_text(index, row, token)
                        if row.done is None:
                            writing.append((index, token))
                    if row.done is not None and not (row.done == STOP_STRING):
                        yield Done(index, row.done)
                first = False
                if drawing:
                    rows_tensor = torch.tensor(drawing, device=model.device)
                    last_hidden[rows_tensor] = yield from self._draw(cache, rows_tensor, rows)
                if writing:
                    rows_tensor = torch.tensor([index for index, _ in writing], device=model.device)
                    ids = torch.tensor([[token] for _, token in writing], device=model.device)
                    chunk = model.text_embeddings(ids)
                    offsets = torch.zeros(1, 1, dtype=torch.long)
                    last_hidden[rows_tensor] = self._extend_rows(cache, chunk, offsets, rows_tensor)[:, 0]
        except Cancelled:
            for index, row in enumerate(rows):
                if row.done is None:
                    row.done = CANCELLED
                    yield Done(index, CANCELLED)

    def _draw(self, cache: DecodingCache, rows_tensor: torch.Tensor, rows: list[_Row]
              ) -> Iterator[Event]:
        """Draw one image for each of `rows_tensor`; returns their hidden state at `<|image_end|>`.

        With `image_candidates` N > 1 every row draws N candidates in the same forwards (extra
        cache rows that see what the row sees; candidate j of drawing k sits at j * count + k),
        and keeps the one whose codes are likeliest under the model given the conversation."""
        model, config, stage = self.model, self.config, self._stage
        count, num_scales = len(rows_tensor), len(self.scales)
        indices = rows_tensor.tolist()
        for index in indices:
            yield ImageStarted(index, rows[index].images)
        guided = config.cfg_scale != 1.0
        candidates = config.image_candidates
        batch = cache.batch_size
        drawn = rows_tensor
        if candidates > 1:
            drawn = torch.cat([rows_tensor, cache.add_copy_rows(rows_tensor.repeat(candidates - 1))])
        total = len(drawn)
        feed = drawn
        if guided:
            # The unconditional branch: extra rows of the same cache that see nothing before their
            # <|image_start|> (as under condition dropout in training), fed in the same forwards.
            feed = torch.cat([drawn, cache.add_blind_rows(drawn)])
        drawing = ImageDrawing(model, total, [self.sources[index] for index in indices] * candidates)
        likelihood = torch.zeros(total)  # per candidate: log p(its codes so far | conversation)
        leaders = torch.arange(count)  # per row, the position of its likeliest candidate so far
        scales_start = cache.length + 1  # the first scale block's column, just after <|image_start|>
        try:
            for scale_index, size in enumerate(self.scales):
                self._check_cancel()
                chunk = drawing.block_inputs()
                if guided:
                    chunk = torch.cat([chunk, drawing.block_inputs(hinted=False) if drawing.sources is not None
                                       else chunk])
                offsets = torch.zeros(1, size * size, dtype=torch.long)
                if scale_index == 0:
                    chunk = torch.cat([self._text_embeddings(self.image_start_id, len(chunk)), chunk], dim=1)
                    offsets = torch.tensor([[0, 1]])
                with stage(f"scale {scale_index + 1} forward"):
                    both = self._extend_rows(cache, chunk, offsets, feed)
                    hidden = both[:, -size * size:]
                with stage("image head"):
                    logits_both = drawing.code_logits(hidden)
                with stage("sampling"):
                    conditional = logits = logits_both[:total]
                    self._hook("image", logits)
                    if guided:
                        self._hook("image_unconditional", logits_both[total:])
                        ramp = scale_index / (num_scales - 1) if num_scales > 1 else 1.0
                        logits = guide(logits, logits_both[total:], (config.cfg_scale - 1) * ramp)
                        self._hook("image_guided", logits)
                    temperature = for_scale(config.image_temperature, scale_index, num_scales, "image_temperature")
                    scores = filter_logits(
                        logits.flatten(0, 1), temperature,
                        int(for_scale(config.image_top_k, scale_index, num_scales, "image_top_k")),
                        for_scale(config.image_top_p, scale_index, num_scales, "image_top_p"))
                    codes = _gumbel_sample(scores, temperature, self.generator).view(total, size, size)
                    if self.code_hook is not None:
                        codes = self._hooked_codes(indices * candidates, scale_index, codes)
                    drawing.add(codes)
                    if candidates > 1:
                        likelihood += code_log_likelihood(conditional, codes).cpu()
                        leaders = likelihood.view(candidates, count).argmax(dim=0) * count + torch.arange(count)
                if config.previews:
                    with stage("previews"):
                        previews = tensor_to_pil(drawing.discrete_pixels(leaders if candidates > 1 else None))
                    for position, index in enumerate(indices):
                        yield ScalePreview(index, rows[index].images, scale_index, previews[position])
        finally:
            cache.drop_rows_from(batch)
        if candidates > 1:
            drawing.keep(leaders)
            leaders = leaders.to(hidden.device)
            hidden = torch.cat([hidden[leaders], hidden[total + leaders]]) if guided else hidden[leaders]
        residual = drawing.no_residual()
        if config.residual_steps > 0:
            self._check_cancel()
            with stage("residual head"):
                residual = drawing.sample_residual(hidden[:count], config.residual_steps, self.residual_generator,
                                                   hidden[count:] if guided else None,
                                                   config.cfg_scale - 1 if guided else 0.0)
        with stage("decode pixels"):
            finished, pixels, final_block = drawing.finish(residual)
            images = tensor_to_pil(pixels)
        for position, index in enumerate(indices):
            self.sources[index] = finished[position:position + 1]
        codes = drawing.codes
        # The image is finished once decoded: the caller shows it while the final block is fed
        # back (a forward the user would otherwise wait for), which only the text after it needs.
        for position, index in enumerate(indices):
            row = rows[index]
            with torch.inference_mode(False):  # ordinary tensors, usable in training code afterwards
                tokens = HybridTokens([scale_codes[position:position + 1].clone() for scale_codes in codes],
                                      residual[position:position + 1].float().clone())
            yield ImageFinished(index, row.images, images[position], tokens)
            row.images += 1
            row.segment_ids, row.emitted = [], ""
        cache.hide(rows_tensor, scales_start, cache.length)  # the final block and later read the final block only
        chunk = torch.cat([final_block, self._text_embeddings(self.image_end_id, count)], dim=1)
        offsets = torch.cat([torch.zeros(chunk.shape[1] - 1, dtype=torch.long), torch.ones(1, dtype=torch.long)])
        with stage("final block forward"):
            end_hidden = self._extend_rows(cache, chunk, offsets[None], rows_tensor)[:, -1]
        return end_hidden


def stream_generate(model: UnifiedVLM, conversation: list | Sequence[list], config: GenerationConfig | None = None,
                    cancel: threading.Event | None = None, logits_hook: LogitsHook | None = None,
                    timer: StageTimer | None = None, code_hook: CodeHook | None = None) -> Iterator[Event]:
    """Stream the reply (or `config.num_sequences` replies) to one conversation, or replies to a
    list of conversations. Set `cancel` from another thread to stop within one forward; pass a
    `timer` to have the loop's stages timed, a `code_hook` to replace sampled image codes
    (benchmarks.scale_forcing holds the coarse scales at an image's true codes with it)."""
    config = config or GenerationConfig()
    if conversation and isinstance(conversation[0], dict):
        conversations = [conversation] * config.num_sequences
    else:
        conversations = list(conversation)
        if config.num_sequences != 1:
            raise ConversationError("num_sequences applies to one conversation; pass one, or repeat it yourself")
    if not conversations or not all(conversations):
        raise ConversationError("nothing to answer: the conversation is empty")
    yield from InterleavedGenerator(model, config, cancel, logits_hook, timer, code_hook).stream(conversations)
