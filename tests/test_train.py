"""The data format, the builders and the trainer, on tiny data and a tiny random backbone."""

from __future__ import annotations

import copy
import csv
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from PIL import Image
from safetensors.torch import load_file

from generation import GenerationConfig, generate
from training import data as data_cli
from training.build_data import main as build_main
from training.data import DataError, load_jsonl, read_jsonl
from training.residual_updates import update_residual_head
from training.state_io import load_state
from training.train import TrainConfig, build_model, parse_args
from training.train import main as train_main
from vlm.residual_head import ResidualDiffusionHead, ResidualHeadConfig
from vlm.unified_model import UnifiedVLM
from worlds.english import article
from worlds.shapes import NUMBER_WORDS, POSITIONS
from worlds.step_drawings import PROCEDURES, step_images


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("data")
    build_main(["shapes", "--out", str(out), "--count", "12", "--seed", "1"])
    return out / "shapes.jsonl"


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_validator_reports_every_bad_line_with_its_number(tmp_path, capsys):
    (tmp_path / "ok.png").write_bytes(b"")  # exists but is not an image
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    path = write_lines(tmp_path / "chats.jsonl", [
        good,
        "{not json",
        json.dumps({"messages": [{"role": "robot", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "assistant", "content": [{"type": "image", "path": "missing.png"}]}]}),
        json.dumps({"messages": [{"role": "assistant", "content": [{"type": "image", "path": "ok.png"}]}]}),
        "",
        json.dumps({"messages": [{"role": "assistant", "content": [{"type": "video"}]}]}),
    ])
    conversations, problems = read_jsonl(path)
    assert len(conversations) == 1
    assert [problem.line for problem in problems] == [2, 3, 4, 5, 6, 8]
    reasons = " | ".join(problem.reason for problem in problems)
    for expected in ("not valid JSON", "role 'robot'", "no assistant message", "not found", "not a readable image",
                     "type must be 'text' or 'image'"):
        assert expected in reasons
    assert data_cli.main(["validate", str(path)]) == 1
    printed = capsys.readouterr().out
    assert f"{path}:2: not valid JSON" in printed and "1 good conversation(s)" in printed
    with pytest.raises(DataError, match="6 bad line"):
        load_jsonl(path)
    blank = write_lines(tmp_path / "blank.jsonl", ["", "  "])  # the trainer refuses it, so the validator does
    assert data_cli.main(["validate", str(blank)]) == 1
    assert f"{blank}: no conversations" in capsys.readouterr().out
    with pytest.raises(DataError, match="no conversations"):
        load_jsonl(blank)


def test_builders_write_valid_data_with_images(shapes_data, tmp_path):
    conversations = load_jsonl(shapes_data)
    assert len(conversations) == 12
    assert any(part["type"] == "image" for conversation in conversations for message in conversation
               for part in message["content"])
    build_main(["steps", "--out", str(tmp_path), "--count", "3", "--seed", "1"])
    steps = load_jsonl(tmp_path / "steps.jsonl")
    reply = steps[0][1]["content"]
    assert [part["type"] for part in reply[1:3]] == ["text", "image"] and reply[1]["text"].startswith("Step 1:")
    again = tmp_path / "again"
    build_main(["steps", "--out", str(again), "--count", "3", "--seed", "1"])
    assert (again / "steps.jsonl").read_text() == (tmp_path / "steps.jsonl").read_text()  # seeded


@pytest.mark.parametrize("kind, shapes", [("singles", 1), ("pairs", 2)])
def test_shape_drawings_show_exactly_the_shapes_their_prompt_asks_for(tmp_path, kind, shapes):
    """... and the reply says what the picture shows before showing it."""
    from worlds.shapes import SHAPES, names_exactly
    from worlds.shapes_detector import detect, read_scene

    build_main([kind, "--out", str(tmp_path), "--count", "6", "--seed", "1"])
    conversations = load_jsonl(tmp_path / f"{kind}.jsonl")
    assert len(conversations) == 6
    for request, reply in conversations:
        prompt = request["content"][0]["text"]
        image = Image.open(tmp_path / reply["content"][1]["path"])
        found = detect(image)
        asked = sorted(kind for kind in SHAPES for _ in range(prompt.count(f" {kind}")))
        assert len(found) == shapes and sorted(shape.kind for shape in found) == asked, prompt
        assert names_exactly(reply["content"][0]["text"], read_scene(image)), reply


def test_follow_up_shapes_and_chat_drawings_say_what_they_draw():
    from training.builders.chats import chat_conversations
    from training.builders.shapes_chat import follow_up_drawings, shapes_conversations
    from worlds.shapes import names_exactly
    from worlds.shapes_detector import read_scene

    rng = random.Random(2)
    drawn = 0
    chats = [chat for chat in chat_conversations(rng, 12) if "Here is" not in str(chat)]  # emoji drawings aside
    for conversation in [*follow_up_drawings(rng, 6), *shapes_conversations(rng, 12), *chats]:
        for message in conversation:
            content = message["content"]
            if message["role"] == "assistant" and isinstance(content, list) and content[-1]["type"] == "image":
                assert names_exactly(content[0]["text"], read_scene(content[-1]["image"])), content[0]
                drawn += 1
    assert drawn >= 12 and chats


def test_a_kind_outside_the_default_mix_needs_a_count(tmp_path, monkeypatch):
    import training.build_data as build_data

    monkeypatch.setitem(build_data.BUILDERS, "extra", build_data.BUILDERS["followups"])
    with pytest.raises(SystemExit, match="extra is not in the default mix.*pass --count"):
        build_main(["extra", "--out", str(tmp_path)])
    assert not list(tmp_path.iterdir())


def test_a_follow_up_request_asks_for_a_new_drawing_and_gets_exactly_it(tmp_path):
    from worlds.shapes import SHAPES
    from worlds.shapes_detector import detect

    build_main(["followups", "--out", str(tmp_path), "--count", "8", "--seed", "1"])
    conversations = load_jsonl(tmp_path / "followups.jsonl")
    assert len(conversations) == 8 and all(len(conversation) == 4 for conversation in conversations)
    scenes = []
    for conversation in conversations:
        for request, reply in (conversation[:2], conversation[2:]):
            prompt = request["content"][0]["text"]
            found = detect(Image.open(tmp_path / reply["content"][1]["path"]))
            asked = sorted(kind for kind in SHAPES for _ in range(prompt.count(f" {kind}")))
            assert sorted(shape.kind for shape in found) == asked, prompt
            scenes.append(sorted((shape.kind, shape.colour) for shape in found))
    assert sum(scenes[index] != scenes[index + 1] for index in range(0, 16, 2)) >= 7  # new drawings, not copies


def test_readings_ask_about_pictures_of_two_or_three_shapes_and_answer_what_they_show(tmp_path):
    from worlds.shapes_detector import read_scene

    build_main(["readings", "--out", str(tmp_path), "--count", "12", "--seed", "3"])
    conversations = load_jsonl(tmp_path / "readings.jsonl")
    captions = placed = 0
    for conversation in conversations:
        first = conversation[0]["content"]
        assert first[0]["type"] == "image" and first[1]["type"] == "text"
        seen = read_scene(Image.open(tmp_path / first[0]["path"]))
        assert len(seen) in (2, 3)
        answers = [" ".join(part["text"] for part in message["content"]) for message in conversation[1::2]]
        assert all(answers)
        if " and " in answers[0]:  # a caption names every shape, with its colour and place
            captions += 1
            for kind, colour, _, position in seen:
                assert f"{colour} {kind} {position}" in answers[0], (answers[0], seen)
        else:
            assert 1 <= len(answers) <= 3
            questions = [" ".join(part["text"] for part in message["content"] if part["type"] == "text")
                         for message in conversation[0::2]]
            for question, answer in zip(questions, answers):
                place = next((name for name in POSITIONS if question.endswith(f" {name}?")), None)
                if place is not None:  # asked by place: the answer is what is there
                    placed += 1
                    [(kind, colour, size, _)] = [shape for shape in seen if shape[3] == place]
                    said = {"What is": f"{place.capitalize()} is a {size} {colour} {kind}.",
                            "What shape is": f"The shape {place} is {article(kind)} {kind}.",
                            "What colour is the shape": f"The shape {place} is {colour}."}
                    assert next(said[lead] for lead in said if question.startswith(f"{lead} ")) == answer, \
                        (question, answer, seen)
                    continue
                # any other answer names what was asked about, then answers it
                subject = re.fullmatch(r"(?:What colour is|Where is|What shape is) the (\w+)(?: one)?\?", question)
                if subject is None:
                    assert question == "How many shapes are there?"
                    assert answer == f"There are {NUMBER_WORDS[len(seen)]}."
                    continue
                [(kind, colour, _, position)] = [shape for shape in seen if subject[1] in shape[:2]]
                said = {"What colour": f"The {kind} is {colour}.", "Where": f"The {kind} is {position}.",
                        "What shape": f"The {colour} one is {article(kind)} {kind}."}
                expected = next(said[lead] for lead in said if question.startswith(lead))
                assert answer == expected, (question, answer, seen)
    assert 2 <= captions <= 10 and placed >= 2


def test_each_step_image_adds_to_the_drawing():
    for procedure in PROCEDURES.values():
        images = step_images(procedure(random.Random(0)))
        painted = [int((np.asarray(image).min(axis=-1) < 200).sum()) for image in images]
        assert painted == sorted(painted) and painted[0] > 0, procedure.__name__


def train(tiny_parts, data, out, *extra):
    backbone_dir, _ = tiny_parts
    train_main(["--data", str(data), "--output-dir", str(out), "--backbone", str(backbone_dir), "--lora-rank", "4",
                "--batch-size", "2", "--gradient-accumulation", "1", "--log-every", "1",
                "--no-sample-every-checkpoint", *extra])


def losses(out):
    with (out / "log.csv").open() as handle:
        return [float(row["total"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
def test_a_tiny_run_lowers_the_loss_and_its_model_generates(tiny_parts, shapes_data, tmp_path):
    out = tmp_path / "run"
    train(tiny_parts, shapes_data, out, "--steps", "40", "--learning-rate", "1e-2", "--warmup-steps", "5",
          "--finetune", "full",
          "--checkpoint-every", "40")
    curve = losses(out)
    assert sum(curve[-5:]) / 5 < 0.8 * sum(curve[:5]) / 5
    assert (out / "loss_curve.png").is_file()
    model = UnifiedVLM.from_pretrained(out / "model")
    reply = generate(model, [{"role": "user", "content": "Draw a red circle."}],
                     GenerationConfig(seed=0, force_image=True, max_new_tokens=3))[0]
    assert len(reply.images) == 1


@pytest.mark.parametrize(("residual_updates", "first_leg"), [
    ("0", ["--steps", "2"]),  # stopped at a checkpoint by --steps
    ("2", ["--steps", "4", "--stop-after-minutes", "0"]),  # out of time after step 1: checkpointed there
])
@pytest.mark.slow
def test_resuming_gives_the_same_next_steps_as_an_uninterrupted_run(tiny_parts, shapes_data, tmp_path,
                                                                   residual_updates, first_leg):
    common = ["--warmup-steps", "100", "--checkpoint-every", "2",  # inside warm-up the schedule ignores --steps
              "--residual-head-updates", residual_updates]
    train(tiny_parts, shapes_data, tmp_path / "straight", "--steps", "4", *common)
    train(tiny_parts, shapes_data, tmp_path / "resumed", *first_leg, *common)
    stopped_at = 1 if "--stop-after-minutes" in first_leg else 2
    assert load_state(tmp_path / "resumed" / "checkpoint")["step"] == stopped_at
    train(tiny_parts, shapes_data, tmp_path / "resumed", "--steps", "4", *common)
    files = sorted(path.name for path in (tmp_path / "straight" / "model").glob("*.safetensors"))
    assert {"adapter.safetensors", "image_layers.safetensors"} <= set(files)  # adapters, image layers and heads
    for file in files:
        straight = load_file(str(tmp_path / "straight" / "model" / file))
        resumed = load_file(str(tmp_path / "resumed" / "model" / file))
        assert straight.keys() == resumed.keys()
        for name in straight:
            torch.testing.assert_close(resumed[name], straight[name], rtol=0, atol=1e-6, msg=f"{file}: {name}")
    assert losses(tmp_path / "straight")[2:] == pytest.approx(losses(tmp_path / "resumed")[2:], abs=1e-5)


@pytest.mark.slow
def test_a_run_out_of_time_before_its_first_log_row_saves_and_resumes(tiny_parts, shapes_data, tmp_path):
    out = tmp_path / "run"  # it crashed drawing the loss curve of a log.csv not yet written
    train(tiny_parts, shapes_data, out, "--steps", "3", "--log-every", "10", "--stop-after-minutes", "0")
    assert load_state(out / "checkpoint")["step"] == 1 and (out / "model" / "vlm_config.json").is_file()
    assert not (out / "log.csv").exists()
    train(tiny_parts, shapes_data, out, "--steps", "3", "--log-every", "10")
    assert [row["step"] for row in csv.DictReader((out / "log.csv").open())] == ["3"]
    assert (out / "loss_curve.png").is_file()


def test_a_resumed_run_takes_the_peak_learning_rates_of_its_own_config(tiny_parts, shapes_data, tmp_path, caplog):
    common = ["--warmup-steps", "10", "--checkpoint-every", "1", "--image-layers-learning-rate", "2e-2"]
    train(tiny_parts, shapes_data, tmp_path / "run", "--steps", "1", "--learning-rate", "1e-2", *common)
    with caplog.at_level("WARNING", logger="training.train"):
        train(tiny_parts, shapes_data, tmp_path / "run", "--steps", "2", "--learning-rate", "4e-3", *common)
    assert "peak learning rates changed on resume" in caplog.text
    with (tmp_path / "run" / "log.csv").open() as handle:
        rates = [float(row["learning_rate"]) for row in csv.DictReader(handle)]
    # The backbone group's rate after step s in warm-up: peak * (s + 1) / 10; step 2 at the new peak.
    assert rates == pytest.approx([1e-2 * 2 / 10, 4e-3 * 3 / 10])
    state = load_state(tmp_path / "run" / "checkpoint")
    assert [group["initial_lr"] for group in state["optimizer"]["param_groups"]][:2] == pytest.approx([4e-3, 2e-2])


def test_extra_residual_head_updates_move_only_the_head_and_lower_its_loss():
    torch.manual_seed(0)
    head = ResidualDiffusionHead(ResidualHeadConfig(latent_channels=4, condition_channels=8, width=32, depth=2))
    other = torch.nn.Linear(8, 8)
    optimizer = torch.optim.AdamW([{"params": other.parameters()}, {"params": head.parameters(), "lr": 3e-3}])
    residual, condition = torch.randn(16, 4), torch.randn(16, 8)

    def loss() -> float:
        with torch.no_grad():
            return float(head.loss(residual, condition, torch.Generator().manual_seed(1)))

    before, other_before = loss(), other.weight.clone()
    accelerator = Accelerator(cpu=True)
    assert update_residual_head(head, optimizer, [], 3, torch.Generator(), accelerator, 1.0) is None
    assert loss() == before  # no pairs (a batch without drawings): nothing moves
    mean = update_residual_head(head, optimizer, [(residual[:8], condition[:8]), (residual[8:], condition[8:])],
                                100, torch.Generator().manual_seed(0), accelerator, 1.0)
    assert mean is not None and loss() < 0.7 * before
    assert torch.equal(other.weight, other_before) and other.weight.grad is None


def test_fine_tuning_a_model_with_a_distilled_head_drops_that_head_and_trains_the_multi_step_one(
        tiny_parts, shapes_data, tmp_path, caplog):
    # The shipped model carries a one-step generator: head-only updates crashed on its unused
    # weights, and without them it would ship a generator distilled from a head that moved.
    train(tiny_parts, shapes_data, tmp_path / "base", "--steps", "1", "--checkpoint-every", "1")
    base = UnifiedVLM.from_pretrained(tmp_path / "base" / "model")
    base.residual_head.add_one_step(copy.deepcopy(base.residual_head.denoiser))
    base.save_pretrained(tmp_path / "distilled")
    with caplog.at_level("WARNING", logger="training.train"):
        train(tiny_parts, shapes_data, tmp_path / "tuned", "--init", str(tmp_path / "distilled"), "--steps", "1",
              "--checkpoint-every", "1", "--residual-head-updates", "2")
    assert "one-step residual head was dropped" in caplog.text and "distill_residual" in caplog.text
    tuned = UnifiedVLM.from_pretrained(tmp_path / "tuned" / "model")
    assert tuned.residual_head.one_step is None and not tuned.config.residual_head.one_step
    assert not torch.equal(tuned.residual_head.denoiser.output_projection.weight,
                           base.residual_head.denoiser.output_projection.weight)


def test_bad_training_inputs_are_named(tiny_parts, tmp_path):
    bad = write_lines(tmp_path / "bad.jsonl", ["{oops"])
    with pytest.raises(DataError, match="bad.jsonl:1"):
        train(tiny_parts, bad, tmp_path / "out", "--steps", "1")
    config = tmp_path / "run.yaml"
    config.write_text("data: x.jsonl\nlearning_rat: 1\n")
    with pytest.raises(ValueError, match="learning_rat"):
        train_main(["--config", str(config), "--output-dir", str(tmp_path / "o")])


def test_a_config_file_takes_the_flags_as_keys_and_flags_override_it(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("data: a.jsonl\noutput_dir: out\nsteps: 7\nlearning_rate: 1e-3\nsample_every_checkpoint: false\n")
    config = parse_args(["--config", str(run), "--steps", "9"])
    assert (config.data, config.output_dir, config.steps) == ("a.jsonl", "out", 9)
    assert config.learning_rate == 1e-3  # YAML reads 1e-3 as text; it is parsed as the flag would be
    assert config.sample_every_checkpoint is False and config.image_input_norm is False
    flipped = parse_args(["--config", str(run), "--sample-every-checkpoint", "--image-input-norm"])
    assert flipped.sample_every_checkpoint is True and flipped.image_input_norm is True
    as_json = tmp_path / "run.json"
    as_json.write_text(json.dumps({"data": "b.jsonl", "output_dir": "o", "sample_every_checkpoint": True}))
    assert parse_args(["--config", str(as_json), "--no-sample-every-checkpoint"]).sample_every_checkpoint is False
    assert parse_args(["--data", "c.jsonl", "--output-dir", "o"]) == TrainConfig(data="c.jsonl", output_dir="o")


def test_a_config_file_with_unknown_keys_is_refused_naming_them_and_the_known_ones(tmp_path):
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"data": "a.jsonl", "stpes": 3, "learning_rat": 1}))
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rat', 'stpes'\]; known keys are \[.*'steps'"):
        parse_args(["--config", str(run)])
    run.write_text("- data\n")
    with pytest.raises(ValueError, match="maps flag names"):
        parse_args(["--config", str(run)])


def test_missing_settings_and_bad_choices_stop_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args(["--data", "a.jsonl"])
    assert "--output-dir is required (on the command line or in --config)" in capsys.readouterr().err
    run = tmp_path / "run.yaml"
    run.write_text("data: a.jsonl\noutput_dir: o\nmixed_precision: fp16\n")
    with pytest.raises(SystemExit):
        parse_args(["--config", str(run)])
    assert "--mixed-precision must be one of ['auto', 'no', 'bf16'], got 'fp16'" in capsys.readouterr().err
    assert parse_args(["--config", str(run), "--mixed-precision", "no"]).mixed_precision == "no"
    with pytest.raises(SystemExit):
        parse_args(["--data", "a.jsonl", "--output-dir", "o", "--mixed-precision", "fp16"])


class _Payload:
    """Unpickling this would create a marker file: the proof that a pickle ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickled_resume_state_is_refused_without_running_it(tiny_parts, shapes_data, tmp_path):
    from training.state_io import StateError

    out = tmp_path / "run"
    train(tiny_parts, shapes_data, out, "--steps", "1", "--checkpoint-every", "1")
    checkpoint = out / "checkpoint"
    assert (checkpoint / "training_state.json").is_file() and not (checkpoint / "training_state.pt").exists()
    for name in ("training_state.json", "training_state.safetensors"):
        (checkpoint / name).unlink()
    marker = tmp_path / "pwned"
    torch.save({"step": _Payload(marker)}, checkpoint / "training_state.pt")
    with pytest.raises(StateError, match="pickle"):
        train(tiny_parts, shapes_data, out, "--steps", "2", "--checkpoint-every", "1")
    assert not marker.exists()


def test_resume_state_round_trips_nested_containers(tmp_path):
    from training.state_io import load_state, save_state

    state = {"state": {0: {"step": torch.tensor(3.0), "m": torch.ones(2, 2)}}, "groups": [{"betas": (0.9, 0.95)}],
             "rng": (3, (1, 2, 3), None), "numpy": np.arange(4, dtype=np.int64)}
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)
    assert list(loaded["state"]) == [0] and torch.equal(loaded["state"][0]["m"], torch.ones(2, 2))
    assert loaded["groups"][0]["betas"] == (0.9, 0.95) and loaded["rng"] == (3, (1, 2, 3), None)
    assert loaded["numpy"].tolist() == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="cannot store"):
        save_state(tmp_path, {"bad": object()})


def test_resuming_drops_log_rows_logged_after_the_checkpoint(tmp_path):
    from training.run_log import append_row, resume_log

    log = tmp_path / "log.csv"
    for step in range(1, 6):
        append_row(log, ["step", "loss"], {"step": step, "loss": 1.0 / step})
    resume_log(log, 3)  # the checkpoint was at step 3; steps 4 and 5 will be trained again
    assert [row["step"] for row in csv.DictReader(log.open())] == ["1", "2", "3"]
    resume_log(log, 0)  # no checkpoint: the run starts over, and so does its log
    assert log.read_text().strip() == "step,loss"
    resume_log(tmp_path / "missing.csv", 3)  # nothing to trim
    assert not (tmp_path / "missing.csv").exists()
    # A newer version logs one more column: the old rows stay, under the new header.
    append_row(log, ["step", "loss"], {"step": 1, "loss": 0.5})
    append_row(log, ["step", "padding", "loss"], {"step": 2, "padding": 0.1, "loss": 0.25})
    rows = list(csv.DictReader(log.open()))
    assert rows == [{"step": "1", "padding": "", "loss": "0.5"}, {"step": "2", "padding": "0.1", "loss": "0.25"}]


def test_image_paths_that_leave_the_data_folder_are_refused_with_their_line(tmp_path):
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8), "red").save(outside)
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "link.png").symlink_to(outside)
    Image.new("RGB", (8, 8), "blue").save(folder / "inside.png")

    def line(path):
        return json.dumps({"messages": [{"role": "user", "content": [{"type": "image", "path": path}]},
                                        {"role": "assistant", "content": "red"}]})

    path = write_lines(folder / "chats.jsonl", [line("inside.png"), line("../secret.png"), line(str(outside)),
                                                line("link.png"), line("sub/../inside.png")])
    conversations, problems = read_jsonl(path)
    assert len(conversations) == 2 and [problem.line for problem in problems] == [2, 3, 4]  # sub/../ stays inside
    assert "leads outside" in problems[0].reason and "absolute" in problems[1].reason
    assert "leads outside" in problems[2].reason  # a symlink pointing out of the folder


def test_the_schedule_warms_up_from_the_first_step_and_ends_at_its_floor():
    from training.schedule import warmup_cosine_factor

    factors = [warmup_cosine_factor(step, 4, 20, 0.1) for step in range(25)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]  # the first step already learns
    assert factors[4] == 1.0 and all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert factors[20] == pytest.approx(0.1) and factors[24] == pytest.approx(0.1)


def test_every_forward_takes_its_own_slice_of_one_global_batch(shapes_data):
    from training.mixed_data import MixedConversations

    data = MixedConversations(shapes_data, seed=3)
    whole = data.batch(5, 0, 4)  # one process, one forward of 4
    halves = data.batch(5, 0, 2) + data.batch(5, 1, 2)  # two processes (or two micro-steps) of 2
    assert halves == whole
    assert data.batch(6, 0, 4) != whole and data.batch(5, 0, 4) == whole  # by step; repeatable


def test_the_token_cache_encodes_each_image_once_and_matches_encoding_it_alone(tiny_parts):
    from training.token_cache import TokenCache
    from vlm.tokenizer import HybridTokenizer

    tokenizer = HybridTokenizer.from_pretrained(tiny_parts[1])
    cache = TokenCache(tokenizer)
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    first = cache.tokens(pixels)
    again = cache.tokens(pixels[[2, 0]])
    assert (cache.misses, cache.hits) == (3, 2)
    alone = tokenizer.encode_pixels(pixels[2:3])
    assert all(torch.equal(a, b) for a, b in zip(again[0].codes, alone.codes))
    assert torch.equal(again.residual[0], alone.residual[0].cpu()) and torch.equal(again.residual[1], first.residual[0])


def test_lora_alpha_follows_the_rank_unless_given(tiny_parts, tmp_path):
    backbone_dir, tokenizer_dir = tiny_parts
    common = {"data": "unused.jsonl", "output_dir": str(tmp_path), "backbone": str(backbone_dir),
              "image_tokenizer": str(tokenizer_dir)}
    doubled = build_model(TrainConfig(**common, lora_rank=4), tmp_path / "no-checkpoint")
    assert doubled.config.lora_alpha == 8
    assert doubled.backbone.peft_config["default"].lora_alpha == 8
    given = build_model(TrainConfig(**common, lora_rank=4, lora_alpha=3), tmp_path / "no-checkpoint")
    assert given.backbone.peft_config["default"].lora_alpha == 3


@pytest.mark.slow
def test_bf16_training_runs_learns_and_saves_float32_weights(tiny_parts, shapes_data, tmp_path):
    """`--mixed-precision bf16` (what 'auto' picks on a CPU with AVX512/AMX, or a GPU): autocast
    forwards, fp32 master weights, the same files as an fp32 run."""
    out = tmp_path / "bf16"
    train(tiny_parts, shapes_data, out, "--steps", "12", "--learning-rate", "1e-2", "--warmup-steps", "2",
          "--finetune", "full", "--checkpoint-every", "12", "--mixed-precision", "bf16")
    curve = losses(out)
    assert all(value == value for value in curve) and sum(curve[-3:]) < sum(curve[:3])
    for path in (out / "model").glob("*.safetensors"):
        assert {tensor.dtype for tensor in load_file(str(path)).values()} == {torch.float32}, path.name
    assert json.loads((out / "train_config.json").read_text())["mixed_precision"] == "bf16"


def test_the_gpu_recipe_is_the_cpu_recipe_at_a_bigger_batch_inside_25_minutes():
    configs = Path(__file__).resolve().parent.parent / "training" / "configs"
    cpu = parse_args(["--config", str(configs / "default_model.yaml")])
    gpu = parse_args(["--config", str(configs / "default_model_gpu.yaml")])
    same = ("data", "validation_data", "init", "finetune", "lora_rank", "lora_alpha", "image_layers_learning_rate",
            "residual_head_learning_rate", "residual_head_updates", "image_loss_per", "condition_dropout",
            "learning_rate", "min_learning_rate_ratio", "mixed_precision", "seed")
    assert {name: getattr(gpu, name) for name in same} == {name: getattr(cpu, name) for name in same}
    assert gpu.batch_size > cpu.batch_size and gpu.output_dir != cpu.output_dir
    assert gpu.stop_after_minutes is not None and gpu.stop_after_minutes <= 25


def test_frozen_weights_stored_in_bf16_give_the_same_bf16_step_bit_for_bit(tiny_parts):
    from tests.tiny_vlm import drawing_chat, tiny_model
    from training.train import frozen_linears_in_bf16

    def step(model):
        model.train()
        batch = model.processor([drawing_chat(), [{"role": "user", "content": "Hi"},
                                                  {"role": "assistant", "content": "Hello there."}]])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model(batch, generator=torch.Generator().manual_seed(0), all_logits=False).losses
        losses["total"].backward()
        return losses, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    plain, stored = tiny_model(tiny_parts), tiny_model(tiny_parts)
    with torch.no_grad():  # LoRA B off zero, the same in both
        for (_, a), (_, b) in zip(plain.named_parameters(), stored.named_parameters()):
            if a.requires_grad:
                a.add_(torch.randn_like(a) * 0.05)
                b.copy_(a)
    layers = stored.language_model.get_decoder().layers
    assert frozen_linears_in_bf16(stored) == 7 * len(layers)  # q, k, v, o, gate, up, down (LoRA's base layers)
    head = stored.language_model.get_output_embeddings().weight
    assert head.dtype == torch.float32 and stored.language_model.get_input_embeddings().weight.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in stored.parameters() if p.requires_grad)
    (losses_a, grads_a), (losses_b, grads_b) = step(plain), step(stored)
    assert {name: float(value) for name, value in losses_a.items()} == \
        {name: float(value) for name, value in losses_b.items()}
    assert grads_a.keys() == grads_b.keys() and all(torch.equal(grads_a[name], grads_b[name]) for name in grads_a)


@pytest.mark.slow
def test_a_lora_bf16_run_keeps_frozen_weights_in_bf16_and_still_samples_and_validates(tiny_parts, shapes_data,
                                                                                   tmp_path, caplog):
    out = tmp_path / "lora-bf16"
    with caplog.at_level("INFO", logger="training.train"):
        train(tiny_parts, shapes_data, out, "--steps", "2", "--checkpoint-every", "2", "--mixed-precision", "bf16",
              "--sample-every-checkpoint", "--validation-data", str(shapes_data), "--validation-conversations", "2")
    assert "14 frozen backbone Linear weights kept in bf16" in caplog.text
    assert (out / "samples" / "step_000002" / "replies.md").is_file()
    assert len((out / "validation.csv").read_text().splitlines()) == 3  # header, step 0, step 2
    model = UnifiedVLM.from_pretrained(out / "model")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
