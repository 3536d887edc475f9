"""The app in a real browser: headless Debian Chromium driven by Playwright (tiny random model).

Loads a browser (a few seconds). Chromium comes from the set-up (`make test` installs
Debian's `chromium`); Playwright is pointed at its executable, so nothing is downloaded.
Without a Chromium the test is skipped, except under CI, where it must run.
"""

from __future__ import annotations

import json
import os
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


def slowed(model, seconds: float):
    """Every decoder forward takes `seconds` longer: a reply long enough to act during it."""
    original = model.run_decoder

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return original(*args, **kwargs)

    model.run_decoder = slow
    return model


@pytest.fixture
def drawing_model(tiny_parts):
    return slowed(force_one_image(perturbed(tiny_model(tiny_parts)), words_first=3), 0.15)


@pytest.mark.slow
def test_a_drawing_is_previewed_scale_by_scale_shown_large_and_typing_survives(drawing_model, tmp_path):
    with running_app(drawing_model) as url, chromium_page(CHROMIUM) as page:
        page.goto(url)
        box = page.get_by_label("message", exact=True)
        box.wait_for()
        start_reply(page, "Please draw a red circle.")
        page.wait_for_function("() => window.__hvlmReply.busy_seen")
        assert page.locator("#send-button").is_disabled()  # no silent drop: Send is visibly off
        box.press_sequentially("my next question is", delay=20)  # typed while the reply streams
        seen = wait_reply(page, timeout_s=120)
        assert box.input_value() == "my next question is"
        assert seen["previews"] and seen["first_preview_s"] < seen["first_image_s"] < seen["done_s"]
        # The app sends every scale; a busy browser may paint two updates as one frame, so the
        # page is asked for several previews, coarse to fine, not for each single one.
        scales = [int(alt.split("scale ")[1].split(" of")[0]) for alt in seen["previews"]]
        assert len(scales) >= 2 and scales == sorted(set(scales)), seen["previews"]
        image = page.locator(BOT_MESSAGES).last.locator("img").last
        alt, width = image.evaluate("node => [node.alt, node.getBoundingClientRect().width]")
        assert width >= 256 and alt.startswith("The model's drawing")
        assert not page.locator(BOT_MESSAGES).last.locator("img[alt^='Drawing in progress']").count()
        assert page.locator(USER_MESSAGES).last.inner_text().strip() == "Please draw a red circle."

        drawing_model.reset_script()
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
def test_stop_marks_the_reply_as_stopped(tiny_parts):
    model = slowed(force_one_image(perturbed(tiny_model(tiny_parts)), words_first=3), 0.5)
    with running_app(model) as url, chromium_page(CHROMIUM) as page:
        page.goto(url)
        page.get_by_label("message", exact=True).wait_for()
        start_reply(page, "Draw a slow picture.")
        page.wait_for_function("() => window.__hvlmReply.first_text_s !== undefined", timeout=60_000)
        page.get_by_role("button", name="Stop").click()
        seen = wait_reply(page, timeout_s=60)
        assert "first_image_s" not in seen  # stopped before the image was finished
        assert "(stopped)" in page.locator(BOT_MESSAGES).last.inner_text()
