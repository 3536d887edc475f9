"""The processor: chat template with image parts, image layout, block-causal mask, labels.

Uses the real default backbone's text tokenizer (converted once per test session).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from vlm.backbone import cache_keyword
from vlm.image_io import ImageLoadError
from vlm.messages import ConversationError
from vlm.processor import (
    IGNORE_INDEX,
    TEXT_LEVEL,
    VLMProcessor,
    block_causal_mask,
)

SCALES = (1, 2, 3, 4, 6, 8)
GENERATED_LENGTH = sum(size * size for size in SCALES) + 64
RED, BLUE = Image.new("RGB", (10, 10), "red"), Image.new("RGB", (20, 12), "blue")


@pytest.fixture
def processor(default_text_tokenizer):
    return VLMProcessor(copy.deepcopy(default_text_tokenizer), SCALES, 64)


def image_chat():
    return [
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image", "image": RED}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A red square. A blue one:"},
                                          {"type": "image", "image": BLUE}, {"type": "text", "text": "Done."}]},
    ]


def test_user_images_are_final_blocks_and_assistant_images_have_every_scale(processor):
    batch = processor(image_chat())
    user, drawn = batch.images
    assert not user.generated and drawn.generated
    assert batch.pixels.shape == (2, 3, 64, 64)
    levels = batch.levels[0]
    assert levels[user.start:user.start + 64].tolist() == [len(SCALES)] * 64
    assert levels[user.start - 1] == TEXT_LEVEL and levels[user.start + 64] == TEXT_LEVEL
    expected = [level for level, size in enumerate(SCALES) for _ in range(size * size)] + [len(SCALES)] * 64
    assert levels[drawn.start:drawn.start + GENERATED_LENGTH].tolist() == expected
    ids = batch.input_ids[0]
    assert ids[user.start - 1] == processor.image_start_id and ids[user.start + 64] == processor.image_end_id
    assert (ids[drawn.start:drawn.start + GENERATED_LENGTH] == processor.image_token_id).all()
    # Grid centres share the final grid's frame: scale 1's single cell sits in the middle.
    assert batch.grid_positions[0, drawn.start].tolist() == [0.5, 0.5]
    assert batch.grid_positions[0, drawn.start + 1].tolist() == [0.25, 0.25]


def test_labels_cover_assistant_text_only(processor):
    batch = processor(image_chat())
    labels = batch.text_labels[0]
    text = processor.tokenizer.decode(labels[labels != IGNORE_INDEX])
    assert text == "A red square. A blue one:<|image_start|>Done.<|im_end|>\n"
    drawn = batch.images[1]
    assert (labels[drawn.start:drawn.start + GENERATED_LENGTH + 1] == IGNORE_INDEX).all()  # blocks and image_end


def test_a_scale_block_sees_its_own_block_and_nothing_later(processor):
    batch = processor(image_chat())
    allowed = batch.attention_mask()[0, 0] == 0
    start = batch.images[1].start
    offsets = [0]
    for size in SCALES:
        offsets.append(offsets[-1] + size * size)
    offsets.append(offsets[-1] + 64)
    for level in range(len(SCALES) + 1):
        block = range(start + offsets[level], start + offsets[level + 1])
        for query in (block[0], block[-1]):
            assert allowed[query, :start].all()  # everything before the image
            assert allowed[query, block[0]:block[-1] + 1].all()  # all of its own block
            assert not allowed[query, block[-1] + 1:].any()  # nothing later
            if level == len(SCALES):  # the final block reads the image like an upload: no scale blocks
                assert not allowed[query, start:block[0]].any()
            else:
                assert allowed[query, start:block[0]].all()  # earlier scales of the same image


def test_an_edit_conversation_conditions_the_new_image_on_the_source_final_block(processor):
    """Issue 9: the source image (an upload) enters as its final block, before the new image's
    scale blocks, which see it; only the new image's text and codes are trained."""
    source = np.zeros((16, 16, 3), dtype=np.uint8)
    conversation = [
        {"role": "user", "content": [{"type": "image", "image": source},
                                     {"type": "text", "text": "Make the square blue."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Here:"}, {"type": "image", "image": source}]},
    ]
    batch = processor(conversation)
    upload, drawn = batch.images
    assert not upload.generated and drawn.generated
    upload_final = range(upload.start, upload.start + 64)
    assert upload_final[-1] < drawn.start
    assert (batch.levels[0, upload.start:upload.start + 64] == len(SCALES)).all()  # final block only
    allowed = batch.attention_mask()[0, 0] == 0
    for scale_position in (drawn.start, drawn.start + GENERATED_LENGTH - 65):
        assert allowed[scale_position, upload_final[0]:upload_final[-1] + 1].all()
    labels = batch.text_labels[0]
    assert processor.tokenizer.decode(labels[labels != IGNORE_INDEX]) == "Here:<|image_start|><|im_end|>\n"
    assert (labels[:drawn.start] != IGNORE_INDEX).sum() == len(processor.tokenizer("Here:<|image_start|>",
                                                                                 add_special_tokens=False)["input_ids"])


def test_text_after_an_image_sees_its_final_block(processor):
    batch = processor(image_chat())
    allowed = batch.attention_mask()[0, 0] == 0
    drawn = batch.images[1]
    image_end = drawn.start + GENERATED_LENGTH
    final_block = range(image_end - 64, image_end)
    assert allowed[image_end, final_block[0]:final_block[-1] + 1].all()
    # Everything after the image reads it through its final block: its scale blocks are hidden.
    assert allowed[image_end + 1, :drawn.start].all() and not allowed[image_end + 1, drawn.start:final_block[0]].any()
    assert allowed[image_end + 1, final_block[0]:image_end + 2].all()
    assert not allowed[image_end + 1, image_end + 2:].any()
    # Causal text: a text token sees itself and the past only.
    assert allowed[3, :4].all() and not allowed[3, 4:].any()


def test_incremental_mask_for_new_positions_matches_the_full_mask(processor):
    batch = processor(image_chat())
    full = batch.attention_mask()
    start = batch.images[1].start + 1  # the scale-2 block: 4 new positions over a cache of `start`
    new = slice(start, start + 4)
    incremental = block_causal_mask(batch.block_ids[:, new], batch.block_ids[:, :start + 4],
                                    batch.padding_mask[:, :start + 4], key_until=batch.visible_until[:, :start + 4])
    assert torch.equal(incremental, full[:, :, new, :start + 4])


def test_batches_are_right_padded_and_pads_are_never_attended(processor):
    short = [{"role": "user", "content": "hi"}]
    batch = processor([image_chat(), short])
    assert batch.padding_mask[1].sum() < batch.padding_mask[0].sum() == batch.input_ids.shape[1]
    allowed = batch.attention_mask()[1, 0] == 0
    real = int(batch.padding_mask[1].sum())
    assert not allowed[:real, real:].any()
    assert [layout.sequence_index for layout in batch.images] == [0, 0]


def test_generation_prompt_is_appended_without_labels(processor):
    batch = processor([{"role": "user", "content": "Draw a cat"}], add_generation_prompt=True)
    ids = batch.input_ids[0].tolist()
    assert processor.tokenizer.decode(ids).endswith("<|im_start|>user\nDraw a cat<|im_end|>\n<|im_start|>assistant\n")
    assert (batch.text_labels == IGNORE_INDEX).all()


@pytest.mark.parametrize(
    "conversation, message",
    [
        ([{"role": "robot", "content": "hi"}], "message 0 has role 'robot'"),
        ([{"role": "user", "content": []}], "message 0 \\(user\\) has no content parts"),
        ([{"role": "user", "content": [{"type": "video"}]}], "type must be 'text' or 'image'"),
        ([{"role": "user", "content": [{"type": "image"}]}], "needs 'image' or 'path'"),
        ([{"role": "user", "content": "a <|image|> b"}], "text may not contain"),
        ([{"content": "hi"}], "must be a dict with 'role' and 'content'"),
        ([[]], "conversation 0 is empty"),
    ],
)
def test_malformed_conversations_name_the_problem(processor, conversation, message):
    with pytest.raises(ConversationError, match=message):
        processor(conversation)


def test_a_corrupt_image_file_is_named(processor, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_text("not a png")
    with pytest.raises(ImageLoadError, match="broken.png"):
        processor([{"role": "user", "content": [{"type": "image", "path": str(bad)}]}])


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_hf_backbone_honours_the_block_mask_with_and_without_a_cache(attention):
    """The mechanism the unified decoder relies on: HF Llama takes our 4-D mask as given,
    and appending blocks to a DynamicCache gives the full forward's logits."""
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_implementation=attention)
    model = LlamaForCausalLM(config).eval()
    blocks = torch.tensor([[0, 1, 2, 3, 3, 3, 3, 4, 4, 5, 6, 7]])  # text, a 4-block, a 2-block, text
    padding = torch.ones_like(blocks, dtype=torch.bool)
    embeddings = torch.randn(1, 12, 32)
    positions = torch.arange(12)[None]
    with torch.no_grad():
        full = model(inputs_embeds=embeddings, attention_mask=block_causal_mask(blocks, blocks, padding),
                     position_ids=positions).logits
        causal = model(inputs_embeds=embeddings, position_ids=positions).logits
        cache, pieces = DynamicCache(), []
        for start, end in [(0, 3), (3, 7), (7, 9), (9, 12)]:
            mask = block_causal_mask(blocks[:, start:end], blocks[:, :end], padding[:, :end])
            output = model(inputs_embeds=embeddings[:, start:end], attention_mask=mask,
                           position_ids=positions[:, start:end], use_cache=True, **{cache_keyword(model): cache})
            pieces.append(output.logits)  # the cache grew in place
    assert (torch.cat(pieces, 1) - full).abs().max() < 1e-5
    assert (causal - full).abs().max() > 1e-4  # the block mask really changed something
    assert torch.allclose(causal[:, :3], full[:, :3], atol=1e-6)  # ...and not the text before the block


def test_training_skips_only_the_final_block_of_a_drawing_that_ends_its_conversation(processor):
    ends_with_drawing = [{"role": "user", "content": [{"type": "image", "image": RED},
                                                      {"type": "text", "text": "Draw it blue."}]},
                         {"role": "assistant", "content": [{"type": "text", "text": "Here:"},
                                                           {"type": "image", "image": BLUE}]}]
    full = processor(ends_with_drawing)
    lean = processor(ends_with_drawing, skip_unread_final_blocks=True)
    assert full.input_ids.shape[1] - lean.input_ids.shape[1] == 64
    (user, drawn) = lean.images
    assert user.final_block and not drawn.final_block and drawn.generated
    scale_positions = GENERATED_LENGTH - 64
    expected = [level for level, size in enumerate(SCALES) for _ in range(size * size)]
    assert lean.levels[0, drawn.start:drawn.start + scale_positions].tolist() == expected
    assert lean.input_ids[0, drawn.start + scale_positions] == processor.image_end_id
    # The same text, the same labels: only the 64 positions are gone.
    kept = torch.cat([torch.arange(drawn.start + scale_positions),
                      torch.arange(drawn.start + GENERATED_LENGTH, full.input_ids.shape[1])])
    assert torch.equal(full.input_ids[0, kept], lean.input_ids[0])
    assert torch.equal(full.text_labels[0, kept], lean.text_labels[0])
    # Scale blocks stay visible to their own scale blocks only; what follows cannot see them.
    mask = lean.attention_mask()[0, 0]
    end = drawn.start + scale_positions
    assert (mask[drawn.start + 1, drawn.start] == 0) and (mask[end, drawn.start:end] < 0).all()
    # A drawing that later text reads keeps its final block; so does every image of a generation prompt.
    assert all(layout.final_block for layout in processor(image_chat(), skip_unread_final_blocks=True).images)
    prompt = processor(ends_with_drawing, add_generation_prompt=True, skip_unread_final_blocks=True)
    assert all(layout.final_block for layout in prompt.images)
