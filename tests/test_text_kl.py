"""The text KL term: the stock backbone (adapters off) as the teacher of text-only chats."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from tests.tiny_vlm import drawing_chat, tiny_model
from training.data import DataError
from training.train import main as train_main
from vlm.teacher_forcing import reference_text_logits, text_kl

CHATS = [
    [{"role": "user", "content": "What is a good name for a cat?"},
     {"role": "assistant", "content": "Whiskers is a classic, and Miso is a sweet one."}],
    [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello there!"}],
]


def moved(model):
    """The LoRA adapters moved off zero (the backbone itself untouched)."""
    with torch.no_grad():
        for name, parameter in model.backbone.named_parameters():
            if "lora_" in name:
                parameter.add_(torch.randn_like(parameter) * 0.3)
    return model


def test_the_kl_is_zero_at_the_stock_weights_and_pulls_moved_adapters_back(tiny_parts):
    model = tiny_model(tiny_parts).train()
    batch = model.processor(CHATS)
    reference = reference_text_logits(model, batch)
    assert reference.shape[0] == int((batch.text_labels[:, 1:] != -100).sum())
    fresh = model(batch, all_logits=False, reference_text_logits=reference, text_kl_weight=1.0).losses
    assert float(fresh["text_kl"]) == pytest.approx(0.0, abs=1e-5)  # LoRA starts as the identity

    moved(model)
    assert torch.equal(reference_text_logits(model, batch), reference)  # the reference ignores the adapters
    adapters = [parameter for name, parameter in model.named_parameters() if "lora_" in name]
    optimizer = torch.optim.Adam(adapters, lr=1e-2)
    start = None
    for _ in range(40):
        losses = model(batch, all_logits=False, reference_text_logits=reference, text_kl_weight=1.0).losses
        start = float(losses["text_kl"]) if start is None else start
        optimizer.zero_grad()
        losses["text_kl"].backward()
        optimizer.step()
    assert start > 0.01
    assert float(losses["text_kl"]) < 0.6 * start
    weighted = model(batch, all_logits=False, reference_text_logits=reference, text_kl_weight=2.0).losses
    assert float(weighted["total"]) == pytest.approx(2 * float(weighted["text_kl"]), rel=1e-5)  # KL replaces CE


def test_the_reference_refuses_images_full_fine_tuning_and_mismatched_positions(tiny_parts):
    model = tiny_model(tiny_parts)
    with pytest.raises(ValueError, match="text-only"):
        reference_text_logits(model, model.processor([drawing_chat()]))
    with pytest.raises(ValueError, match="finetune 'lora'"):
        reference_text_logits(tiny_model(tiny_parts, finetune="full"), model.processor(CHATS))
    with pytest.raises(ValueError, match="do not match"):
        text_kl(torch.zeros(3, 10), torch.zeros(4, 10))


def test_the_kl_is_the_references_expected_log_ratio_per_position():
    logits, reference = torch.randn(5, 7), torch.randn(5, 7) * 2
    p, log_q = reference.softmax(-1), logits.log_softmax(-1)
    expected = (p * (p.log() - log_q)).sum(-1).mean()  # KL(reference || model), not the reverse
    assert float(text_kl(logits, reference)) == pytest.approx(float(expected), rel=1e-5)
    reverse = (log_q.exp() * (log_q - p.log())).sum(-1).mean()
    assert float(text_kl(logits, reference)) != pytest.approx(float(reverse), rel=1e-3)


def write_mix(folder, shapes_lines):
    text = folder / "text.jsonl"
    text.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in CHATS * 4))
    shapes = folder / "shapes.jsonl"
    shapes.write_text(shapes_lines)
    mix = folder / "mix.yaml"
    mix.write_text("sources:\n- path: text.jsonl\n  weight: 1\n- path: shapes.jsonl\n  weight: 1\n")
    return mix


@pytest.mark.slow
def test_a_run_with_the_kl_term_logs_it_and_a_full_fine_tune_is_refused(tiny_parts, tmp_path):
    from training.build_data import main as build_main

    build_main(["shapes", "--out", str(tmp_path), "--count", "6", "--seed", "1"])
    mix = write_mix(tmp_path, (tmp_path / "shapes.jsonl").read_text())
    backbone_dir, _ = tiny_parts
    common = ["--data", str(mix), "--backbone", str(backbone_dir), "--lora-rank", "4", "--batch-size", "4",
              "--gradient-accumulation", "1", "--log-every", "1", "--no-sample-every-checkpoint",
              "--steps", "3", "--checkpoint-every", "3", "--text-kl-weight", "0.5"]
    out = tmp_path / "run"
    train_main([*common, "--output-dir", str(out)])
    with (out / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    logged = [float(row["text_kl"]) for row in rows if row["text_kl"] != ""]  # steps with a text-only chat
    assert len(rows) == 3 and logged and all(value >= 0 for value in logged)
    with pytest.raises(ValueError, match="needs a LoRA model"):
        train_main([*common, "--output-dir", str(tmp_path / "full"), "--finetune", "full"])
    with pytest.raises(ValueError, match="0 or more"):
        train_main([*common, "--output-dir", str(tmp_path / "negative"), "--text-kl-weight", "-1"])


def test_a_source_marked_text_kl_false_is_learnt_from_its_replies(tiny_parts, tmp_path):
    """`text_kl: false` on a mix source: its text-only chats train on their labels beside the
    drawings (not in the reference pass), so a task taught in words is not pulled back to the stock
    backbone's answers; a value that is not true/false is refused, naming the source."""
    from training.mixed_data import MixedConversations
    from training.train import TrainConfig, forward_groups

    (tmp_path / "text.jsonl").write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in CHATS))
    (tmp_path / "words.jsonl").write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in CHATS))
    mix = tmp_path / "mix.yaml"
    mix.write_text("sources:\n- {path: text.jsonl}\n- {path: words.jsonl, text_kl: false}\n")
    data = MixedConversations(mix, seed=0)
    assert data.text_kl == [True, False]
    drawn = data.draw(0, 0, 16)
    assert {source for source, _ in drawn} == {0, 1} and data.batch(0, 0, 16) == [chat for _, chat in drawn]

    model = tiny_model(tiny_parts)
    conversations = [CHATS[0], drawing_chat(), CHATS[1]]
    groups, held = forward_groups(model, conversations, TrainConfig(text_kl_weight=1.0), [True, True, False])
    assert held == {0} and sorted(map(sorted, groups)) == [[0], [1, 2]]
    groups, held = forward_groups(model, conversations, TrainConfig(text_kl_weight=1.0))
    assert held == {0, 2}

    mix.write_text("sources:\n- {path: text.jsonl}\n- {path: words.jsonl, text_kl: 'no'}\n")
    with pytest.raises(DataError, match="text_kl of source 'words.jsonl' must be true or false"):
        MixedConversations(mix, seed=0)
