"""Chat sessions, conversation folders and the terminal chat's one-shot mode (tiny random model)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from chat.__main__ import main as chat_main
from chat.conversation import SCHEMA_VERSION, Conversation, ConversationFileError
from chat.session import ChatSession, EmptyMessageError
from generation import Done, GenerationConfig, ImageFinished
from tests.tiny_vlm import perturbed, tiny_model
from vlm.image_io import ImageLoadError


@pytest.fixture
def session(tiny_parts):
    return ChatSession(perturbed(tiny_model(tiny_parts)), GenerationConfig(seed=0, max_new_tokens=4, max_images=1),
                       system_prompt="You draw.")


def test_send_regenerate_undo_reset(session):
    events = list(session.send("Hello"))
    assert isinstance(events[-1], Done)
    assert [m.role for m in session.conversation.messages] == ["user", "assistant"]
    events = list(session.send("Draw a dot.", force_image=True))
    assert any(isinstance(event, ImageFinished) for event in events)
    assert len(session.conversation.messages[-1].images) == 1
    list(session.regenerate(seed=5, max_images=0))
    assert len(session.conversation.messages) == 4 and not session.conversation.messages[-1].images
    assert session.undo() and len(session.conversation.messages) == 2
    session.reset()
    assert session.conversation.messages == [] and session.conversation.system_prompt == "You draw."


def test_earlier_images_enter_the_next_prompt_as_final_blocks(session, tmp_path):
    upload = tmp_path / "dot.png"
    Image.new("RGB", (20, 20), "red").save(upload)
    list(session.send("What is this?", [upload]))
    list(session.send("Draw it again.", force_image=True))
    batch = session.model.processor(session.conversation.for_model(), add_generation_prompt=True)
    assert len(batch.images) == 2 and not any(layout.generated for layout in batch.images)


def test_bad_messages_leave_the_session_as_it_was(session, tmp_path):
    list(session.send("Hello"))
    before = [m.text for m in session.conversation.messages]
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(ImageLoadError, match="notes.txt"):
        list(session.send("look", [bad]))
    with pytest.raises(EmptyMessageError):
        list(session.send("   "))
    assert [m.text for m in session.conversation.messages] == before


def test_a_conversation_round_trips_through_its_folder(session, tmp_path):
    list(session.send("Draw a dot.", force_image=True))
    folder = session.conversation.save(tmp_path / "saved")
    record = json.loads((folder / "conversation.json").read_text())
    assert record["schema_version"] == SCHEMA_VERSION and record["system_prompt"] == "You draw."
    loaded = Conversation.load(folder)
    assert [m.text for m in loaded.messages] == [m.text for m in session.conversation.messages]
    assert loaded.messages[-1].images[0].size == session.conversation.messages[-1].images[0].size
    session.conversation.save(folder)  # saving over an earlier save of a conversation is fine
    (tmp_path / "photos").mkdir()
    with pytest.raises(ConversationFileError, match="not overwriting"):
        session.conversation.save(tmp_path / "photos")
    record["schema_version"] = 99
    (folder / "conversation.json").write_text(json.dumps(record))
    with pytest.raises(ConversationFileError, match="schema_version 99"):
        Conversation.load(folder)
    with pytest.raises(ConversationFileError, match="not a saved conversation"):
        Conversation.load(tmp_path / "photos")


def test_one_shot_mode_prints_text_and_image_paths(tiny_parts, tmp_path, capsys):
    model_dir = tmp_path / "model"
    perturbed(tiny_model(tiny_parts)).save_pretrained(model_dir)
    out = tmp_path / "images"
    upload = tmp_path / "in.png"
    Image.new("RGB", (20, 20), "green").save(upload)
    code = chat_main(["--model", str(model_dir), "--prompt", "Describe this.", "--image", str(upload), "--out",
                      str(out), "--seed", "1", "--max-new-tokens", "3"])
    assert code == 0
    assert chat_main(["--model", str(model_dir), "--prompt", " "]) == 2
    assert chat_main(["--model", str(model_dir), "--prompt", "x", "--image", str(tmp_path / "missing.png")]) == 2
    assert chat_main(["--model", str(model_dir), "--prompt", "x", "--image-candidates", "0"]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and "missing.png" in err and "image_candidates must be >= 1" in err
    assert chat_main(["--model", str(model_dir), "--prompt", "Draw a dot.", "--out", str(out), "--seed", "1",
                      "--max-new-tokens", "3", "--image-candidates", "2"]) == 0


def test_a_saved_conversation_cannot_point_at_images_outside_its_folder(session, tmp_path):
    list(session.send("Draw a dot.", force_image=True))
    folder = session.conversation.save(tmp_path / "saved")
    Image.new("RGB", (8, 8), "red").save(tmp_path / "elsewhere.png")
    record = json.loads((folder / "conversation.json").read_text())
    image_part = next(part for message in record["messages"] for part in message["content"]
                      if part["type"] == "image")
    for escape in ("../elsewhere.png", str(tmp_path / "elsewhere.png")):
        image_part["path"] = escape
        (folder / "conversation.json").write_text(json.dumps(record))
        with pytest.raises(ConversationFileError, match="message 1: image path"):
            Conversation.load(folder)


def test_inline_previews_speak_each_terminal_protocol_and_detect_terminals():
    from chat import inline_image

    image = Image.new("RGB", (64, 64), "white")
    image.paste((255, 0, 0), (16, 16, 48, 48))
    kitty = inline_image.render(image, "kitty", 64)
    assert kitty.startswith("\033_Ga=T,f=100") and kitty.endswith("\033\\")
    iterm = inline_image.render(image, "iterm", 64)
    assert iterm.startswith("\033]1337;File=inline=1") and iterm.endswith("\a")
    sixel = inline_image.render(image, "sixel", 12)
    assert sixel.startswith('\033Pq"1;1;12;12') and sixel.endswith("\033\\")
    assert sixel.count("-") == 2  # 12 rows = two bands of six
    with pytest.raises(ValueError, match="unknown preview protocol"):
        inline_image.render(image, "ascii")
    assert inline_image.detect({"TERM": "xterm-kitty"}) == "kitty"
    assert inline_image.detect({"TERM_PROGRAM": "iTerm.app"}) == "iterm"
    assert inline_image.detect({"TERM": "foot"}) == "sixel"
    assert inline_image.detect({"TERM": "xterm-256color"}) is None


@pytest.mark.slow
def test_a_save_that_runs_out_of_disk_says_so_and_keeps_the_earlier_save(tmp_path):
    from benchmarks.save_crashes import full_disk_save, killed_saves

    result = full_disk_save(tmp_path)
    assert result["full_disk_save_clear_error"] and result["full_disk_earlier_save_intact"], result
    assert killed_saves(tmp_path, trials=2) == {"save_kills_tried": 2, "save_kills_intact": 2}
