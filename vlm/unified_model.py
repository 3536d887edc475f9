"""UnifiedVLM: one HF causal-LM backbone that reads and writes text and hybrid image tokens.

Text positions use the backbone's own embeddings and LM head. Image positions take their
inputs from `ImageEmbedder` and their outputs through two heads: `image_head` (codebook
logits for the scale a position belongs to) and the residual diffusion head (the
continuous residual at last-scale positions, conditioned on the hidden state plus the
chosen code). The image tokenizer is frozen; it turns pixels into the codes, teacher-
forcing inputs and residuals used here, with the same bookkeeping as at inference.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import DynamicCache

from vlm import sampling_defaults
from vlm.adapters import AdapterFolding
from vlm.attention import select_attention
from vlm.backbone import cache_keyword, load_backbone
from vlm.configuration import IMAGE_TOKENIZER_DIR, UnifiedVLMConfig
from vlm.decoding_cache import DecodingCache, empty_cache
from vlm.image_embedding import ImageEmbedder
from vlm.lean_decoder import lean_decoder_forward, runs_lean
from vlm.processor import NO_LIMIT, ProcessedBatch, VLMProcessor
from vlm.residual_head import ResidualDiffusionHead
from vlm.teacher_forcing import blind_drawings, dropped_drawings, teacher_forced_losses
from vlm.tokenizer import PACKAGED_TOKENIZERS, CheckpointError, HybridTokenizer, HybridTokens, packaged_tokenizer

logger = logging.getLogger(__name__)

CONFIG_NAME = "vlm_config.json"
LAYERS_NAME = "image_layers.safetensors"
ADAPTER_NAME = "adapter.safetensors"
BACKBONE_WEIGHTS_NAME = "backbone.safetensors"
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "pretrained" / "model"


def model_tokenizer_folder(directory: Path, name: str) -> Path | None:
    """The image tokenizer of a model folder: its own copy, else the packaged tokenizer its config
    names (a model may name one instead of carrying a copy; the default model does); None if neither."""
    own = directory / IMAGE_TOKENIZER_DIR
    return own if own.is_dir() else packaged_tokenizer(name)


@dataclass
class UnifiedOutput:
    """Logits and losses of one forward pass."""

    text_logits: torch.Tensor  # (B, L, vocab)
    image_logits: torch.Tensor  # (N_scale_positions, codebook), scale-block positions in batch order
    hidden_states: torch.Tensor  # (B, L, hidden), the backbone's last layer
    losses: dict[str, torch.Tensor]  # "text", "image", "residual", "total" (where present)
    # Detached diagnostics: "image_scale_k", the image loss of scale k (1-based) alone.
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    # Detached (residuals (N, C), conditions (N, hidden)) the residual loss was computed on: the
    # trainer can give the small residual head extra updates on them without another decoder pass.
    residual_pairs: tuple[torch.Tensor, torch.Tensor] | None = None


class UnifiedVLM(nn.Module):
    """Backbone + image input layers + image head + residual head."""

    def __init__(self, config: UnifiedVLMConfig, backbone: nn.Module, processor: VLMProcessor,
                 image_tokenizer: HybridTokenizer):
        super().__init__()
        self.config = config
        self.processor = processor
        self.image_tokenizer = image_tokenizer.eval().requires_grad_(False)
        self.base_vocab_size = backbone.get_input_embeddings().num_embeddings
        if len(processor) > self.base_vocab_size:
            backbone.resize_token_embeddings(len(processor), mean_resizing=False)
        hidden = backbone.config.hidden_size
        tokenizer_config = image_tokenizer.config
        if config.residual_head.latent_channels != tokenizer_config.latent_channels or \
                config.residual_head.condition_channels != hidden:
            raise ValueError(
                f"residual head sizes ({config.residual_head.latent_channels}, "
                f"{config.residual_head.condition_channels}) must match the tokenizer's latent channels "
                f"{tokenizer_config.latent_channels} and the backbone's hidden size {hidden}"
            )
        text_rms = None
        if config.image_input_norm:
            text_embeddings = backbone.get_input_embeddings().weight[:self.base_vocab_size].detach().float()
            text_rms = float(text_embeddings.square().mean(dim=-1).sqrt().mean())
        if config.finetune == "lora":
            new_rows = list(range(self.base_vocab_size, len(processor)))
            lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                              target_modules=list(config.lora_target_modules),
                              trainable_token_indices={"embed_tokens": new_rows} if new_rows else None)
            backbone = get_peft_model(backbone, lora)
        self.backbone = backbone
        self._adapters = AdapterFolding(backbone) if isinstance(backbone, PeftModel) else None
        self.image_embedder = ImageEmbedder(tokenizer_config.latent_channels, hidden,
                                            len(tokenizer_config.scales) + 1, config.num_position_frequencies,
                                            text_rms, config.source_hint)
        self.image_head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, tokenizer_config.codebook_size))
        self.residual_head = ResidualDiffusionHead(config.residual_head)
        # The image sampling this model draws best with (vlm.sampling_defaults); {} = GenerationConfig's.
        self.sampling_defaults: dict = {}

    @classmethod
    def from_backbone(cls, config: UnifiedVLMConfig | None = None, image_tokenizer: str | Path | None = None,
                      dtype: torch.dtype = torch.float32) -> UnifiedVLM:
        """A new model around a stock backbone: image layers untrained, adapters at zero."""
        config = config or UnifiedVLMConfig()
        backbone, text_tokenizer = load_backbone(config.backbone, dtype)
        if config.attention == "auto":
            select_attention(backbone)
        else:
            backbone.set_attn_implementation(config.attention)
        tokenizer = HybridTokenizer.from_pretrained(image_tokenizer)
        processor = VLMProcessor(text_tokenizer, tokenizer.config.scales, tokenizer.config.image_size)
        # The residual head sits between these two: its sizes follow them.
        config.residual_head.condition_channels = backbone.config.hidden_size
        config.residual_head.latent_channels = tokenizer.config.latent_channels
        return cls(config, backbone, processor, tokenizer)

    def train(self, mode: bool = True) -> UnifiedVLM:
        """The image tokenizer stays frozen in eval mode; training a folded model is refused,
        since its adapters would get no gradient (the wrappers are out of the forward path)."""
        if mode and self.adapters_folded:
            raise RuntimeError("the LoRA adapters are folded into the backbone for inference; call "
                               "unfold_adapters() before training")
        super().train(mode)
        self.image_tokenizer.eval()
        return self

    @property
    def adapters_folded(self) -> bool:
        return self._adapters is not None and self._adapters.folded

    def fold_adapters(self) -> UnifiedVLM:
        """Merge the LoRA adapters into the backbone for fast inference (no-op without adapters)."""
        if self._adapters is not None:
            self._adapters.fold()
        return self

    def unfold_adapters(self) -> UnifiedVLM:
        """Undo `fold_adapters`: the adapters are separate and trainable again."""
        if self._adapters is not None:
            self._adapters.unfold()
        return self

    @property
    def language_model(self) -> nn.Module:
        """The HF causal LM itself (under the LoRA wrapper when there is one)."""
        return self.backbone.get_base_model() if isinstance(self.backbone, PeftModel) else self.backbone

    @property
    def device(self) -> torch.device:
        return self.image_head[1].weight.device

    @property
    def context_length(self) -> int:
        """The most positions the backbone was trained to read (its position limit)."""
        return int(getattr(self.language_model.config, "max_position_embeddings", 2048))

    def add_source_hint(self) -> UnifiedVLM:
        """Give a model without it the source hint layer (zero, so nothing changes until trained)."""
        self.image_embedder.add_source_hint()
        self.config.source_hint = True
        return self

    def source_hint(self, source_BCHW: torch.Tensor, scale_index: int, running_input_BCHW: torch.Tensor | None,
                    present_B: torch.Tensor | None = None) -> torch.Tensor:
        """(B, s * s, hidden): what a scale block adds to its content when it draws after the
        image `source` (a finished latent); zero for rows whose `present` is False (no source)."""
        missing = self.image_tokenizer.quantizer.still_missing(source_BCHW.to(self.device), scale_index,
                                                               running_input_BCHW)
        hint = self.image_embedder.hint(missing.flatten(2).transpose(1, 2))
        return hint if present_B is None else hint * present_B.to(hint)[:, None, None]

    def finished_latents(self, tokens: HybridTokens) -> torch.Tensor:
        """(N, C, h, w): each image's discrete sum plus residual, what its final block reads."""
        return self.image_tokenizer.latent(tokens)

    def last_image_latents(self, batch: ProcessedBatch, tokens: HybridTokens | None) -> list[torch.Tensor | None]:
        """Per row of `batch`, the finished latent (1, C, h, w) of its last image, None without one:
        the source a drawing that follows would be hinted with."""
        last: list[torch.Tensor | None] = [None] * batch.input_ids.shape[0]
        if tokens is None:
            return last
        latents = self.finished_latents(tokens)
        for layout in sorted(batch.images, key=lambda layout: layout.start):
            last[layout.sequence_index] = latents[layout.image_index:layout.image_index + 1]
        return last

    def image_inputs(self, batch: ProcessedBatch, tokens: HybridTokens, unhinted: set[int] = frozenset()
                     ) -> list[torch.Tensor]:
        """Per image in the batch, the (positions, hidden) inputs of its blocks. With the source
        hint, a drawn image not in `unhinted` (`image_index`es) reads the conversation's image
        before it, if any."""
        quantizer = self.image_tokenizer.quantizer
        finished = self.finished_latents(tokens)
        previous: dict[int, int] = {}  # row -> image_index of the last image so far
        order = sorted(range(len(batch.images)), key=lambda index: batch.images[index].start)
        source_of = {}
        for index in order:
            layout = batch.images[index]
            source_of[index] = previous.get(layout.sequence_index)
            previous[layout.sequence_index] = layout.image_index
        inputs = []
        for index, layout in enumerate(batch.images):
            image_tokens = tokens[layout.image_index]
            latents, scale_inputs = [], []
            if layout.generated:
                scale_inputs = quantizer.scale_inputs(image_tokens.codes)
                latents += [scale_input.flatten(2).transpose(1, 2)[0] for scale_input in scale_inputs]
            if layout.final_block:  # the finished latent: discrete sum + residual, (h * w, C), row-major
                latents.append(finished[layout.image_index].flatten(1).transpose(0, 1))
            content = self.image_embedder.content(torch.cat(latents))
            if layout.generated:
                content = torch.cat([self.image_embedder.start[None], content])
                source = source_of[index]
                if self.config.source_hint and source is not None and layout.image_index not in unhinted:
                    source_latent = finished[source:source + 1]
                    hints = torch.cat([self.source_hint(source_latent, scale_index,
                                                        scale_inputs[scale_index - 1] if scale_index else None)[0]
                                       for scale_index in range(len(quantizer.scales))])
                    content = torch.cat([content[:len(hints)] + hints.to(content.dtype), content[len(hints):]])
            span = slice(layout.start, layout.start + content.shape[0])
            placed = self.image_embedder.place(batch.levels[layout.sequence_index, span].to(self.device),
                                               batch.grid_positions[layout.sequence_index, span].to(self.device))
            inputs.append(self.image_embedder.combine(content, placed))
        return inputs

    def embed(self, batch: ProcessedBatch, tokens: HybridTokens | None, unhinted: set[int] = frozenset()
              ) -> torch.Tensor:
        """(B, L, hidden) decoder inputs: text embeddings with every image's blocks put in place
        (`unhinted`: drawn images that get no source hint, those whose condition is dropped)."""
        embeddings = self.language_model.get_input_embeddings()(batch.input_ids.to(self.device))
        if tokens is not None:
            embeddings = embeddings.clone()
            for layout, image_input in zip(batch.images, self.image_inputs(batch, tokens, unhinted)):
                embeddings[layout.sequence_index, layout.start:layout.start + image_input.shape[0]] = \
                    image_input.to(embeddings.dtype)
        return embeddings

    def run_decoder(self, embeddings: torch.Tensor, mask: torch.Tensor | None, position_ids: torch.Tensor,
                    past: DynamicCache | None = None) -> torch.Tensor:
        """The backbone's transformer without its LM head: (B, Q, hidden) last hidden states.

        Text logits are computed only where they are needed (`text_logits`), which saves the
        vocabulary-sized projection at every image position. Without gradients: vlm/lean_decoder.py.
        """
        decoder, mask = self.language_model.get_decoder(), None if mask is None else mask.to(self.device)
        embeddings, position_ids = embeddings.to(self.decoder_dtype), position_ids.to(self.device)
        if runs_lean(decoder):  # generation and evaluation: the same layers without transformers' wrapping
            hidden = lean_decoder_forward(decoder, embeddings, mask, position_ids, past)
        else:
            hidden = decoder(inputs_embeds=embeddings, attention_mask=mask, position_ids=position_ids,
                             use_cache=past is not None, **{cache_keyword(decoder): past}).last_hidden_state
        # A backbone loaded in bf16 (`from_pretrained(dtype=...)`, for speed) hands the fp32 heads fp32 states.
        return hidden if self.decoder_dtype == torch.float32 else hidden.float()

    @property
    def decoder_dtype(self) -> torch.dtype:
        """The backbone's weight dtype (float32 unless loaded otherwise; training autocasts instead)."""
        return self.language_model.get_input_embeddings().weight.dtype

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        head = self.language_model.get_output_embeddings()
        return head(hidden.to(head.weight.dtype))

    def forward(self, batch: ProcessedBatch, tokens: HybridTokens | None = None,
                generator: torch.Generator | None = None, all_logits: bool = True,
                reference_text_logits: torch.Tensor | None = None, text_kl_weight: float = 0.0) -> UnifiedOutput:
        """Teacher-forced pass over whole conversations, with the three losses where labels exist.

        `all_logits=False` (what training uses) computes the 49k-way text logits only where a
        label needs them and the image head only at drawn images' scale positions; the returned
        `text_logits` and `image_logits` are then empty. At ~230 positions per drawing and a
        handful of labelled ones, that is about a fifth of a step's compute saved.

        `reference_text_logits` (`vlm.teacher_forcing.reference_text_logits` of the same batch)
        adds the "text_kl" loss, in the total at `text_kl_weight`.
        """
        if tokens is None:
            tokens = self.image_tokenizer.encode_pixels(batch.pixels.to(self.device)) if len(batch.pixels) else None
        dropped = dropped_drawings(self, batch, generator) \
            if self.training and self.config.condition_dropout > 0 else set()
        embeddings = self.embed(batch, tokens, dropped)
        mask = blind_drawings(self, batch, batch.attention_mask(embeddings.dtype), dropped)
        hidden = self.run_decoder(embeddings, mask, batch.position_ids)
        text_logits = self.text_logits(hidden) if all_logits else hidden.new_zeros(0)
        metrics: dict[str, torch.Tensor] = {}
        losses, residual_pairs = teacher_forced_losses(self, batch, tokens, text_logits if all_logits else None,
                                                       hidden, generator, metrics, reference_text_logits,
                                                       text_kl_weight)
        if all_logits and tokens is not None:
            image_logits = self.image_head(hidden[batch.levels.to(self.device) >= 0])
        else:
            image_logits = hidden.new_zeros(0, self.image_head[1].out_features)
        return UnifiedOutput(text_logits, image_logits, hidden, losses, metrics, residual_pairs)

    # ----- incremental decoding (the generation loop builds on these) -----

    def start_decoding(self, batch: ProcessedBatch, tokens: HybridTokens | None = None
                       ) -> tuple[torch.Tensor, DecodingCache]:
        """Prefill: run a processed prompt batch into a fresh cache; returns its hidden states."""
        if tokens is None and len(batch.pixels):
            tokens = self.image_tokenizer.encode_pixels(batch.pixels.to(self.device))
        cache = empty_cache(batch.input_ids.shape[0], self.device)
        hidden = self.extend(cache, self.embed(batch, tokens), batch.block_ids, batch.padding_mask,
                             batch.visible_until)
        return hidden, cache

    def extend(self, cache: DecodingCache, embeddings: torch.Tensor, block_offsets: torch.Tensor,
               valid: torch.Tensor | None = None, until_offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Feed one chunk per row and update `cache` in place; returns (B, Q, hidden).

        `block_offsets` (B, Q) number the chunk's blocks from 0 (one per text token; one for
        a whole image block); `valid` (B, Q) is False where a row fed fewer positions;
        `until_offsets` (B, Q), on the same numbering, the last block allowed to see each
        position (ProcessedBatch.visible_until: the scale blocks of drawn images). Once a
        limit has passed, the position is hidden from every later chunk.
        """
        batch, length = embeddings.shape[:2]
        embeddings = embeddings.to(self.decoder_dtype)
        block_offsets = block_offsets.to(self.device)
        valid = torch.ones(batch, length, dtype=torch.bool, device=self.device) if valid is None \
            else valid.to(self.device)
        query_blocks = cache.next_block[:, None] + block_offsets
        positions = (cache.next_position[:, None] + valid.long().cumsum(dim=1) - 1).clamp(min=0)
        query_until = None
        if until_offsets is not None:
            until_offsets = until_offsets.to(self.device)
            limited = until_offsets < NO_LIMIT
            query_until = torch.where(limited, cache.next_block[:, None] + until_offsets, until_offsets)
        if length == 1 and bool(valid.all()) and bool(cache.key_visible.all()):
            mask = None  # one new token that may see everything: plain causal attention, SDPA's fast path
        else:
            mask = cache.attention_mask(query_blocks, valid, embeddings.dtype, query_until)
        hidden = self.run_decoder(embeddings, mask, positions, cache.past)
        cache.append(query_blocks, valid)
        if query_until is not None:  # limits that have passed: no later chunk sees those positions
            cache.key_visible[:, -length:] &= query_until >= cache.next_block[:, None]
        return hidden

    def image_block_embeddings(self, level: int, latent_BCHW: torch.Tensor | None, batch_size: int = 1,
                               hint: torch.Tensor | None = None) -> torch.Tensor:
        """(B, s * s, hidden) inputs of one image block.

        Level 0 (the 1x1 first scale) is the learned start vector; scale k > 0 takes the
        running discrete sum at its size (`MultiScaleQuantizer.next_scale_input`); level K,
        the final block, takes the finished latent (discrete sum + residual). A scale block
        adds `hint` (`source_hint`) to its content, as teacher forcing does.
        """
        scales = self.image_tokenizer.config.scales
        if not 0 <= level <= len(scales):
            raise ValueError(f"level must lie in [0, {len(scales)}], got {level}")
        size = scales[min(level, len(scales) - 1)]
        if level == 0:
            content = self.image_embedder.start.expand(batch_size, 1, -1)
        else:
            if latent_BCHW is None or latent_BCHW.shape[-2:] != (size, size):
                got = None if latent_BCHW is None else tuple(latent_BCHW.shape)
                raise ValueError(f"level {level} needs a latent of size {size}x{size}, got {got}")
            content = self.image_embedder.content(latent_BCHW.to(self.device).flatten(2).transpose(1, 2))
        if hint is not None:
            content = content + hint.to(content.dtype)
        centres = (torch.arange(size, device=self.device, dtype=torch.float32) + 0.5) / size
        grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1).view(-1, 2)
        levels = torch.full((size * size,), level, dtype=torch.long, device=self.device)
        return self.image_embedder.combine(content, self.image_embedder.place(levels, grid))

    def text_embeddings(self, ids_BL: torch.Tensor) -> torch.Tensor:
        """(B, L, hidden) decoder inputs of text (and special) token ids."""
        return self.language_model.get_input_embeddings()(ids_BL)

    def residual_condition(self, hidden_BNH: torch.Tensor, codes_BN: torch.Tensor) -> torch.Tensor:
        """What the residual head is conditioned on: the last-scale hidden state plus its chosen code."""
        code_vectors = self.image_tokenizer.quantizer.codebook.weight[codes_BN]
        return hidden_BNH + self.image_embedder.content(code_vectors).to(hidden_BNH.dtype)

    def trainable_state_dict(self) -> dict[str, dict[str, torch.Tensor]]:
        """What differs from the stock backbone, by file."""
        layers = {f"image_embedder.{k}": v for k, v in self.image_embedder.state_dict().items()}
        layers |= {f"image_head.{k}": v for k, v in self.image_head.state_dict().items()}
        layers |= {f"residual_head.{k}": v for k, v in self.residual_head.state_dict().items()}
        if self.config.finetune == "lora":
            # Only the adapters and the trained new token rows: the stock embedding matrix is not copied.
            with self._adapters.wrapped():
                adapters = get_peft_model_state_dict(self.backbone, save_embedding_layers=False)
            return {LAYERS_NAME: layers, ADAPTER_NAME: adapters}
        return {LAYERS_NAME: layers, BACKBONE_WEIGHTS_NAME: self.backbone.state_dict()}

    def save_pretrained(self, directory: str | Path) -> None:
        """Config, image tokenizer, new layers and adapters (or the full backbone after full
        fine-tuning) in safetensors; the stock backbone itself is named, not copied."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, tensors in self.trainable_state_dict().items():
            unique = {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}
            save_file(unique, str(directory / name), metadata={"format": "pt"})
        saved = replace(self.config, vocab_size=len(self.processor), image_tokenizer=IMAGE_TOKENIZER_DIR,
                        image_tokenizer_fingerprint=self.image_tokenizer.fingerprint())
        (directory / CONFIG_NAME).write_text(json.dumps(asdict(saved), indent=2))
        self.image_tokenizer.save_pretrained(directory / IMAGE_TOKENIZER_DIR)
        if self.sampling_defaults:
            sampling_defaults.write(directory, self.sampling_defaults)

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, dtype: torch.dtype = torch.float32,
                        for_training: bool = False) -> UnifiedVLM:
        """Load a folder written by `save_pretrained`; None loads the shipped default model.

        Returned in eval mode with the adapters folded in for speed, or with `for_training` in
        train mode with the adapters never merged, so resumed training continues bit for bit.
        """
        if directory is None and not (DEFAULT_MODEL_PATH / CONFIG_NAME).is_file():
            raise CheckpointError(f"no default model is shipped in this install ({DEFAULT_MODEL_PATH}); "
                                  "pass the folder of a trained model")
        directory = Path(directory) if directory is not None else DEFAULT_MODEL_PATH
        config_path = directory / CONFIG_NAME
        if not config_path.is_file():
            raise CheckpointError(f"'{directory}' is not a hybrid-vlm model folder (no {CONFIG_NAME})")
        try:
            values = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise CheckpointError(f"'{config_path}' is not valid JSON: {error}") from error
        try:
            config = UnifiedVLMConfig.from_dict(values)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"'{config_path}' is not a hybrid-vlm config this version reads: {error}") from error
        if not isinstance(config.vocab_size, int):
            raise CheckpointError(f"'{config_path}' is not a hybrid-vlm config (no vocab_size)")
        defaults = sampling_defaults.read(directory)  # a bad file fails before the backbone loads
        tokenizer_dir = model_tokenizer_folder(directory, config.image_tokenizer)
        if tokenizer_dir is None:
            raise CheckpointError(f"'{directory}' has no {IMAGE_TOKENIZER_DIR}/ folder and names no packaged "
                                  f"tokenizer ({', '.join(PACKAGED_TOKENIZERS)}): '{config.image_tokenizer}'")
        model = cls.from_backbone(config, tokenizer_dir, dtype)
        expected_fingerprint = config.image_tokenizer_fingerprint
        actual_fingerprint = model.image_tokenizer.fingerprint()
        # The all-weights hash of older saves is computed only when the codes' hash does not match.
        if expected_fingerprint not in (None, actual_fingerprint) and (
                expected_fingerprint != model.image_tokenizer.legacy_fingerprint()):
            raise CheckpointError(
                f"'{directory}' was trained on image tokenizer {expected_fingerprint}, but the tokenizer it names "
                f"('{config.image_tokenizer}') is {actual_fingerprint}: its "
                "codes mean something else to this model. Use the tokenizer it was trained with, or retrain it")
        if len(model.processor) != config.vocab_size:
            raise CheckpointError(f"'{directory}' was saved with {config.vocab_size} tokens, but backbone "
                                  f"'{config.backbone}' plus image tokens gives {len(model.processor)}")
        for name, tensors in model.trainable_state_dict().items():
            path = directory / name
            if not path.is_file():
                raise CheckpointError(f"'{directory}' has no {name}")
            try:
                state = load_file(str(path))
            except Exception as error:  # safetensors raises its own error types for corrupt files
                raise CheckpointError(f"'{path}' is not a readable safetensors file: {error}") from error
            mismatched = [key for key, value in tensors.items() if key not in state or state[key].shape != value.shape]
            if mismatched:
                raise CheckpointError(f"'{path}' does not match the model its config builds: {mismatched[:5]}")
            if name == ADAPTER_NAME:
                set_peft_model_state_dict(model.backbone, state)
            elif name == BACKBONE_WEIGHTS_NAME:
                model.backbone.load_state_dict(state)
            else:
                model.load_state_dict(state, strict=False)
        model.sampling_defaults = defaults
        return model if for_training else model.eval().fold_adapters()
