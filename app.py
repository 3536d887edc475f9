"""The Gradio chat app: chat, ask for images mid-conversation, get step-by-step visual answers,
show the model an image and ask about it, and watch each image sharpen scale by scale.

    python app.py [--model PATH] [--host HOST] [--port PORT] [--verbose]

A thin layer over `chat.ChatSession`: every browser tab has its own ChatSession (its own
history and temporary folder, removed when the tab closes), and replies from every tab go
through one queue, one at a time, sharing one model.
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
from PIL import Image

from chat.conversation import Message
from chat.memory import release_freed_memory
from chat.quiet import add_dtype_flag, add_verbose_flag, check_model_folder, quiet
from chat.session import ChatSession, EmptyMessageError, MessageTooLongError, load_chat_model, load_upload
from generation import Done, GenerationConfig, ImageFinished, ScalePreview, TextDelta
from vlm.backbone import resolve_dtype
from vlm.image_io import ImageLoadError
from vlm.unified_model import UnifiedVLM

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "docs" / "examples"
EXAMPLES = [
    ["Hi! I'm making a poster. Can you draw a red circle for it?", None],
    ["How do I draw a snowman? Show me step by step.", None],
    ["What shapes are in this picture?", str(EXAMPLES_DIR / "shapes.png")],
    ["Make the circle green.", str(EXAMPLES_DIR / "edit_source_shapes.png")],  # an edit of an upload
]
DISPLAY_PX = 256
# Images are 64x64: shown at DISPLAY_PX with square pixels (display only; the files and the
# conversation download keep the original size).
CSS = f""".message-row img {{ width: {DISPLAY_PX}px !important; height: {DISPLAY_PX}px !important;
    max-width: none !important; max-height: none !important; object-fit: contain; image-rendering: pixelated; }}"""
MAX_QUEUE = 16
CLOSED_TAB_KEEP_S = 3600  # Gradio's own default
TEXT_REFRESH_S = 0.08
BUSY_NOTE = "A reply is still being written: wait for it to finish, or press Stop."


def friendly_upload_error(error: ImageLoadError, upload: str) -> str:
    """What went wrong with an upload, in words: the file's own name, never the server's path."""
    return (f"The attached file “{Path(upload).name}” could not be used: {error.reason}. "
            "Your message is still in the box: attach a PNG or JPEG image (or none) and send again.")


def preceding_text(parts: list[dict], index: int, limit: int = 120) -> str:
    """The text just before part `index` (what a step image illustrates), shortened."""
    for part in reversed(parts[:index]):
        if part["type"] == "text" and part["text"].strip():
            text = " ".join(part["text"].split())
            return text if len(text) <= limit else text[:limit - 1] + "…"
    return ""


class BrowserSession:
    """What one browser tab holds: its chat session, its images' PNGs, and what the chat shows
    besides the history (the drawing in progress, replies ended by Stop, an error note)."""

    def __init__(self, model: UnifiedVLM, root: Path):
        self.chat = ChatSession(model, GenerationConfig.for_model(model, previews=True))
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=root))
        self._paths: dict[str, str] = {}  # image content hash -> PNG shown for it
        self._rendered: dict[int, tuple[Message, list]] = {}  # id(message) -> (message, chat content)
        self.preview: tuple[Image.Image, int, int] | None = None  # image, scale index, number of scales
        self.stopped: list[Message] = []  # replies cut short by Stop (compared by identity)
        self.notice: str | None = None
        self.pending: tuple[str, list[Image.Image]] | None = None  # accepted, not yet answered
        self.busy = False

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def image_path(self, image: Image.Image) -> str:
        """One PNG per distinct image content (never keyed by id(): ids are reused after Clear)."""
        key = hashlib.sha1(image.mode.encode() + repr(image.size).encode() + image.tobytes()).hexdigest()
        if key not in self._paths:
            path = self.folder / f"{key}.png"
            image.save(path)
            self._paths[key] = str(path)
        return self._paths[key]

    def _image(self, image: Image.Image, label: str, alt: str) -> gr.Image:
        return gr.Image(self.image_path(image), label=label, show_label=True, alt_text=alt, interactive=False,
                        buttons=["download", "fullscreen"])

    def _message(self, message: Message) -> list:
        drawn = message.role == "assistant"
        numbered = drawn and len(message.images) > 1
        content, number = [], 0
        for index, part in enumerate(message.parts):
            if part["type"] == "text":
                content.append(part["text"])
                continue
            number += 1
            about = preceding_text(message.parts, index)
            if not drawn:
                label, alt = "your image", "The image you attached"
            elif numbered:
                label, alt = f"Step {number}", f"Step {number} drawing" + (f": {about}" if about else "")
            else:
                label, alt = "drawing", "The model's drawing" + (f": {about}" if about else "")
            content.append(self._image(part["image"], label, alt))
        return content

    def display(self) -> list[dict]:
        """The chat as shown; earlier messages are rendered once (a reply streams one update
        per token, and re-rendering every image of the history each time was most of the cost)."""
        shown = []
        messages = self.chat.conversation.messages
        for position, message in enumerate(messages):
            last = position == len(messages) - 1
            cached = self._rendered.get(id(message))  # the cache holds the message, so its id is not reused
            if cached is not None and cached[0] is message and not last:
                content = list(cached[1])
            else:
                content = self._message(message)
                self._rendered[id(message)] = (message, list(content))
            if last and message.role == "assistant" and self.preview is not None:
                image, scale, scales = self.preview
                content.append(self._image(image, f"drawing… scale {scale + 1} of {scales}",
                                           f"Drawing in progress, scale {scale + 1} of {scales}"))
            if any(message is stopped for stopped in self.stopped):
                content.append("*(stopped)*")
            shown.append({"role": message.role, "content": content or [""]})
        if self.notice:
            shown.append({"role": "assistant", "content": f"**⚠️ Not sent.** {self.notice}"})
        return shown

    def save_archive(self) -> str | None:
        """The whole conversation as a zip (conversation.json + original PNGs), or None if empty."""
        if not self.chat.conversation.messages:
            return None
        folder = self.folder / "conversation"
        self.chat.conversation.save(folder)
        return shutil.make_archive(str(self.folder / "conversation"), "zip", folder)


def residual_label(model: UnifiedVLM) -> str:
    """The residual-steps control says what 1 step means for this model."""
    if model.residual_head.one_step is not None:
        return "residual steps (0 = discrete only, 1 = one-step distilled head, 2-8 = diffusion steps)"
    return "residual steps (0 = discrete only; this model has no distilled one-step head)"


def build_app(model: UnifiedVLM) -> gr.Blocks:
    root = Path(tempfile.mkdtemp(prefix="hybrid-vlm-app-"))
    atexit.register(shutil.rmtree, root, True)  # every tab's folder goes when the app stops

    def session_of(state: BrowserSession | None) -> BrowserSession:
        return state if state is not None else BrowserSession(model, root)

    def overrides(temperature, cfg_scale, residual_steps, seed, max_images, image_candidates=None) -> dict:
        chosen = {"temperature": float(temperature), "cfg_scale": float(cfg_scale),
                  "residual_steps": int(residual_steps), "max_images": int(max_images),
                  "seed": None if seed is None or int(seed) < 0 else int(seed)}
        if image_candidates is not None:  # an API call written before the setting existed leaves it out
            chosen["image_candidates"] = int(image_candidates)
        return chosen

    def accept(message, upload, state):
        """Fast, no model: take the message off the box, or say what is wrong and leave it there."""
        state = session_of(state)
        if state.busy:
            gr.Info(BUSY_NOTE)
            return state.display(), state, gr.update(), gr.update(), gr.update()
        state.notice, state.pending = None, None
        try:
            images = [load_upload(upload)] if upload else []
        except ImageLoadError as error:
            state.notice = friendly_upload_error(error, upload)
            return state.display(), state, gr.update(), gr.update(), gr.update()
        if not (message or "").strip() and not images:
            state.notice = "The message is empty: write something or attach an image."
            return state.display(), state, gr.update(), gr.update(), gr.update()
        try:
            state.chat.check_fits(message or "", images)
        except MessageTooLongError as error:
            state.notice = f"The message is too long: {error}."
            return state.display(), state, gr.update(), gr.update(), gr.update()
        state.pending, state.busy = (message or "", images), True
        return state.display(), state, "", None, gr.update(interactive=False, value="Writing…")

    def stream(state: BrowserSession, events):
        state.preview = None
        shown_at = 0.0
        try:
            for event in events:
                if isinstance(event, ScalePreview):
                    state.preview = (event.image, event.scale_index, len(model.image_tokenizer.config.scales))
                elif isinstance(event, ImageFinished):
                    state.preview = None
                elif isinstance(event, Done) and event.reason == "cancelled":
                    state.stopped.append(state.chat.conversation.messages[-1])
                # Text is shown at most every TEXT_REFRESH_S (each update resends the chat to the
                # browser; per token that cost more than the model); images and previews at once.
                if isinstance(event, TextDelta) and time.monotonic() - shown_at < TEXT_REFRESH_S:
                    continue
                shown_at = time.monotonic()
                yield state.display(), state
        finally:
            state.preview, state.busy = None, False
            release_freed_memory()  # every reply, from the page or the API, ends here
        yield state.display(), state

    def respond(state, temperature, cfg_scale, residual_steps, seed, max_images, image_candidates=None):
        state = session_of(state)
        if state.pending is None:  # accept() refused it, or a reply was running
            yield state.display(), state
            return
        text, images = state.pending
        state.pending = None
        events = state.chat.send(text, images, **overrides(temperature, cfg_scale, residual_steps, seed, max_images,
                                                           image_candidates))
        yield from stream(state, events)

    def send_for_api(message, upload, state, temperature, cfg_scale, residual_steps, seed, max_images,
                     image_candidates=None):
        """The whole of Send in one call, for gradio_client (`api_name="/send"`): the reply streams;
        a refused message comes back unchanged with the note saying why."""
        shown, state, *_ = accept(message, upload, state)
        if state.pending is None:
            yield shown, state, message, upload
            return
        for shown, current in respond(state, temperature, cfg_scale, residual_steps, seed, max_images,
                                      image_candidates):
            yield shown, current, "", None

    def start_regenerate(state):
        state = session_of(state)
        if state.busy:
            gr.Info(BUSY_NOTE)
            return state, gr.update()
        state.notice, state.busy = None, True
        return state, gr.update(interactive=False, value="Writing…")

    def regenerate(state, temperature, cfg_scale, residual_steps, seed, max_images, image_candidates=None):
        state = session_of(state)
        try:
            events = state.chat.regenerate(**overrides(temperature, cfg_scale, residual_steps, seed, max_images,
                                                       image_candidates))
            yield from stream(state, events)
        except EmptyMessageError:
            state.busy = False
            state.notice = "There is no message to answer again yet."
            yield state.display(), state

    def finish(state):
        """The reply is over: Send comes back, and the download holds the conversation as shown."""
        state = session_of(state)
        state.busy = False
        return gr.update(interactive=True, value="Send"), gr.update(value=state.save_archive())

    def stop(state):
        if state is not None:
            state.chat.cancel()

    def clear(state):
        state = session_of(state)
        state.chat.reset()
        state.stopped, state.notice, state._rendered = [], None, {}
        return [], state, gr.update(value=None)

    with gr.Blocks(title="hybrid-vlm", delete_cache=(3600, 3600)) as app:
        gr.Markdown("## hybrid-vlm\nChat; ask for a picture at any point and watch it sharpen scale by scale; "
                    "ask for step-by-step drawing instructions; or upload an image and ask about it.")
        state = gr.State(None, delete_callback=lambda session: session.close() if session is not None else None)
        chatbot = gr.Chatbot(label="conversation", height=620, group_consecutive_messages=False)
        with gr.Row():
            message = gr.Textbox(label="message", placeholder="Type a message...", scale=4)
            # A plain file input: every upload reaches load_upload, which names what is wrong with a bad one.
            upload = gr.File(label="image (optional)", type="filepath", height=120, scale=1)
        with gr.Row():
            send = gr.Button("Send", variant="primary", elem_id="send-button")
            stop_button = gr.Button("Stop")
            regenerate_button = gr.Button("Regenerate")
            clear_button = gr.Button("Clear")
            download_button = gr.DownloadButton("Download conversation", value=None)
        with gr.Accordion("settings", open=False):
            temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="temperature (0 = greedy)")
            cfg_scale = gr.Slider(1.0, 8.0, value=GenerationConfig.for_model(model).cfg_scale, step=0.5,
                                  label="CFG scale (1 = off)")
            residual_steps = gr.Slider(0, 8, value=GenerationConfig.for_model(model).residual_steps, step=1,
                                       label=residual_label(model))
            seed = gr.Number(value=-1, precision=0, label="seed (-1 = random)")
            max_images = gr.Slider(0, 8, value=4, step=1, label="max images per answer")
            image_candidates = gr.Slider(1, 8, value=GenerationConfig.for_model(model).image_candidates, step=1,
                                         label="drawings per image: the model keeps the one it finds likeliest "
                                               "(N costs up to N times the drawing time)")
        gr.Examples(EXAMPLES, inputs=[message, upload], label="try")
        settings = [temperature, cfg_scale, residual_steps, seed, max_images, image_candidates]
        # The model is shared by every tab: its events form one queue ("model"), one at a time.
        # accept/finish/stop never touch the model and run at once; nothing a reply streams
        # writes to the message box or the attachment, so what is typed meanwhile stays.
        model_queue = {"concurrency_id": "model", "concurrency_limit": 1}
        for trigger in (send.click, message.submit):
            trigger(accept, [message, upload, state], [chatbot, state, message, upload, send], api_name=False,
                    concurrency_limit=None) \
                .then(respond, [state, *settings], [chatbot, state], api_name=False, **model_queue) \
                .then(finish, [state], [send, download_button], api_name=False, concurrency_limit=None)
        # For scripts (gradio_client's "/send"): the same Send in one streamed call.
        gr.Button(visible=False).click(send_for_api, [message, upload, state, *settings],
                                       [chatbot, state, message, upload], api_name="send", **model_queue)
        regenerate_button.click(start_regenerate, [state], [state, send], api_name=False, concurrency_limit=None) \
            .then(regenerate, [state, *settings], [chatbot, state], api_name="regenerate", **model_queue) \
            .then(finish, [state], [send, download_button], api_name=False, concurrency_limit=None)
        stop_button.click(stop, [state], None, api_name="stop", concurrency_limit=None)
        clear_button.click(clear, [state], [chatbot, state, download_button], api_name="clear")
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The hybrid-vlm chat app (Gradio).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (save_pretrained / training output); default: the shipped default model")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUE,
                        help="requests that may wait for the model at once; past it a sender is told the app is "
                             "busy and to try again, instead of waiting without end")
    parser.add_argument("--closed-tab-keep-s", type=float, default=CLOSED_TAB_KEEP_S,
                        help="seconds a closed browser tab's conversation is kept in memory in case the tab comes "
                             "back (a few MB each); lower it on a busy server")
    add_verbose_flag(parser)
    add_dtype_flag(parser)
    args = parser.parse_args(argv)
    check_model_folder(parser, args.model)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet(args.verbose)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = load_chat_model(args.model, resolve_dtype(args.dtype), args.int8)
    serve(build_app(model), args.host, args.port, args.max_queue, args.closed_tab_keep_s)


def serve(app: gr.Blocks, host: str, port: int, max_queue: int = MAX_QUEUE,
          closed_tab_keep_s: float = CLOSED_TAB_KEEP_S, prevent_thread_lock: bool = False, **launch_options) -> None:
    """Queue (one model, one reply at a time, at most `max_queue` waiting) and start the server;
    a closed tab's session is kept `closed_tab_keep_s` seconds in case the tab comes back."""
    app.queue(default_concurrency_limit=1, max_size=max_queue).launch(server_name=host, server_port=port, css=CSS,
                                                                      prevent_thread_lock=True, **launch_options)
    # Gradio keeps each closed tab's state (its history and a copy of the page's config, a few
    # MB) for an hour and has no launch option for it: its state holder's attribute is the knob.
    app.state_holder.STATE_TTL_WHEN_CLOSED = closed_tab_keep_s
    if not prevent_thread_lock:
        app.block_thread()


if __name__ == "__main__":
    main()
