"""The Gradio app, started on a free local port and driven with gradio_client (tiny random model).

Gradio (and the app, which imports it) are imported by the tests that use them, not at the top:
every pytest worker imports every test module to collect it, and Gradio's import (~3 s) was a
seventh of the suite's start-up.
"""

from __future__ import annotations

import platform
import threading
import time
from typing import TYPE_CHECKING

import pytest

from benchmarks.app_browser import running_app as running_app_at
from chat.memory import release_freed_memory
from tests.tiny_vlm import force_one_image, perturbed, short_replies, tiny_model

if TYPE_CHECKING:
    from gradio_client import Client

SETTINGS = {"temperature": 0.7, "cfg_scale": 3.0, "residual_steps": 2, "seed": 0, "max_images": 2}


@pytest.fixture
def running_app(tiny_parts):
    model = short_replies(perturbed(tiny_model(tiny_parts)))  # random text, ended after a few tokens
    with running_app_at(model) as url:
        yield url, model


def connect(url: str) -> Client:
    from gradio_client import Client

    return Client(url, verbose=False)


def upload_file(path) -> dict:
    from gradio_client import handle_file

    return handle_file(str(path))


def send(client: Client, text: str, upload=None, **settings):
    """Send as a script would; `image_candidates` goes last when given (calls written before it
    existed leave it out, and the app then draws with the model's default)."""
    values = {**SETTINGS, **settings}
    extra = [values["image_candidates"]] if "image_candidates" in values else []
    return client.predict(text, upload, values["temperature"], values["cfg_scale"], values["residual_steps"],
                          values["seed"], values["max_images"], *extra, api_name="/send")


def is_image(part) -> bool:
    """A chat part that shows a PNG (the app shows images as Image components, with alt text)."""
    if not (isinstance(part, dict) and part.get("type") == "component" and part.get("component") == "image"):
        return False
    value = part["value"]
    path = value.get("path") if isinstance(value, dict) else value
    return str(path).endswith(".png") and bool(part["constructor_args"].get("alt_text"))


def contents(chat) -> list:
    return [message["content"] for message in chat]


@pytest.mark.slow
def test_text_turn_image_request_upload_question_and_bad_upload(running_app, tmp_path):
    url, _ = running_app
    client = connect(url)
    chat, cleared_text, cleared_upload = send(client, "Hello there", max_images=0)
    assert [message["role"] for message in chat] == ["user", "assistant"] and cleared_text == ""
    chat, _, _ = send(client, "Draw a red circle.", max_images=2)
    assert len(chat) == 4
    image_path = tmp_path / "upload.png"
    from PIL import Image

    Image.new("RGB", (40, 40), "blue").save(image_path)
    chat, _, _ = send(client, "What colour is this?", upload_file(image_path))
    user_turn = chat[-2]["content"]
    assert any(is_image(part) for part in user_turn)
    before = len(chat)
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not an image")
    chat, _, _ = send(client, "and this?", upload_file(bad))
    note = str(chat[-1]["content"])
    assert len(chat) == before + 1 and "notes.txt" in note  # a visible error of its own, nothing added
    assert "/tmp" not in note and "Error" not in note and "not an image" in note  # no server path or class
    assert note.count("Not sent") == 1
    chat, _, _ = send(client, "Still there?", max_images=0)
    assert len(chat) == before + 2  # the session is intact


def test_forced_image_reaches_the_chat_as_a_file(running_app):
    url, model = running_app
    client = connect(url)
    force_one_image(model)
    chat, _, _ = send(client, "Draw something.")
    reply = chat[-1]["content"]
    assert any(is_image(part) for part in reply)


def test_image_candidates_from_the_api_draw_and_a_bad_count_is_refused(running_app):
    url, model = running_app
    client = connect(url)
    force_one_image(model)
    chat, _, _ = send(client, "Draw something.", image_candidates=3)
    assert any(is_image(part) for part in chat[-1]["content"])
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="less than minimum value 1"):  # the slider's own bounds, named
        send(client, "Draw something else.", image_candidates=0)
    chat, _, _ = send(client, "Still there?", max_images=0)
    assert "Still there?" in str(chat[-2]["content"])  # the session goes on after the refusal


def test_two_concurrent_sessions_keep_their_histories_apart(running_app):
    url, _ = running_app
    first, second = connect(url), connect(url)
    results = {}

    def talk(name, client, text):
        results[name] = [send(client, f"{text} {turn}", max_images=0)[0] for turn in range(2)]

    threads = [threading.Thread(target=talk, args=("a", first, "apples")),
               threading.Thread(target=talk, args=("b", second, "bananas"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for name, word in (("a", "apples"), ("b", "bananas")):
        final = results[name][-1]
        users = [str(message["content"]) for message in final if message["role"] == "user"]
        assert len(users) == 2 and all(word in text for text in users)


def test_help_names_model_host_and_port(capsys):
    from app import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--model" in out and "--host" in out and "--port" in out
    assert parse_args([]).closed_tab_keep_s == 3600
    assert parse_args(["--closed-tab-keep-s", "60"]).closed_tab_keep_s == 60


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_memory_is_handed_back_after_a_reply_on_glibc():
    chunks = [bytearray(4096) for _ in range(20000)]  # ~80 MB of small heap blocks
    del chunks
    assert release_freed_memory()


@pytest.mark.slow
def test_many_clients_get_every_reply_and_a_full_queue_says_busy(tiny_parts):
    from benchmarks.app_load import burst, run_load

    model = short_replies(perturbed(tiny_model(tiny_parts)))
    # A queue as long as the clients: with max_queue=1, a client's next turn could arrive before
    # Gradio had let go of its last one, and be told "busy" (seen once in ~10 runs). The burst
    # below still goes past the limit.
    with running_app_at(model, max_queue=2) as url:
        report = run_load(url, clients=2, turns=3, rounds=2).summary()  # a question, a drawing, an upload each
        assert report["replies"] == 12 and report["replies_lost"] == 0 and report["histories_crossed"] == 0, report
        assert report["peak_rss_mb"] > 0 and len(report["rss_after_round_mb"]) == 2
        first, last = report["rss_after_round_mb"]
        assert report["rss_growth_mb"] == pytest.approx(last - first, abs=0.11)  # each rounded to 0.1
        quick = model.run_decoder

        def slow(*args, **kwargs):  # a reply outlasts the burst's arrival, however loaded the machine
            time.sleep(0.2)
            return quick(*args, **kwargs)

        model.run_decoder = slow
        answered, busy, others = burst(url, 5)
        assert others == [] and answered >= 1 and busy >= 1  # past the limit: told, not left waiting
