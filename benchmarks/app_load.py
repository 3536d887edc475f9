"""Many people at one app: concurrent gradio_client sessions, each a multi-turn conversation
with drawings and uploads. Every reply must arrive, no history may leak into another
session, memory must stay flat from one round of sessions to the next (the first round
warms the allocator and the model up), and past the queue limit a sender must be told the app is
busy instead of waiting without end. Used by `python -m benchmarks.robustness` (default
model) and `tests/test_app.py` (tiny model).
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

SETTINGS = {"temperature": 0.7, "cfg_scale": 3.0, "residual_steps": 1, "seed": 0, "max_images": 1}


def resident_mb() -> float:
    """This process's resident memory now (Linux /proc; the app runs in this process)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def sampling_memory(samples: list[float], interval_s: float) -> Iterator[None]:
    """Append `resident_mb()` to `samples` now and every `interval_s` until the block ends: the
    peak of a stretch of work, which one reading before and after would miss."""
    done = threading.Event()

    def sample() -> None:
        samples.append(resident_mb())
        while not done.wait(interval_s):
            samples.append(resident_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield
    finally:
        done.set()
        sampler.join()


@dataclass
class LoadReport:
    clients: int
    turns: int
    rounds: int = 1
    replies_lost: int = 0
    histories_crossed: int = 0
    latencies: list[float] = field(default_factory=list)
    rss_samples: list[float] = field(default_factory=list)
    rss_after_round: list[float] = field(default_factory=list)  # resident memory once each round has ended
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        latencies = sorted(self.latencies) or [float("nan")]
        return {
            "clients": self.clients, "turns": self.turns, "rounds": self.rounds, "replies": len(self.latencies),
            "replies_lost": self.replies_lost, "histories_crossed": self.histories_crossed,
            "latency_p50_s": round(statistics.median(latencies), 2),
            "latency_p95_s": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 2),
            "peak_rss_mb": round(max(self.rss_samples, default=0.0), 1),
            "rss_after_round_mb": [round(value, 1) for value in self.rss_after_round],
            # Flat memory: what the last round of sessions left resident beyond what the first left
            # (a leak grows with every round; warm-up happens once). None with a single round.
            "rss_growth_mb": round(self.rss_after_round[-1] - self.rss_after_round[0], 1)
            if len(self.rss_after_round) > 1 else None,
            "errors": self.errors[:10],
        }


def _send(client, text: str, upload=None) -> list[dict]:
    values = SETTINGS
    chat, _, _ = client.predict(text, upload, values["temperature"], values["cfg_scale"], values["residual_steps"],
                                values["seed"], values["max_images"], api_name="/send")
    return chat


def _user_texts(chat: list[dict]) -> list[str]:
    texts = []
    for message in chat:
        if message["role"] == "user":
            content = message["content"]
            texts.append(" ".join(part.get("text", "") if isinstance(part, dict) else str(part)
                                  for part in (content if isinstance(content, list) else [content])))
    return texts


def run_load(url: str, clients: int, turns: int, rounds: int = 1, timeout_s: float = 600.0) -> LoadReport:
    """`rounds` times in a row, `clients` new sessions at once, `turns` messages each: a
    question, a drawing request, an upload with a question, in turn. Samples memory every
    0.2 s while they run, and once more after each round."""
    from gradio_client import Client, handle_file

    report = LoadReport(clients, turns, rounds)
    lock = threading.Lock()
    folder = Path(tempfile.mkdtemp(prefix="app-load-"))
    upload = folder / "blue.png"
    Image.new("RGB", (64, 64), "blue").save(upload)
    def talk(index: int):
        client = Client(url, verbose=False)
        tag = f"client{index}"
        for turn in range(turns):
            kind = turn % 3
            text = [f"Hello, I am {tag}. What can you do? (turn {turn})",
                    f"{tag} asks: draw a red circle please (turn {turn})",
                    f"{tag} asks: what colour is this? (turn {turn})"][kind]
            started = time.perf_counter()
            try:
                chat = _send(client, text, handle_file(str(upload)) if kind == 2 else None)
            except Exception as error:  # noqa: BLE001  (a lost reply is what is counted)
                with lock:
                    report.replies_lost += 1
                    report.errors.append(f"{tag} turn {turn}: {type(error).__name__}: {error}")
                continue
            elapsed = time.perf_counter() - started
            users = _user_texts(chat)
            arrived = bool(chat) and chat[-1]["role"] == "assistant" and users and text in users[-1]
            crossed = any(tag not in user for user in users)
            with lock:
                report.latencies.append(elapsed)
                report.replies_lost += 0 if arrived else 1
                report.histories_crossed += int(crossed)
        client.close()  # the tab closes: the app may let go of the session

    with sampling_memory(report.rss_samples, 0.2):
        for _ in range(rounds):
            threads = [threading.Thread(target=talk, args=(index,)) for index in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=timeout_s)
            gc.collect()
            report.rss_after_round.append(resident_mb())
    return report


def burst(url: str, requests: int) -> tuple[int, int, list[str]]:
    """`requests` sends at the same moment; returns (answered, refused as busy, other errors).

    Every client connects first and all send together (a barrier): connecting takes several
    requests each, and on a busy machine unsynchronised clients arrived spread out enough to
    be served one after another, never finding the queue full."""
    from gradio_client import Client

    results: list[str] = []
    lock = threading.Lock()
    together = threading.Barrier(requests)

    def one(index: int):
        client = None
        try:
            client = Client(url, verbose=False)
            together.wait(timeout=300)
            _send(client, f"burst {index}")
            outcome = "answered"
        except Exception as error:  # noqa: BLE001
            if client is None:
                together.abort()  # the others must not wait for a client that will never come
            outcome = "busy" if "queue is full" in str(error).lower() else f"{type(error).__name__}: {error}"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    others = [result for result in results if result not in ("answered", "busy")]
    others += ["no outcome in 600 s"] * (requests - len(results))  # a thread still hanging
    return results.count("answered"), results.count("busy"), others
