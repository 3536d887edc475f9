"""The app in a real browser: headless Debian Chromium driven by Playwright (tiny random model).

Loads a browser (a few seconds). Chromium comes from the set-up (`make test` installs
Debian's `chromium`); Playwright is pointed at its executable, so nothing is downloaded.
Without a Chromium the test is skipped, except under CI, where it must run.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zipfile

import pytest

from benchmarks.app_browser import (
    BOT_MESSAGES,
    USER_MESSAGES,
    attach_file,
    chromium_page,
    find_chromium,
    running_app,
    start_reply,
    wait_reply,
)
from tests.tiny_vlm import force_one_image, perturbed, tiny_model

CHROMIUM = find_chromium()
if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("CI must run the browser test: install Debian's chromium (make test does)", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (make test installs Debian's chromium)")


def slowed(model, seconds: float, hold=None):
    """Every decoder forward takes `seconds` longer (a reply long enough to act during it), and
    first waits for `hold()` when given: the test's gate on the reply's progress."""
    original = model.run_decoder

    def slow(*args, **kwargs):
        if hold is not None:
            hold()
        time.sleep(seconds)
        return original(*args, **kwargs)

    model.run_decoder = slow
    return model


class PreviewGate:
    """Holds the drawing after each scale preview the app sends until the test has seen that
    preview in the page. A busy browser paints two quick updates as one frame (CI once saw
    scale 2 first), so without the gate some scale may never be on screen however right the
    app is; with it, every preview the app sends must show, in order."""

    def __init__(self, monkeypatch, wait_s: float = 60.0):
        import app

        self.active, self.wait_s = True, wait_s
        self.seen = threading.Event()
        self._pending, self._last = False, None
        display = app.BrowserSession.display

        def counted(session):
            shown = display(session)
            scale = None if session.preview is None else session.preview[1]
            if self.active and scale is not None and scale != self._last:
                self._pending = True  # the next forward waits until the page has shown it
            self._last = scale
            return shown

        monkeypatch.setattr(app.BrowserSession, "display", counted)

    def hold(self) -> None:
        if self.active and self._pending:
            self.seen.wait(self.wait_s)  # past it the drawing goes on, and the test's checks fail
            self.seen.clear()
            self._pending = False

    def let_through(self, page, previews: int) -> None:
        """Wait until the page has shown `previews` distinct previews, then let the drawing go on."""
        page.wait_for_function(f"() => window.__hvlmReply.previews.length >= {previews}",
                               timeout=self.wait_s * 1000)
        self.seen.set()


@pytest.fixture
def drawing_model(tiny_parts):
    return slowed(force_one_image(perturbed(tiny_model(tiny_parts)), words_first=3), 0.15)


@pytest.mark.slow
def test_a_drawing_is_previewed_scale_by_scale_shown_large_and_typing_survives(tiny_parts, tmp_path, monkeypatch):
    gate = PreviewGate(monkeypatch)
    drawing_model = slowed(force_one_image(perturbed(tiny_model(tiny_parts)), words_first=3), 0.15, gate.hold)
    scales = len(drawing_model.image_tokenizer.config.scales)
    with running_app(drawing_model) as url, chromium_page(CHROMIUM) as page:
        page.goto(url)
        box = page.get_by_label("message", exact=True)
        box.wait_for()
        start_reply(page, "Please draw a red circle.")
        page.wait_for_function("() => window.__hvlmReply.busy_seen")
        assert page.locator("#send-button").is_disabled()  # no silent drop: Send is visibly off
        box.press_sequentially("my next question is", delay=20)  # typed while the reply streams
        for previews in range(1, scales + 1):
            gate.let_through(page, previews)
        seen = wait_reply(page, timeout_s=120)
        assert box.input_value() == "my next question is"
        assert seen["first_preview_s"] < seen["first_image_s"] < seen["done_s"]
        assert seen["previews"] == [f"Drawing in progress, scale {scale} of {scales}"
                                    for scale in range(1, scales + 1)]
        image = page.locator(BOT_MESSAGES).last.locator("img").last
        alt, width = image.evaluate("node => [node.alt, node.getBoundingClientRect().width]")
        assert width >= 256 and alt.startswith("The model's drawing")
        assert not page.locator(BOT_MESSAGES).last.locator("img[alt^='Drawing in progress']").count()
        assert page.locator(USER_MESSAGES).last.inner_text().strip() == "Please draw a red circle."

        drawing_model.reset_script()
        gate.active = False
        box.fill("")
        start_reply(page, "And a blue one?")
        wait_reply(page, timeout_s=120)
        with page.expect_download() as download:  # the first click, right after the reply
            page.get_by_role("button", name="Download conversation").click()
        archive = tmp_path / "conversation.zip"
        download.value.save_as(archive)
        with zipfile.ZipFile(archive) as files:
            record = json.loads(files.read("conversation.json"))
            pngs = [name for name in files.namelist() if name.endswith(".png")]
        assert [message["role"] for message in record["messages"]] == ["user", "assistant"] * 2
        assert len(pngs) == 2
        screenshot = tmp_path / "app.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000


@pytest.mark.slow
def test_a_bad_upload_gets_its_own_plain_error_and_keeps_the_message(drawing_model, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_text("this is a text file, renamed")
    with running_app(drawing_model) as url, chromium_page(CHROMIUM) as page:
        page.goto(url)
        box = page.get_by_label("message", exact=True)
        box.wait_for()
        attach_file(page, bad)  # uploaded: the page shows its name
        box.fill("what is in this photo?")
        page.locator("#send-button").click()
        note = page.locator(BOT_MESSAGES).last
        note.wait_for()
        page.wait_for_function("() => document.body.innerText.includes('could not be used')", timeout=30_000)
        text = note.inner_text()
        assert "holiday.png" in text and "could not be used" in text
        assert "/tmp" not in text and "Error" not in text  # no server path, no exception class
        assert box.input_value() == "what is in this photo?"
        assert page.locator(USER_MESSAGES).count() == 0  # nothing was added to the conversation


@pytest.mark.slow
def test_stop_marks_the_reply_as_stopped(tiny_parts, monkeypatch):
    from chat.session import ChatSession

    # The second forward waits for Stop (at most 60 s): the reply cannot finish its image
    # before the click arrives, however slow the browser; a Stop that does nothing lets it
    # finish after the wait, and the checks below fail. The first token is a visible word: the
    # click waits for the page to show text.
    stopped, forwards = threading.Event(), []
    cancel = ChatSession.cancel

    def cancel_and_tell(session):
        cancel(session)
        stopped.set()

    def hold():
        if len(forwards) == 1:  # the second forward waits; a Stop that never comes waits once
            stopped.wait(60)
        forwards.append(1)

    monkeypatch.setattr(ChatSession, "cancel", cancel_and_tell)
    model = slowed(force_one_image(perturbed(tiny_model(tiny_parts)), words_first=3, opening=" Sure, one"), 0.05,
                   hold)
    with running_app(model) as url, chromium_page(CHROMIUM) as page:
        page.goto(url)
        page.get_by_label("message", exact=True).wait_for()
        start_reply(page, "Draw a slow picture.")
        page.wait_for_function("() => window.__hvlmReply.first_text_s !== undefined", timeout=60_000)
        page.get_by_role("button", name="Stop").click()
        seen = wait_reply(page, timeout_s=120)
        assert "first_image_s" not in seen  # stopped before the image was finished
        assert "(stopped)" in page.locator(BOT_MESSAGES).last.inner_text()
