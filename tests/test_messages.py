"""One conversation format: the processor, the training data loader and saved chats refuse the same way."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image

from chat.conversation import Conversation, ConversationFileError
from generation import Reply
from generation.events import Done, ImageFinished, TextDelta
from training.data import read_jsonl
from vlm.messages import ConversationError, Message, check_message

BAD_MESSAGES = [
    ({"role": "robot", "content": "hi"}, "message 0 has role 'robot'"),
    ({"role": "user", "content": []}, "message 0 (user) has no content parts"),
    ({"role": "user", "content": [{"type": "video"}]}, "message 0 part 0: type must be 'text' or 'image'"),
    ({"role": "user", "content": [{"type": "text", "text": 3}]}, "message 0 part 0: a text part needs a 'text' string"),
    ({"role": "user", "content": "draw <|image|> here"}, "text may not contain the image tokens"),
]


@pytest.mark.parametrize("message, reason", BAD_MESSAGES)
def test_every_reader_of_conversations_gives_the_same_reason(message, reason, tmp_path, default_text_tokenizer):
    with pytest.raises(ConversationError, match=re.escape(reason)):
        check_message(message, 0)
    from vlm.processor import VLMProcessor

    with pytest.raises(ConversationError, match=re.escape(reason)):
        VLMProcessor(default_text_tokenizer, (1, 2), 16)([message])
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"messages": [message, {"role": "assistant", "content": "ok"}]}) + "\n")
    _, problems = read_jsonl(data)
    assert len(problems) == 1 and reason in problems[0].reason
    saved = tmp_path / "chat"
    Conversation(None, [Message("user", [{"type": "text", "text": "fine"}])]).save(saved)
    record = json.loads((saved / "conversation.json").read_text())
    record["messages"] = [message]
    (saved / "conversation.json").write_text(json.dumps(record))
    with pytest.raises(ConversationFileError, match=re.escape(reason)):
        Conversation.load(saved)


def test_files_need_image_paths_where_the_processor_also_takes_images(tmp_path):
    image_part = {"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (4, 4))}]}
    assert check_message(image_part, 0)[0] == "user"
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": [{"type": "image"}]},
                                             {"role": "assistant", "content": "ok"}]}) + "\n")
    _, problems = read_jsonl(data)
    assert "an image part needs 'path'" in problems[0].reason


def test_a_reply_is_an_assistant_message_built_from_events():
    image = Image.new("RGB", (4, 4), "red")
    reply = Reply()
    for event in (TextDelta(0, "Here ", [1]), TextDelta(0, "it is:", [2]), ImageFinished(0, 0, image, "codes"),
                  Done(0, "end_of_turn")):
        reply.add(event)
    assert isinstance(reply, Message) and reply.role == "assistant" and reply.reason == "end_of_turn"
    assert reply.text == "Here it is:" and reply.images == [image] and reply.image_tokens == ["codes"]
    assert reply.as_dict() == {"role": "assistant", "content": [{"type": "text", "text": "Here it is:"},
                                                                {"type": "image", "image": image}]}
    assert Message("user").as_dict() == {"role": "user", "content": [{"type": "text", "text": ""}]}
