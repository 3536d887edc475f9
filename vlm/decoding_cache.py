"""The state of an incremental decode: the backbone's KV cache plus what the mask needs.

Generation feeds the decoder chunk by chunk (a text token, a whole scale block, a final
block), several sequences at once, each at its own length. The block-causal rule needs to
know, for every cached key, its block id and whether a row may see it at all: padding
slots (rows that fed fewer positions than others in a chunk) never are, and the
unconditional rows of classifier-free guidance hide the conversation before their
`<|image_start|>`, exactly as condition dropout does in training. A drawn image's scale
blocks are hidden once its last scale is drawn: what follows reads the final block only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache


@dataclass
class DecodingCache:
    past: DynamicCache
    key_blocks: torch.Tensor  # (B, K) block id of every cached key
    key_visible: torch.Tensor  # (B, K) bool: False for padding and for keys hidden from that row
    next_position: torch.Tensor  # (B,) position id of each row's next real position
    next_block: torch.Tensor  # (B,) block id of each row's next block

    @property
    def batch_size(self) -> int:
        return self.key_blocks.shape[0]

    @property
    def length(self) -> int:
        return self.key_blocks.shape[1]

    def attention_mask(self, query_blocks: torch.Tensor, query_valid: torch.Tensor,
                       dtype: torch.dtype, query_until: torch.Tensor | None = None) -> torch.Tensor:
        """Additive (B, 1, Q, K + Q) mask for new queries against the cache plus themselves.

        `query_until` (B, Q): the last block that may see each new position (see
        ProcessedBatch.visible_until); cached keys carry theirs as `key_visible`.
        """
        key_blocks = torch.cat([self.key_blocks, query_blocks], dim=1)
        key_visible = torch.cat([self.key_visible, query_valid], dim=1)
        allowed = (key_blocks[:, None, :] <= query_blocks[:, :, None]) & key_visible[:, None, :]
        if query_until is not None:
            cached = torch.full_like(self.key_blocks, torch.iinfo(torch.long).max)
            key_until = torch.cat([cached, query_until.to(cached.device)], dim=1)
            allowed = allowed & (query_blocks[:, :, None] <= key_until[:, None, :])
        # A padded query's output is never used; letting it see everything avoids all-masked rows (NaNs).
        allowed = allowed | ~query_valid[:, :, None]
        mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[:, None]

    def append(self, query_blocks: torch.Tensor, query_valid: torch.Tensor) -> None:
        """Record the keys the last forward added (the KV tensors are already in `past`)."""
        self.key_blocks = torch.cat([self.key_blocks, query_blocks], dim=1)
        self.key_visible = torch.cat([self.key_visible, query_valid], dim=1)
        counts = query_valid.sum(dim=1)
        self.next_position = self.next_position + counts
        last_blocks = torch.where(query_valid, query_blocks, torch.full_like(query_blocks, -1)).amax(dim=1)
        self.next_block = torch.where(counts > 0, last_blocks + 1, self.next_block)

    def select(self, rows: torch.Tensor) -> DecodingCache:
        """A new cache made of these rows (repeats allowed), sharing nothing with this one."""
        past = DynamicCache()
        for layer_index, layer in enumerate(self.past.layers):
            past.update(layer.keys[rows].clone(), layer.values[rows].clone(), layer_index)
        return DecodingCache(past, self.key_blocks[rows].clone(), self.key_visible[rows].clone(),
                             self.next_position[rows].clone(), self.next_block[rows].clone())

    def add_blind_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Append one row per entry of `rows` that continues from the same position but sees none
        of the cached keys: classifier-free guidance's unconditional branch, fed in the same
        forward as the conditional rows (one batch of two instead of two forwards). Returns the
        new rows' indices; `drop_rows_from` removes them again."""
        return self._append_rows(rows, seeing=False)

    def add_copy_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Append one row per entry of `rows` (repeats allowed) that continues from the same
        position and sees what that row sees: another candidate drawing of the same reply, fed in
        the same forwards. Returns the new rows' indices; `drop_rows_from` removes them again."""
        return self._append_rows(rows, seeing=True)

    def _append_rows(self, rows: torch.Tensor, seeing: bool) -> torch.Tensor:
        batch = self.batch_size
        index = torch.cat([torch.arange(batch, device=rows.device), rows])
        self.past.batch_select_indices(index)
        self.key_blocks = self.key_blocks[index]
        added = self.key_visible[rows] if seeing else torch.zeros_like(self.key_visible[rows])
        self.key_visible = torch.cat([self.key_visible, added])
        self.next_position = self.next_position[index]
        self.next_block = self.next_block[index]
        return torch.arange(batch, batch + len(rows), device=rows.device)

    def drop_rows_from(self, batch: int) -> None:
        """Keep rows 0..batch-1 only (undoes `add_blind_rows` and `add_copy_rows`)."""
        keep = torch.arange(batch, device=self.key_blocks.device)
        self.past.batch_select_indices(keep)
        self.key_blocks, self.key_visible = self.key_blocks[:batch], self.key_visible[:batch]
        self.next_position, self.next_block = self.next_position[:batch], self.next_block[:batch]

    def hide(self, rows: torch.Tensor, start: int, end: int) -> None:
        """`rows` no longer see keys `start:end` (an image's scale blocks once its last scale is drawn)."""
        self.key_visible[rows, start:end] = False


def empty_cache(batch_size: int, device: torch.device) -> DecodingCache:
    return DecodingCache(
        DynamicCache(),
        torch.zeros(batch_size, 0, dtype=torch.long, device=device),
        torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
        torch.zeros(batch_size, dtype=torch.long, device=device),
        torch.zeros(batch_size, dtype=torch.long, device=device),
    )
