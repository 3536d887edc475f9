"""The app in a real browser: headless Debian Chromium driven by Playwright (tiny random model).

Loads a browser (a few seconds). Chromium comes from the set-up (`make test` installs
Debian's `chromium`); Playwright is pointed at its executable, so nothing is downloaded.
Without a Chromium the test is skipped, except under CI, where it must run.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.app_browser import BOT_MESSAGES, USER_MESSAGES, chromium_page, find_chromium, running_app, send_and_time
from tests.tiny_vlm import force_one_image, perturbed, tiny_model

CHROMIUM = find_chromium()
if CHROMIUM is None and os.environ.get("CI"):
    pytest.fail("CI must run the browser test: install Debian's chromium (make test does)", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (make test installs Debian's chromium)")


def test_a_browser_asks_for_an_image_and_sees_it_in_the_reply(tiny_parts, tmp_path):
    model = force_one_image(perturbed(tiny_model(tiny_parts)), words_first=3)
    with running_app(model) as url, chromium_page(CHROMIUM) as page:
        page.goto(url)
        page.get_by_label("message").wait_for()
        timings = send_and_time(page, "Please draw a red circle.", timeout_s=120)
        reply = page.locator(BOT_MESSAGES).last
        image = reply.locator("img").first
        image.wait_for()
        assert image.evaluate("node => node.complete && node.naturalWidth") == 32  # the drawn PNG, loaded
        assert reply.inner_text().strip()  # the text before the image
        assert set(timings) >= {"first_text_s", "first_image_s", "done_s"}
        assert page.locator(USER_MESSAGES).last.inner_text().strip() == \
            "Please draw a red circle."
        screenshot = tmp_path / "app.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
