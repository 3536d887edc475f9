"""The interleaved generation loop on a tiny random model.

Where a test needs the model to choose particular text tokens (an image here, the end of
the turn there), it biases the text logits with a script; everything else (the cache,
the scale-by-scale drawing, guidance, the residual head, decoding) is the real loop.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from generation import Done, GenerationConfig, ImageFinished, ScalePreview, TextDelta, generate
from generation.events import CANCELLED, END_OF_TURN, MAX_IMAGES, MAX_TOKENS, STOP_STRING
from generation.loop import stream_generate
from generation.reply import collect
from generation.sampling import guide
from generation.timing import StageTimer
from tests.tiny_vlm import perturbed, tiny_model
from vlm.backbone import bf16_is_fast, resolve_dtype
from vlm.decoding_cache import empty_cache
from vlm.messages import ConversationError
from vlm.tokenizer import HybridTokens
from vlm.unified_model import UnifiedVLM

CHAT = [{"role": "user", "content": "Draw a red circle, please."}]


@pytest.fixture
def model(tiny_parts):
    return perturbed(tiny_model(tiny_parts))


def script(model, tokens: list[int]) -> None:
    """Make the text head choose `tokens`, one per step (every row the same)."""
    original = type(model).text_logits.__get__(model)  # the real head, even if already scripted
    steps = iter(tokens)

    def scripted(hidden):
        logits = original(hidden)
        chosen = torch.full_like(logits, -1e4)
        chosen[..., next(steps)] = 0.0
        return chosen

    model.text_logits = scripted


def kinds(events) -> list[str]:
    return [type(event).__name__ for event in events]


def text_ids(model, text: str) -> list[int]:
    return model.processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def eos(model) -> int:
    return model.processor.tokenizer.eos_token_id


def test_a_text_only_reply_streams_deltas_then_done(model):
    words = text_ids(model, " a small red circle")
    script(model, words + [eos(model)])
    events = list(stream_generate(model, CHAT, GenerationConfig(seed=0)))
    assert set(kinds(events[:-1])) == {"TextDelta"}
    assert events[-1] == Done(0, END_OF_TURN)
    assert "".join(event.text for event in events[:-1]) == " a small red circle"
    assert sum((event.token_ids for event in events[:-1]), []) == words


def test_text_then_an_image_then_text(model):
    start = model.processor.image_start_id
    script(model, text_ids(model, " Here:") + [start] + text_ids(model, " done") + [eos(model)])
    events = list(stream_generate(model, CHAT, GenerationConfig(seed=0, previews=True)))
    order = kinds(events)
    first_image = order.index("ImageStarted")
    assert set(order[:first_image]) == {"TextDelta"}
    assert order[first_image + 1:first_image + 6] == ["ScalePreview"] * 5  # one per scale of the tiny tokenizer
    finished = next(event for event in events if isinstance(event, ImageFinished))
    assert finished.image.size == (32, 32)
    assert [tuple(codes.shape) for codes in finished.tokens.codes] == [(1, s, s) for s in (1, 2, 3, 5, 8)]
    assert finished.tokens.residual.shape == (1, 8, 8, 8)
    after = [event.text for event in events[events.index(finished):] if isinstance(event, TextDelta)]
    assert "".join(after) == " done"
    assert events[-1] == Done(0, END_OF_TURN)


def test_several_images_in_one_answer_and_the_image_limit(model):
    start = model.processor.image_start_id
    plan = [start] + text_ids(model, " and") + [start, eos(model)]
    script(model, plan)
    replies = generate(model, CHAT, GenerationConfig(seed=0, max_images=2))
    assert [part["type"] for part in replies[0].parts] == ["image", "text", "image"]
    assert replies[0].reason == END_OF_TURN
    script(model, plan)
    replies = generate(model, CHAT, GenerationConfig(seed=0, max_images=1))
    assert len(replies[0].images) == 1 and replies[0].reason == MAX_IMAGES


def test_a_forced_image_comes_first(model):
    events = list(stream_generate(model, CHAT, GenerationConfig(seed=0, force_image=True, max_new_tokens=0)))
    # The image is drawn before any text, and it does not spend the text budget: with no text
    # tokens allowed, the reply is that image and then the budget ends it.
    assert kinds(events) == ["ImageStarted", "ImageFinished", "Done"]
    assert events[-1].reason == MAX_TOKENS


def test_max_new_tokens_and_stop_strings_end_the_reply(model):
    script(model, text_ids(model, " one two three four five six"))
    reply = generate(model, CHAT, GenerationConfig(seed=0, max_new_tokens=3))[0]
    assert reply.reason == MAX_TOKENS and reply.text == " one two three"
    script(model, text_ids(model, " one two three four five six"))
    reply = generate(model, CHAT, GenerationConfig(seed=0, stop_strings=("three",)))[0]
    assert reply.reason == STOP_STRING and reply.text == " one two "


def test_same_seed_same_output_other_seed_other_output(model):
    def run(seed):
        config = GenerationConfig(seed=seed, force_image=True, max_new_tokens=6, temperature=1.0)
        return generate(model, CHAT, config)[0]

    first, again, other = run(3), run(3), run(4)
    assert first.text == again.text
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))
    assert all(torch.equal(a, b) for a, b in zip(first.image_tokens[0].codes, again.image_tokens[0].codes))
    assert not all(torch.equal(a, b) for a, b in zip(first.image_tokens[0].codes, other.image_tokens[0].codes))


def test_cfg_scale_one_is_conditional_only_and_larger_scales_guide(model):
    def greedy_codes_and_logits(cfg_scale):
        seen = {"image": [], "image_guided": []}
        config = GenerationConfig(seed=0, force_image=True, max_new_tokens=0, cfg_scale=cfg_scale,
                                  image_temperature=0.0)
        events = list(stream_generate(model, CHAT, config, logits_hook=lambda kind, x: seen.get(kind, []).append(x)))
        tokens = next(event for event in events if isinstance(event, ImageFinished)).tokens
        return tokens.codes, seen

    codes, seen = greedy_codes_and_logits(1.0)
    assert not seen["image_guided"]  # no unconditional branch runs at all
    for scale_codes, conditional in zip(codes, seen["image"]):
        assert torch.equal(scale_codes.flatten(), conditional.argmax(-1).flatten())
    codes, seen = greedy_codes_and_logits(4.0)
    for scale_codes, guided in zip(codes, seen["image_guided"]):
        assert torch.equal(scale_codes.flatten(), guided.argmax(-1).flatten())
    assert any(not torch.equal(g.argmax(-1), c.argmax(-1)) for g, c in zip(seen["image_guided"], seen["image"]))
    conditional, unconditional = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(guide(conditional, unconditional, 0.0), conditional)


def test_the_residual_noise_has_its_own_stream_so_codes_do_not_depend_on_residual_steps(model):
    """After a drawn image the main stream is where it would be without residual steps, so the
    codes drawn next (another row's, the next image's) come from the same numbers."""
    from generation.loop import InterleavedGenerator

    states, codes = {}, {}
    for steps in (0, 2):
        loop = InterleavedGenerator(model, GenerationConfig(seed=3, force_image=True, max_new_tokens=0,
                                                            residual_steps=steps))
        replies = collect(loop.stream([CHAT]))
        states[steps] = loop.generator.get_state()
        codes[steps] = replies[0].image_tokens[0].codes
    assert torch.equal(states[0], states[2])
    assert all(torch.equal(a, b) for a, b in zip(codes[0], codes[2]))


def test_zero_residual_steps_is_discrete_only_decoding(model):
    config = GenerationConfig(seed=0, force_image=True, max_new_tokens=0, residual_steps=0)
    reply = generate(model, CHAT, config)[0]
    tokens = reply.image_tokens[0]
    assert torch.count_nonzero(tokens.residual) == 0
    expected = model.image_tokenizer.decode_to_images(tokens, use_residual=False)[0]
    assert np.array_equal(np.asarray(reply.images[0]), np.asarray(expected))
    with_residual = generate(model, CHAT, GenerationConfig(seed=0, force_image=True, max_new_tokens=0))[0]
    assert torch.count_nonzero(with_residual.image_tokens[0].residual) > 0


def test_cached_logits_inside_generation_match_a_full_forward(model):
    seen = {"text": [], "image": []}
    config = GenerationConfig(seed=0, force_image=True, max_new_tokens=1, temperature=0.0, cfg_scale=3.0)
    events = list(stream_generate(model, CHAT, config, logits_hook=lambda kind, x: seen.get(kind, []).append(x)))
    finished = next(event for event in events if isinstance(event, ImageFinished))
    conversation = CHAT + [{"role": "assistant", "content": [{"type": "image", "image": finished.image}]}]
    batch = model.processor(conversation)
    with torch.no_grad():
        output = model(batch, finished.tokens)
    full_image_logits = output.image_logits[:sum(s * s for s in model.image_tokenizer.config.scales)]
    cached_image_logits = torch.cat([logits.flatten(0, 1) for logits in seen["image"]])
    assert (full_image_logits - cached_image_logits).abs().max() < 1e-4
    image_end = batch.input_ids[0].tolist().index(model.processor.image_end_id)
    # seen["text"][0] chose the forced <|image_start|>; [1] is the first text choice after the image.
    assert (output.text_logits[0, image_end] - seen["text"][1][0]).abs().max() < 1e-4


def test_n_images_for_one_prompt_in_one_batched_run(model):
    config = GenerationConfig(seed=0, force_image=True, max_new_tokens=2, num_sequences=3, temperature=1.0)
    replies = generate(model, CHAT, config)
    assert len(replies) == 3 and all(len(reply.images) == 1 for reply in replies)
    codes = [torch.cat([c.flatten() for c in reply.image_tokens[0].codes]) for reply in replies]
    assert not (torch.equal(codes[0], codes[1]) and torch.equal(codes[1], codes[2]))


def test_a_ragged_batch_draws_what_each_conversation_draws_alone(model):
    """Conversations of different lengths drawn in one batch (left-padded rows, guidance's blind
    rows beside them) give each the image it gets alone: greedy codes, no residual noise."""
    longer = CHAT[:1] + [{"role": "assistant", "content": "Sure, what colour?"},
                         {"role": "user", "content": "A green one, on the left, please."}]
    config = GenerationConfig(seed=0, force_image=True, max_new_tokens=0, cfg_scale=3.0, image_temperature=0.0,
                              residual_steps=0)
    together = generate(model, [CHAT, longer], config)
    for conversation, reply in zip((CHAT, longer), together):
        alone = generate(model, conversation, config)[0]
        for scale, (batched, single) in enumerate(zip(reply.image_tokens[0].codes, alone.image_tokens[0].codes)):
            assert torch.equal(batched, single), f"scale {scale + 1}"
        assert np.abs(np.asarray(reply.images[0], dtype=int) - np.asarray(alone.images[0], dtype=int)).max() <= 1


def _candidates_seen(model, conversations, config):
    """Generate, recording every candidate's conditional code logits and sampled codes per scale."""
    logits, codes = [], []

    def keep_codes(rows, scale_index, sampled):
        codes.append(sampled.clone())
        return sampled

    replies = collect(stream_generate(model, conversations, config, code_hook=keep_codes, logits_hook=lambda kind, x: (
        logits.append(x) if kind == "image" else None)))
    return replies, logits, codes


def test_image_candidates_keep_the_candidate_the_model_finds_likeliest(model):
    """N candidates are drawn in one batched run; each row keeps the one whose codes have the
    highest conditional log-likelihood, and that likelihood is the one a full forward reads."""
    longer = CHAT[:1] + [{"role": "assistant", "content": "Sure, what colour?"},
                         {"role": "user", "content": "A green one, on the left, please."}]
    config = GenerationConfig(seed=5, force_image=True, max_new_tokens=2, cfg_scale=3.0, temperature=1.0,
                              residual_steps=0, image_candidates=3)
    replies, logits, codes = _candidates_seen(model, [CHAT, longer], config)
    assert [scale_codes.shape[0] for scale_codes in codes] == [6] * len(codes)  # 3 candidates x 2 rows
    likelihood = sum(torch.log_softmax(scale_logits.float(), -1).gather(-1, scale_codes.flatten(1)[..., None])[
        ..., 0].sum(-1) for scale_logits, scale_codes in zip(logits, codes))
    assert len(set(likelihood.tolist())) == 6  # the candidates differ
    count = sum(s * s for s in model.image_tokenizer.config.scales)
    for row, (conversation, reply) in enumerate(zip((CHAT, longer), replies)):
        best = int(likelihood.view(3, 2)[:, row].argmax()) * 2 + row
        kept = reply.image_tokens[0]
        assert all(torch.equal(k[0], c[best]) for k, c in zip(kept.codes, codes))
        for candidate in range(3):  # every candidate was drawn seeing the whole conversation
            position = candidate * 2 + row
            tokens = HybridTokens([c[position:position + 1] for c in codes], torch.zeros_like(kept.residual))
            batch = model.processor(conversation + [{"role": "assistant", "content": [
                {"type": "image", "image": reply.images[0]}]}])
            with torch.no_grad():
                forced = model(batch, tokens).image_logits[:count]
            flat = torch.cat([c[position].flatten() for c in codes])
            read = torch.log_softmax(forced.float(), -1).gather(-1, flat[:, None]).sum().item()
            assert read == pytest.approx(likelihood[position].item(), abs=1e-2), f"row {row}, candidate {candidate}"


def test_one_image_candidate_is_plain_drawing_and_more_cost_only_drawing(model):
    """image_candidates=1 draws exactly as before; with N > 1 the text after the image reads the kept
    image (the same text a reply that drew that image once would write)."""
    base = GenerationConfig(seed=2, force_image=True, max_new_tokens=4, temperature=0.0, residual_steps=0)
    plain = generate(model, CHAT, base)[0]
    once = generate(model, CHAT, GenerationConfig(**{**base.__dict__, "image_candidates": 1}))[0]
    assert all(torch.equal(a, b) for a, b in zip(plain.image_tokens[0].codes, once.image_tokens[0].codes))
    assert plain.text == once.text
    several = generate(model, CHAT, GenerationConfig(**{**base.__dict__, "image_candidates": 2,
                                                        "image_temperature": 1.0}))[0]
    kept = several.image_tokens[0]

    def forced_codes(rows, scale_index, sampled):
        return kept.codes[scale_index].expand_as(sampled).clone()

    again = collect(stream_generate(model, CHAT, GenerationConfig(**{**base.__dict__, "image_temperature": 1.0}),
                                    code_hook=forced_codes))[0]
    assert again.text == several.text
    with pytest.raises(ValueError, match="image_candidates must be >= 1"):
        GenerationConfig(image_candidates=0)


def test_image_candidates_stream_previews_of_each_row_s_leader(model):
    config = GenerationConfig(seed=1, force_image=True, max_new_tokens=0, previews=True, image_candidates=3,
                              residual_steps=0)
    events = list(stream_generate(model, [CHAT, CHAT], config))
    previews = [event for event in events if isinstance(event, ScalePreview)]
    scales = len(model.image_tokenizer.config.scales)
    assert sorted((event.sequence, event.scale_index) for event in previews) == sorted(
        (row, scale) for row in (0, 1) for scale in range(scales))
    finished = {event.sequence: event.image for event in events if isinstance(event, ImageFinished)}
    for event in previews:  # the last scale's preview of the leader is the image kept (no residual here)
        if event.scale_index == scales - 1:
            assert event.image.tobytes() == finished[event.sequence].tobytes()


def test_cancelling_from_another_thread_stops_within_one_forward(model):
    cancel = threading.Event()
    forwards = {"after_cancel": 0}
    original_extend = model.extend

    def counted_extend(*args, **kwargs):
        if cancel.is_set():
            forwards["after_cancel"] += 1
        return original_extend(*args, **kwargs)

    model.extend = counted_extend
    events = []

    def consume():
        for event in stream_generate(model, CHAT, GenerationConfig(seed=0, force_image=True, previews=True), cancel):
            events.append(event)
            if isinstance(event, ScalePreview) and event.scale_index == 1:
                threading.Thread(target=cancel.set).start()
                assert cancel.wait(timeout=10)  # resume only once the other thread has cancelled

    worker = threading.Thread(target=consume)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert forwards["after_cancel"] == 0  # the loop checks before every forward
    assert events[-1] == Done(0, CANCELLED)
    assert not any(isinstance(event, ImageFinished) for event in events)


def test_bad_requests_raise_clear_errors(model):
    with pytest.raises(ConversationError, match="empty"):
        list(stream_generate(model, [], GenerationConfig()))
    with pytest.raises(ValueError, match="temperature"):
        GenerationConfig(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        GenerationConfig(top_p=0)
    with pytest.raises(ValueError, match="image_top_k has 2 values"):
        generate(model, CHAT, GenerationConfig(force_image=True, image_top_k=(10, 20), max_new_tokens=0))
    with pytest.raises(ConversationError, match="role"):
        list(stream_generate(model, [{"role": "robot", "content": "hi"}]))


def test_reply_tokens_round_trip_into_the_next_turn(model):
    reply = generate(model, CHAT, GenerationConfig(seed=0, force_image=True, max_new_tokens=3))[0]
    assert isinstance(reply.image_tokens[0], HybridTokens)
    follow_up = CHAT + [reply.as_dict(), {"role": "user", "content": "Now make it blue."}]
    # The next turn reads the drawn image as history: its pixels, laid out as a read image
    # (final block only, no scale blocks to predict).
    batch = model.processor(follow_up, add_generation_prompt=True)
    assert len(batch.images) == 1 and not batch.images[0].generated
    torch.testing.assert_close(batch.pixels[0], model.processor(CHAT + [reply.as_dict()]).pixels[0])
    final_block = model.image_tokenizer.config.scales[-1] ** 2
    assert int((batch.levels[0] >= 0).sum()) == final_block
    words = text_ids(model, " it is blue")
    script(model, words + [eos(model)])
    again = generate(model, follow_up, GenerationConfig(seed=1, max_images=0))[0]
    assert again.text == " it is blue" and again.reason == END_OF_TURN and not again.images


def test_returned_tokens_are_ordinary_tensors_usable_for_training(model):
    tokens = generate(model, CHAT, GenerationConfig(seed=0, force_image=True, max_new_tokens=0))[0].image_tokens[0]
    assert not tokens.residual.is_inference() and not tokens.codes[0].is_inference()
    weight = torch.ones(1, requires_grad=True)
    (tokens.residual * weight).sum().backward()  # would fail for inference-mode tensors
    assert weight.grad is not None


def test_blind_rows_see_only_what_they_are_fed_like_a_cache_of_their_own(model):
    """Guidance's unconditional branch rides in the conditional rows' forward as blind rows;
    they must compute what a separate, empty cache at the same position computes."""
    batch = model.processor([CHAT, CHAT[:1] + [{"role": "assistant", "content": "Sure."},
                                               {"role": "user", "content": "Another one."}]],
                            add_generation_prompt=True)
    chunk = torch.randn(1, 5, model.config.residual_head.condition_channels)
    offsets = torch.zeros(1, 5, dtype=torch.long)
    with torch.no_grad():
        _, cache = model.start_decoding(batch)
        separate = empty_cache(cache.batch_size, model.device)
        separate.next_position, separate.next_block = cache.next_position.clone(), cache.next_block.clone()
        expected = model.extend(separate.select(torch.tensor([1])), chunk, offsets)
        before = cache.length
        blind = cache.add_blind_rows(torch.tensor([1]))
        assert blind.tolist() == [2] and cache.batch_size == 3
        hidden = model.extend(cache, chunk.expand(3, -1, -1), offsets.expand(3, -1))
        torch.testing.assert_close(hidden[2], expected[0], rtol=0, atol=1e-5)
        assert not torch.allclose(hidden[1], hidden[2], atol=1e-3)  # the row itself still sees its prompt
        cache.drop_rows_from(2)
    assert cache.batch_size == 2 and cache.length == before + 5
    assert all(layer.keys.shape[0] == 2 for layer in cache.past.layers)


def test_condition_dropout_shows_a_drawing_what_the_unconditional_branch_sees(model):
    """A drawing whose condition training drops sees only its own <|image_start|> and blocks;
    guidance's unconditional rows at inference must compute the same hidden states, or the
    guidance would push away from something training never showed."""
    from tests.tiny_vlm import drawing_chat
    from vlm.messages import IMAGE_START
    from vlm.next_scale import ImageDrawing
    from vlm.teacher_forcing import blind_drawings, dropped_drawings

    user, answer = drawing_chat()[:2]
    drawing = [user, {"role": "assistant", "content": [part for part in answer["content"] if part["type"] == "image"]}]
    batch = model.processor(drawing)
    model.config.condition_dropout = 1.0
    size = model.image_tokenizer.config.scales[0] ** 2
    with torch.no_grad():
        embeddings = model.embed(batch, model.image_tokenizer.encode_pixels(batch.pixels))
        mask = batch.attention_mask(embeddings.dtype)
        blind = blind_drawings(model, batch, mask, dropped_drawings(model, batch, None))
        dropped = model.run_decoder(embeddings, blind, batch.position_ids)
        kept = model.run_decoder(embeddings, mask, batch.position_ids)
        start = batch.images[0].start
        prompt = model.processor(drawing[:-1], add_generation_prompt=True)
        _, cache = model.start_decoding(prompt)
        assert cache.length == start - 1  # the drawing starts right after the generation prompt
        rows = torch.tensor([0])
        cache.add_blind_rows(rows)
        image_start = torch.tensor([[model.processor.tokenizer.convert_tokens_to_ids(IMAGE_START)]])
        chunk = torch.cat([model.text_embeddings(image_start), ImageDrawing(model, 1).block_inputs()], dim=1)
        offsets = torch.tensor([[0] + [1] * size])
        inferred = model.extend(cache, chunk.repeat(2, 1, 1), offsets.repeat(2, 1))[:, -size:]
    torch.testing.assert_close(inferred[1], dropped[0, start:start + size], rtol=0, atol=1e-4)  # unconditional
    torch.testing.assert_close(inferred[0], kept[0, start:start + size], rtol=0, atol=1e-4)  # conditional
    assert not torch.allclose(inferred[0], inferred[1], atol=1e-3)


def test_the_stage_timer_sees_every_stage_and_changes_nothing(model):
    config = GenerationConfig(seed=3, force_image=True, max_new_tokens=0, cfg_scale=3.0)
    timer = StageTimer()
    timed = collect(stream_generate(model, CHAT, config, timer=timer))[0]
    plain = generate(model, CHAT, config)[0]
    assert np.array_equal(np.asarray(timed.images[0]), np.asarray(plain.images[0]))
    scales = model.image_tokenizer.config.scales
    expected = {f"scale {index + 1} forward" for index in range(len(scales))} | {
        "image head", "sampling", "residual head", "decode pixels", "final block forward"}
    assert expected <= set(timer.seconds) and all(timer.seconds[name] > 0 for name in expected)
    assert timer.calls["image head"] == len(scales)


def test_a_drawn_image_is_sent_before_its_final_block_is_fed_back(model):
    """The user sees the image one forward sooner; the text after it still reads its final block."""
    config = GenerationConfig(seed=3, force_image=True, max_new_tokens=0, cfg_scale=3.0)
    timer = StageTimer()
    seen_at_image = None
    for event in stream_generate(model, CHAT, config, timer=timer):
        if isinstance(event, ImageFinished):
            seen_at_image = dict(timer.calls)
    assert seen_at_image is not None and seen_at_image.get("decode pixels") == 1
    assert "final block forward" not in seen_at_image and timer.calls["final block forward"] == 1


def test_a_bfloat16_backbone_draws_and_writes_close_to_float32(model, tmp_path):
    """`--dtype bfloat16` loads the backbone's weights in bf16 (half the bytes per pass); the
    heads and the tokenizer stay fp32, and what the model predicts stays close."""
    model.save_pretrained(tmp_path / "model")
    config = GenerationConfig(seed=0, force_image=True, max_new_tokens=3, cfg_scale=3.0, image_temperature=0.0)
    first_scale = {}
    for dtype in (torch.float32, torch.bfloat16):
        loaded = UnifiedVLM.from_pretrained(tmp_path / "model", dtype=dtype)
        assert loaded.decoder_dtype == dtype and loaded.image_head[1].weight.dtype == torch.float32
        seen = {"image": []}
        reply = collect(stream_generate(loaded, CHAT, config,
                                        logits_hook=lambda kind, x, seen=seen: seen.get(kind, []).append(x)))[0]
        assert len(reply.images) == 1
        first_scale[dtype] = seen["image"][0].flatten().float()
    similarity = torch.nn.functional.cosine_similarity(first_scale[torch.float32], first_scale[torch.bfloat16], dim=0)
    assert similarity > 0.99


def test_dtype_names_resolve_and_auto_follows_the_hardware():
    assert resolve_dtype("float32") == torch.float32 and resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_dtype("auto") == (torch.bfloat16 if bf16_is_fast() else torch.float32)
    with pytest.raises(ValueError, match="float16"):
        resolve_dtype("float16")
