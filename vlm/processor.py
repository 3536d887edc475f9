"""Conversations -> decoder inputs: token ids, image layout, block-causal masks and text labels.

A conversation is a list of messages in the format of `vlm.messages` (checked there). The
backbone's own chat template renders the text; each image becomes

    <|image_start|> [scale 1] [scale 2] ... [scale K] [final block] <|image_end|>

for images the assistant draws (their codes are trained), and

    <|image_start|> [final block] <|image_end|>

for images the user shows, and for every image of a generation prompt's history (the model
reads earlier images; it only draws new ones). Attention is causal for text and block-causal
inside images: a position sees every earlier position and every position of its own block,
except that an image's scale blocks are seen only by its scale blocks. Its final block and
everything after it read the image through the final block alone, so a drawn image is read
exactly like an uploaded one, and a later turn (whose history holds final blocks only) sees
what training showed it. Training leaves out the final block of a drawn image that ends its
conversation (`skip_unread_final_blocks`): nothing after it but the end of the turn would read
it, and in the default mix those blocks are ~16% of a step's positions. Codes and residual
targets are not made here: the model encodes the images with its tokenizer and fills them in
at the scale-block positions this layout names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

from vlm.image_io import images_to_tensor
from vlm.messages import IMAGE_END, IMAGE_SLOT, IMAGE_START, SPECIAL_TOKENS, ConversationError, check_message

IGNORE_INDEX = -100
NO_LIMIT = 2**62  # `visible_until` of positions every later position may see
TEXT_LEVEL = -1  # `levels` value of text positions; scale k has level k, the final block level K


@dataclass
class ImageLayout:
    """Where one image sits in the batch."""

    sequence_index: int  # row of the batch
    start: int  # first position of its first block (just after <|image_start|>)
    generated: bool  # an assistant image: scale blocks, then the final block
    image_index: int  # index into ProcessedBatch.pixels
    final_block: bool = True  # False: a drawn image's scale blocks only (nothing after it reads it)


@dataclass
class ProcessedBatch:
    """Decoder inputs for a batch of conversations (right-padded)."""

    input_ids: torch.Tensor  # (B, L) int64; image positions hold the <|image|> id
    padding_mask: torch.Tensor  # (B, L) bool, True for real positions
    position_ids: torch.Tensor  # (B, L) int64
    block_ids: torch.Tensor  # (B, L) int64, non-decreasing: one id per text token or image block
    levels: torch.Tensor  # (B, L) int64: TEXT_LEVEL, scale index, or K for final blocks
    grid_positions: torch.Tensor  # (B, L, 2) float: (row, column) centres in [0, 1] of the final grid
    text_labels: torch.Tensor  # (B, L) int64: assistant text ids, IGNORE_INDEX elsewhere (HF: unshifted)
    pixels: torch.Tensor  # (N, 3, S, S) in [-1, 1], every image of the batch in order
    images: list[ImageLayout] = field(default_factory=list)
    # (B, L) int64: the last block id allowed to see each position (an image's last scale block
    # for its scale blocks, NO_LIMIT elsewhere); None means no limit anywhere.
    visible_until: torch.Tensor | None = None

    def attention_mask(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The (B, 1, L, L) additive block-causal mask over the whole batch."""
        return block_causal_mask(self.block_ids, self.block_ids, self.padding_mask, dtype, self.visible_until)


def block_causal_mask(query_blocks: torch.Tensor, key_blocks: torch.Tensor, key_padding: torch.Tensor,
                      dtype: torch.dtype = torch.float32, key_until: torch.Tensor | None = None) -> torch.Tensor:
    """Additive mask (B, 1, Q, K): a query sees a key iff the key's block is not later than its own
    (and, given `key_until`, the query's block is not later than the key's limit).

    Block ids never decrease along a sequence, so this is "every earlier position and every
    position of my own block". Works for a full forward (queries = keys) and for incremental
    decoding (queries = the new positions, keys = cache + new positions). A padded query
    row would see nothing and give NaNs; it is allowed to see the keys its block permits,
    padding included, and its outputs are never used.
    """
    allowed = key_blocks[:, None, :] <= query_blocks[:, :, None]  # (B, Q, K)
    if key_until is not None:
        allowed = allowed & (query_blocks[:, :, None] <= key_until[:, None, :])
    real_query = torch.ones_like(query_blocks, dtype=torch.bool)
    if key_padding.shape[1] == query_blocks.shape[1]:
        real_query = key_padding
    allowed = allowed & (key_padding[:, None, :] | ~real_query[:, :, None])
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def image_block_layout(scales: Sequence[int], generated: bool, final_block: bool = True
                       ) -> tuple[list[int], list[tuple[float, float]]]:
    """Levels and (row, column) grid centres of an image's positions, block after block."""
    if not (generated or final_block):
        raise ValueError("an image the model reads is its final block; it cannot be left out")
    levels, centres = [], []
    blocks = list(enumerate(scales)) if generated else []
    if final_block:
        blocks.append((len(scales), scales[-1]))  # the final block, at the last scale's grid
    for level, size in blocks:
        for row in range(size):
            for column in range(size):
                levels.append(level)
                centres.append(((row + 0.5) / size, (column + 0.5) / size))
    return levels, centres


def _ends_with_image(message: dict) -> bool:
    """Whether an (already checked) message's last part is an image."""
    content = message["content"]
    return isinstance(content, list) and bool(content) and content[-1]["type"] == "image"


class VLMProcessor:
    """The text tokenizer plus image special tokens, the chat template with image parts, and masks."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, scales: Sequence[int], image_size: int):
        self.tokenizer = tokenizer
        self.scales = tuple(scales)
        self.image_size = image_size
        missing = [token for token in SPECIAL_TOKENS if token not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        self.image_start_id, self.image_end_id, self.image_token_id = (
            tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS
        )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        if tokenizer.chat_template is None:
            raise ConversationError("the backbone's tokenizer has no chat template; use an instruct/chat model")

    def __len__(self) -> int:
        return len(self.tokenizer)

    def _render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def _pieces(self, conversation: list, add_generation_prompt: bool) -> tuple[list[tuple[str, bool]], list, list]:
        """The rendered text as (text, is_assistant_reply) pieces, plus images and who made them."""
        plain, images, generated = [], [], []
        for index, message in enumerate(conversation):
            role, content = check_message(message, index)
            text = ""
            for part in content:
                if part["type"] == "text":
                    text += part["text"]
                else:
                    text += IMAGE_START + IMAGE_SLOT + IMAGE_END
                    images.append(part["image"] if part.get("image") is not None else part["path"])
                    # In a generation prompt every earlier image is context: its final block only.
                    generated.append(role == "assistant" and not add_generation_prompt)
            plain.append({"role": role, "content": text})
        pieces = []
        for index, message in enumerate(plain):
            previous = self._render(plain[:index], add_generation_prompt=False)
            full = self._render(plain[: index + 1], add_generation_prompt=False)
            # Assistant turns: the template's reply header is prompt, the rest is the reply (labelled).
            header = self._render(plain[:index], add_generation_prompt=True) if message["role"] == "assistant" \
                else previous
            if not (header.startswith(previous) and full.startswith(header)):
                raise ConversationError("the backbone's chat template does not render conversations prefix by prefix")
            pieces.append((header[len(previous):], False))
            pieces.append((full[len(header):], message["role"] == "assistant"))
        if add_generation_prompt:
            full = self._render(plain, add_generation_prompt=False)
            pieces.append((self._render(plain, add_generation_prompt=True)[len(full):], False))
        return pieces, images, generated

    def __call__(self, conversations: list | Sequence[list], add_generation_prompt: bool = False,
                 skip_unread_final_blocks: bool = False) -> ProcessedBatch:
        """One conversation or a batch of them -> ProcessedBatch.

        `skip_unread_final_blocks` (training): a drawn image that is the last part of its
        conversation gets no final block. Its codes are trained exactly as before (scale blocks
        never see the final block); only the end-of-turn token after it loses sight of the image.
        """
        if conversations and isinstance(conversations[0], dict):
            conversations = [conversations]
        if not conversations:
            raise ConversationError("no conversations were given")
        rows, all_images, layouts = [], [], []
        for sequence_index, conversation in enumerate(conversations):
            if not isinstance(conversation, list) or not conversation:
                raise ConversationError(f"conversation {sequence_index} is empty or not a list of messages")
            pieces, images, generated = self._pieces(conversation, add_generation_prompt)
            final_blocks = [True] * len(images)
            if skip_unread_final_blocks and generated and generated[-1] and _ends_with_image(conversation[-1]):
                final_blocks[-1] = False
            row = {"ids": [], "labels": [], "blocks": [], "levels": [], "grid": [], "until": []}
            image_iter = iter(zip(images, generated, final_blocks))
            for text, is_reply in pieces:
                for chunk_index, chunk in enumerate(text.split(IMAGE_SLOT)):
                    if chunk_index > 0:
                        source, is_generated, final_block = next(image_iter)
                        layouts.append(ImageLayout(sequence_index, len(row["ids"]), is_generated,
                                                   len(all_images), final_block))
                        all_images.append(source)
                        self._append_image(row, is_generated, final_block)
                    ids = self.tokenizer(chunk, add_special_tokens=False)["input_ids"] if chunk else []
                    labels = [IGNORE_INDEX] * len(ids)
                    if is_reply:
                        # <|image_end|> is appended by the generation loop, not predicted.
                        labels = [token if token != self.image_end_id else IGNORE_INDEX for token in ids]
                    self._append_text(row, ids, labels)
            rows.append(row)
        pixels = (images_to_tensor(all_images, self.image_size) if all_images
                  else torch.zeros(0, 3, self.image_size, self.image_size))
        return self._collate(rows, pixels, layouts)

    def _append_text(self, row: dict, ids: list[int], labels: list[int]) -> None:
        next_block = row["blocks"][-1] + 1 if row["blocks"] else 0
        row["ids"] += ids
        row["labels"] += labels
        row["blocks"] += list(range(next_block, next_block + len(ids)))
        row["levels"] += [TEXT_LEVEL] * len(ids)
        row["grid"] += [(0.0, 0.0)] * len(ids)
        row["until"] += [NO_LIMIT] * len(ids)

    def _append_image(self, row: dict, generated: bool, final_block: bool = True) -> None:
        levels, centres = image_block_layout(self.scales, generated, final_block)
        first_block = row["blocks"][-1] + 1 if row["blocks"] else 0
        level_to_block = {level: first_block + order for order, level in enumerate(dict.fromkeys(levels))}
        row["ids"] += [self.image_token_id] * len(levels)
        row["labels"] += [IGNORE_INDEX] * len(levels)
        row["blocks"] += [level_to_block[level] for level in levels]
        row["levels"] += levels
        row["grid"] += centres
        last_scale_block = first_block + len(self.scales) - 1
        row["until"] += [last_scale_block if level < len(self.scales) else NO_LIMIT for level in levels]

    def _collate(self, rows: list[dict], pixels: torch.Tensor, layouts: list[ImageLayout]) -> ProcessedBatch:
        length = max(len(row["ids"]) for row in rows)
        batch = len(rows)
        input_ids = torch.full((batch, length), self.tokenizer.pad_token_id, dtype=torch.long)
        padding_mask = torch.zeros(batch, length, dtype=torch.bool)
        block_ids = torch.zeros(batch, length, dtype=torch.long)
        levels = torch.full((batch, length), TEXT_LEVEL, dtype=torch.long)
        grid = torch.zeros(batch, length, 2)
        labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
        until = torch.full((batch, length), NO_LIMIT, dtype=torch.long)
        for index, row in enumerate(rows):
            size = len(row["ids"])
            input_ids[index, :size] = torch.tensor(row["ids"], dtype=torch.long)
            padding_mask[index, :size] = True
            labels[index, :size] = torch.tensor(row["labels"], dtype=torch.long)
            levels[index, :size] = torch.tensor(row["levels"], dtype=torch.long)
            grid[index, :size] = torch.tensor(row["grid"])
            until[index, :size] = torch.tensor(row["until"], dtype=torch.long)
            blocks = torch.tensor(row["blocks"], dtype=torch.long)
            # Padding continues the block count, so padded positions are "later" than every real one.
            block_ids[index] = torch.cat([blocks, blocks[-1] + 1 + torch.arange(length - size)]) if size else 0
        position_ids = torch.arange(length).expand(batch, length).clone()
        return ProcessedBatch(input_ids, padding_mask, position_ids, block_ids, levels, grid, labels, pixels,
                              layouts, until)
