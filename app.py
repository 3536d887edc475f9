"""The Gradio chat app: chat, ask for images mid-conversation, get step-by-step visual answers,
show the model an image and ask about it.

    python app.py [--model PATH] [--host HOST] [--port PORT]

A thin layer over `chat.ChatSession`: every browser session has its own ChatSession (its
own history), and replies go through Gradio's queue one at a time, sharing one model.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import uuid
from pathlib import Path

import gradio as gr

from chat.session import ChatSession, EmptyMessageError, load_chat_model
from generation import GenerationConfig
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


class BrowserSession:
    """What one browser tab holds: its chat session and the PNGs shown for its images."""

    def __init__(self, model: UnifiedVLM):
        self.chat = ChatSession(model, GenerationConfig())
        self.folder = Path(tempfile.mkdtemp(prefix="hybrid-vlm-app-"))
        self._paths: dict[int, str] = {}

    def image_path(self, image) -> str:
        key = id(image)
        if key not in self._paths:
            path = self.folder / f"{uuid.uuid4().hex}.png"
            image.save(path)
            self._paths[key] = str(path)
        return self._paths[key]

    def display(self, notice: str | None = None) -> list[dict]:
        """The history as Chatbot messages; a reply with several images is shown as numbered steps."""
        shown = []
        for message in self.chat.conversation.messages:
            numbered = message.role == "assistant" and len(message.images) > 1
            content, step = [], 0
            for part in message.parts:
                if part["type"] == "text":
                    content.append(part["text"])
                else:
                    step += 1
                    content.append({"path": self.image_path(part["image"]),
                                    "alt_text": f"Step {step}" if numbered else "image"})
            shown.append({"role": message.role, "content": content or [""]})
        if notice:
            shown.append({"role": "assistant", "content": f"⚠️ {notice}"})
        return shown


def residual_label(model: UnifiedVLM) -> str:
    """The residual-steps control says what 1 step means for this model."""
    if model.residual_head.one_step is not None:
        return "residual steps (0 = discrete only, 1 = one-step distilled head, 2-8 = diffusion steps)"
    return "residual steps (0 = discrete only; this model has no distilled one-step head)"


def build_app(model: UnifiedVLM) -> gr.Blocks:
    def session_of(state: BrowserSession | None) -> BrowserSession:
        return state if state is not None else BrowserSession(model)

    def overrides(temperature, cfg_scale, residual_steps, seed, max_images) -> dict:
        return {"temperature": float(temperature), "cfg_scale": float(cfg_scale),
                "residual_steps": int(residual_steps), "max_images": int(max_images),
                "seed": None if seed is None or int(seed) < 0 else int(seed)}

    def stream(state: BrowserSession, events):
        try:
            for _ in events:
                yield state.display(), state
        except (EmptyMessageError, ImageLoadError) as error:
            yield state.display(notice=str(error)), state  # shown, never added to the history
            return
        yield state.display(), state

    def respond(message, upload, state, temperature, cfg_scale, residual_steps, seed, max_images):
        state = session_of(state)
        images = [upload] if upload else []
        events = state.chat.send(message or "", images,
                                 **overrides(temperature, cfg_scale, residual_steps, seed, max_images))
        for shown, current in stream(state, events):
            yield shown, current, "", None

    def regenerate(state, temperature, cfg_scale, residual_steps, seed, max_images):
        state = session_of(state)
        try:
            events = state.chat.regenerate(**overrides(temperature, cfg_scale, residual_steps, seed, max_images))
            yield from stream(state, events)
        except EmptyMessageError as error:
            yield state.display(notice=str(error)), state

    def stop(state):
        if state is not None:
            state.chat.cancel()

    def clear(state):
        state = session_of(state)
        state.chat.reset()
        return [], state

    def download(state):
        state = session_of(state)
        folder = state.folder / "conversation"
        state.chat.conversation.save(folder)
        archive = shutil.make_archive(str(state.folder / "conversation"), "zip", folder)
        return archive

    with gr.Blocks(title="hybrid-vlm") as app:
        gr.Markdown("## hybrid-vlm\nChat; ask for a picture at any point; ask for step-by-step drawing "
                    "instructions; or upload an image and ask about it.")
        state = gr.State(None)
        chatbot = gr.Chatbot(label="conversation", height=520)
        with gr.Row():
            message = gr.Textbox(label="message", placeholder="Type a message...", scale=4)
            # A plain file input: every upload reaches ChatSession, which names what is wrong with a bad one.
            upload = gr.File(label="image (optional)", type="filepath", height=120, scale=1)
        with gr.Row():
            send = gr.Button("Send", variant="primary")
            stop_button = gr.Button("Stop")
            regenerate_button = gr.Button("Regenerate")
            clear_button = gr.Button("Clear")
            download_button = gr.DownloadButton("Download conversation")
        with gr.Accordion("settings", open=False):
            temperature = gr.Slider(0.0, 1.5, value=0.7, step=0.05, label="temperature (0 = greedy)")
            cfg_scale = gr.Slider(1.0, 8.0, value=3.0, step=0.5, label="CFG scale (1 = off)")
            residual_steps = gr.Slider(0, 8, value=8, step=1, label=residual_label(model))
            seed = gr.Number(value=-1, precision=0, label="seed (-1 = random)")
            max_images = gr.Slider(0, 8, value=4, step=1, label="max images per answer")
        gr.Examples(EXAMPLES, inputs=[message, upload], label="try")
        settings = [temperature, cfg_scale, residual_steps, seed, max_images]
        send_inputs = [message, upload, state, *settings]
        send_outputs = [chatbot, state, message, upload]
        sending = [send.click(respond, send_inputs, send_outputs, api_name="send"),
                   message.submit(respond, send_inputs, send_outputs, api_name=False)]
        regenerating = regenerate_button.click(regenerate, [state, *settings], [chatbot, state], api_name="regenerate")
        stop_button.click(stop, [state], None, cancels=[*sending, regenerating], api_name="stop")
        clear_button.click(clear, [state], [chatbot, state], api_name="clear")
        download_button.click(download, [state], [download_button], api_name="download")
    return app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The hybrid-vlm chat app (Gradio).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="model folder (save_pretrained / training output); default: the shipped default model")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app = build_app(load_chat_model(args.model))
    app.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
