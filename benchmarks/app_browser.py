"""The Gradio app in a real headless Chromium: time to first text, preview, image and end of reply; screenshots.

    python -m benchmarks.app_browser [--model PATH] [--screenshots DIR] [--json PATH]

Starts the app on a free local port with the model (the default model when none is given),
opens it in Debian's Chromium driven by Playwright (through the browser's executable path:
nothing is downloaded), types a request for an image, and times what the user sees: the
first text of the reply, the first coarse-to-fine preview of its image, the finished image,
and the end of the whole reply (the Send button is back). Repeats --runs times after a
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

# As root and on a closed network Chromium needs these: no sandbox, no GPU, no background calls home.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BOT_MESSAGES = ".message-row.bot-row"  # one row per assistant turn: its text and its images
USER_MESSAGES = ".message-row.user-row"
DEFAULT_PROMPTS = ("Hi! Can you draw a red circle for me?", "How do I draw a snowman? Show me step by step.")
PREVIEW_SCALE = 4  # the scale preview the mid-drawing screenshot waits for
TIMINGS = ("first_text_s", "first_preview_s", "first_image_s", "done_s")


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
def running_app(model, max_queue: int | None = None, closed_tab_keep_s: float | None = None) -> Iterator[str]:
    """The app on a free local port, as `python app.py` runs it; yields its URL."""
    from app import CLOSED_TAB_KEEP_S, MAX_QUEUE, build_app, serve

    app = build_app(model)
    port = free_port()
    serve(app, "127.0.0.1", port, max_queue or MAX_QUEUE, CLOSED_TAB_KEEP_S if closed_tab_keep_s is None
          else closed_tab_keep_s, prevent_thread_lock=True, quiet=True)
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
            # Playwright's 30 s default, on a loaded 2-core machine with a cold browser, is tight.
            page.set_default_timeout(90_000)
            yield page
        finally:
            browser.close()


# Watches the page from inside the browser (exact timestamps, no polling gaps): the new
# reply's first text, its first scale preview, its first finished image, and when the Send
# button, disabled while a reply is written, comes back.
RECORDER = """(before) => {
  const rec = {previews: [], images: []};
  window.__hvlmReply = rec;
  const start = performance.now();
  const seconds = () => (performance.now() - start) / 1000;
  const observer = new MutationObserver(() => {
    const now = seconds();
    const rows = document.querySelectorAll('.message-row.bot-row');
    if (rows.length > before) {
      const reply = rows[rows.length - 1];
      if (rec.first_text_s === undefined && reply.innerText.trim()) rec.first_text_s = now;
      for (const img of reply.querySelectorAll('img')) {
        if (img.alt.startsWith('Drawing in progress')) {
          if (rec.first_preview_s === undefined) rec.first_preview_s = now;
          if (!rec.previews.includes(img.alt)) rec.previews.push(img.alt);
        } else {
          if (rec.first_image_s === undefined) rec.first_image_s = now;
          if (!rec.images.includes(img.alt)) rec.images.push(img.alt);
        }
      }
    }
    const send = document.querySelector('#send-button');
    const busy = send && (send.disabled || send.innerText.trim() !== 'Send');
    if (busy) rec.busy_seen = true;
    if (rec.busy_seen && !busy && rec.done_s === undefined) { rec.done_s = now; observer.disconnect(); }
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true, attributes: true});
}"""


def start_reply(page, text: str) -> None:
    """Type `text`, start watching the page, and press Send (returns at once)."""
    page.get_by_label("message", exact=True).fill(text)
    page.evaluate(RECORDER, page.locator(BOT_MESSAGES).count())
    page.locator("#send-button").click()


def wait_reply(page, timeout_s: float = 300.0) -> dict:
    """Wait for the reply started by `start_reply` to end; returns what the recorder saw."""
    page.wait_for_function("() => window.__hvlmReply.done_s !== undefined", timeout=timeout_s * 1000)
    return page.evaluate("() => window.__hvlmReply")


def send_and_time(page, text: str, timeout_s: float = 300.0) -> dict:
    """Type `text`, press Send, and time the reply as the user sees it.

    Returns seconds from the click to the reply's first text (`first_text_s`), first scale
    preview (`first_preview_s`), first finished image (`first_image_s`) and its end
    (`done_s`: the Send button is back, after every text and image of the reply), plus the
    alt texts of the previews and images seen, in order (`previews`, `images`).
    """
    start_reply(page, text)
    return wait_reply(page, timeout_s)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.app_browser", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--prompt", action="append", default=None,
                        help="a message to type (repeatable; default: one drawing request and one step-by-step "
                             "request, whose end comes after several images)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs after one warm-up (each in a fresh page)")
    parser.add_argument("--seed", type=int, default=0, help="generation seed set in the app's settings")
    parser.add_argument("--screenshots", type=Path, default=Path("docs"),
                        help="folder for the pages saved: app_preview.png (a drawing mid-preview), "
                             "app_screenshot.png (the last prompt's finished reply), app_error.png (a bad upload)")
    parser.add_argument("--json", type=Path, default=None, help="also write the medians here")
    args = parser.parse_args(argv)
    args.prompt = args.prompt or list(DEFAULT_PROMPTS)
    return args


def set_seed(page, seed: int) -> None:
    page.get_by_role("button", name="settings ▼").click()
    page.get_by_label("seed (-1 = random)").fill(str(seed))


def attach_file(page, path: Path, attempts: int = 4, wait_s: float = 20.0) -> None:
    """Put `path` in the upload box and wait until the upload has finished: the box then lists
    the file (its name, split into stem and extension). The name alone shows up earlier, in the
    progress bar while the file is still on its way; a message sent then goes without it.
    Under load the file can be set before Gradio has wired its upload handler (the message box
    is visible by then; seen in CI, the name never appeared in 30 s): the file is then set
    again, as a user would. When the page has no file input any more, only the wait goes on:
    CI once timed out setting the file a second time because Gradio had taken the input away
    (likely mid-upload)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(attempts):
        file_input = page.locator("input[type=file]")
        if attempt == 0 or file_input.count():
            try:  # the input can go between the count and the call: then wait as if it were gone
                file_input.set_input_files(str(path), timeout=(30 if attempt == 0 else 5) * 1000)
            except PlaywrightTimeout:
                if attempt == 0:
                    raise
        try:
            page.locator("table.file-preview td.filename", has_text=path.stem).first.wait_for(timeout=wait_s * 1000)
            return
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise
            logger.info("the page did not show %s yet; waiting again", path.name)


def show_bad_upload(page, url: str) -> None:
    """Attach a text file named like a photo and send: the page then shows the app's error."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        bad = Path(folder) / "holiday.png"
        bad.write_text("a text file, renamed")
        page.goto(url)
        page.get_by_label("message", exact=True).wait_for()
        attach_file(page, bad)
        page.get_by_label("message", exact=True).fill("What is in this photo?")
        page.locator("#send-button").click()
        page.wait_for_function("() => document.body.innerText.includes('could not be used')")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    executable = find_chromium()
    if executable is None:
        raise SystemExit("no Chromium found: install Debian's `chromium` (make test does) or set CHROMIUM=PATH")
    from chat.session import load_chat_model

    model = load_chat_model(args.model)
    runs: dict[str, list[dict]] = {prompt: [] for prompt in args.prompt}
    args.screenshots.mkdir(parents=True, exist_ok=True)
    with running_app(model) as url, chromium_page(executable) as page:
        for prompt in args.prompt:
            for run in range(args.runs + 1):
                page.goto(url)
                page.get_by_label("message", exact=True).wait_for()
                set_seed(page, args.seed)
                start_reply(page, prompt)
                if run == args.runs and prompt == args.prompt[-1]:
                    # the fourth of six scales: coarse but already recognisable, unlike the 1x1 first
                    page.wait_for_function(f"() => window.__hvlmReply.previews.length >= {PREVIEW_SCALE}"
                                           " || window.__hvlmReply.done_s !== undefined", timeout=300_000)
                    page.screenshot(path=str(args.screenshots / "app_preview.png"), full_page=True)
                timings = wait_reply(page)
                logger.info("%r run %d%s: %s", prompt, run, " (warm-up)" if run == 0 else "",
                            {name: round(timings[name], 2) for name in TIMINGS if name in timings})
                if run > 0:
                    runs[prompt].append(timings)
        page.screenshot(path=str(args.screenshots / "app_screenshot.png"), full_page=True)
        show_bad_upload(page, url)
        page.screenshot(path=str(args.screenshots / "app_error.png"), full_page=True)
    results = {}
    for prompt, timed in runs.items():
        medians = {name: statistics.median(run[name] for run in timed if name in run)
                   for name in TIMINGS if any(name in run for run in timed)}
        results[prompt] = {**medians, "images": statistics.median(len(run["images"]) for run in timed),
                           "runs": timed}
        print(f"\n| in the browser, prompt {prompt!r} | median of {len(timed)} (s) |\n|---|---|")
        for name, value in medians.items():
            print(f"| {name} | {value:.2f} |")
        print(f"| images in the reply | {results[prompt]['images']:g} |")
        missing = [name for name in TIMINGS if name not in medians]
        if missing:
            print(f"(never seen: {', '.join(missing)})")
    print(f"screenshots: {args.screenshots}/app_preview.png, app_screenshot.png, app_error.png")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))

if __name__ == "__main__":
    main()
