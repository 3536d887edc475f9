"""The Gradio app in a real headless Chromium: time to first text and first image, and a screenshot.

    python -m benchmarks.app_browser [--model PATH] [--screenshot docs/app_screenshot.png] [--json PATH]

Starts the app on a free local port with the model (the default model when none is given),
opens it in Debian's Chromium driven by Playwright (through the browser's executable path:
nothing is downloaded), types a request for an image, and times what the user sees: the
first text of the reply, and the first <img> inside it. Repeats --runs times after a
warm-up and prints the medians. `tests/test_app_browser.py` drives the same page the same way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

# As root and on a closed network Chromium needs these: no sandbox, no GPU, no background calls home.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BOT_MESSAGES = ".message-row.bot-row"  # one row per assistant turn: its text and its images
USER_MESSAGES = ".message-row.user-row"


def find_chromium() -> str | None:
    """The system Chromium (`CHROMIUM` overrides), or None."""
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and (path := shutil.which(candidate)):
            return path
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_app(model) -> Iterator[str]:
    """The app on a free local port, as `python app.py` runs it; yields its URL."""
    from app import build_app

    app = build_app(model)
    port = free_port()
    app.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1", server_port=port,
                                                  prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@contextmanager
def chromium_page(executable: str, width: int = 1100, height: int = 1000) -> Iterator:
    """A Playwright page in headless Chromium from `executable` (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def send_and_time(page, text: str, timeout_s: float = 300.0) -> dict[str, float]:
    """Type `text`, press Send, and time the reply as the user sees it.

    Returns seconds from the click to the first text of the new reply (`first_text_s`), to the
    first <img> in it (`first_image_s`), and until the Send button is idle again (`done_s`).
    """
    bots = page.locator(BOT_MESSAGES)
    before = bots.count()
    page.get_by_label("message").fill(text)
    started = time.perf_counter()
    page.get_by_role("button", name="Send", exact=True).click()
    timings: dict[str, float] = {}
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        count = bots.count()
        if count > before:
            reply = bots.nth(count - 1)
            if "first_text_s" not in timings and reply.inner_text().strip():
                timings["first_text_s"] = time.perf_counter() - started
            if "first_image_s" not in timings and reply.locator("img").count() > 0:
                timings["first_image_s"] = time.perf_counter() - started
        if "first_text_s" in timings and "first_image_s" in timings:
            break
        page.wait_for_timeout(25)
    # The reply is done when the progress indicator is gone.
    page.wait_for_function("() => !document.querySelector('.progress-text, .eta-bar')",
                           timeout=max(1.0, deadline - time.perf_counter()) * 1000)
    timings["done_s"] = time.perf_counter() - started
    return timings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.app_browser", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--prompt", default="Hi! Can you draw a red circle for me?", help="the message typed")
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (each in a fresh page)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed set in the app's settings")
    parser.add_argument("--screenshot", type=Path, default=Path("docs/app_screenshot.png"),
                        help="where the last run's page is saved")
    parser.add_argument("--json", type=Path, default=None, help="also write the medians here")
    return parser.parse_args(argv)


def set_seed(page, seed: int) -> None:
    page.get_by_role("button", name="settings ▼").click()
    page.get_by_label("seed (-1 = random)").fill(str(seed))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    executable = find_chromium()
    if executable is None:
        raise SystemExit("no Chromium found: install Debian's `chromium` (make test does) or set CHROMIUM=PATH")
    from chat.session import load_chat_model

    model = load_chat_model(args.model)
    runs = []
    with running_app(model) as url, chromium_page(executable) as page:
        for run in range(args.runs + 1):
            page.goto(url)
            page.get_by_label("message").wait_for()
            set_seed(page, args.seed)
            timings = send_and_time(page, args.prompt)
            logger.info("run %d%s: %s", run, " (warm-up)" if run == 0 else "",
                        {name: round(value, 2) for name, value in timings.items()})
            if run > 0:
                runs.append(timings)
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.screenshot), full_page=True)
    names = ("first_text_s", "first_image_s", "done_s")
    medians = {name: statistics.median(run[name] for run in runs if name in run)
               for name in names if any(name in run for run in runs)}
    print(f"| in the browser, prompt {args.prompt!r} | median of {len(runs)} (s) |\n|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} |")
    missing = [name for name in names if name not in medians]
    if missing:
        print(f"(never seen: {', '.join(missing)})")
    print(f"screenshot: {args.screenshot}")
    if args.json:
        args.json.write_text(json.dumps({**medians, "runs": runs, "prompt": args.prompt}, indent=2))


if __name__ == "__main__":
    main()
