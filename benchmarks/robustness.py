"""How much the project withstands, measured: bad inputs, many clients, crashes, two processes.

    python -m benchmarks.robustness [--model PATH] [--clients 4] [--turns 3] [--rounds 3] [--crash-trials 6]
                                    [--json PATH]

1. Bad inputs: every case of `benchmarks.bad_inputs` (images, JSONL, saved conversations,
   checkpoints, chat messages, generation settings) on the given model; each must end in
   a clear error (or, for merely unusual images, a correct load) with nothing on disk changed.
2. Load: the app on that model, `--clients` gradio_client sessions at once, each `--turns`
   messages (a question, a drawing, an upload), `--rounds` times with new sessions; the
   resident memory after each round must not grow past the first round's (which includes
   warm-up); then a burst past the queue limit.
3. Crashes: a tiny unified-model run and a tiny tokenizer run, each killed with SIGKILL at
   `--crash-trials` seeded random moments (checkpoint writes included) and run again: the
   end must equal an uninterrupted run's bit for bit (weights and log).
4. Two processes: the tiny unified run under torchrun with 2 processes against 1 process with
   twice the gradient accumulation (same data, same averaged gradients).
5. Conversation saves: killed halfway (`--save-trials` times) and run out of disk (a
   file-size limit); the earlier save must stay whole, and the full disk must be named.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the shipped default model)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent app sessions in the load test")
    parser.add_argument("--turns", type=int, default=3, help="messages each session sends")
    parser.add_argument("--rounds", type=int, default=3,
                        help="load rounds, each with new sessions; memory must not grow from the first round's end "
                             "to the last's")
    parser.add_argument("--closed-tab-keep-s", type=float, default=5.0,
                        help="the app's --closed-tab-keep-s during the load test: a closed session's state is let go "
                             "after this long, so memory growth between rounds measures leaks (the app's default keeps "
                             "each closed tab, a few MB, for an hour)")
    parser.add_argument("--max-queue", type=int, default=4, help="the app's queue limit during the load test")
    parser.add_argument("--crash-trials", type=int, default=6, help="kill points per trainer")
    parser.add_argument("--save-trials", type=int, default=10, help="kills during conversation saves")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["bad_inputs", "load", "crashes", "ddp", "saves"],
                        help="leave a part out (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def bad_input_results(model) -> dict:
    from benchmarks.bad_inputs import catalogue, run_cases

    outcomes = run_cases(catalogue(model))
    failures = [f"{outcome.case.group} / {outcome.case.name}: {outcome.detail}" for outcome in outcomes
                if not outcome.ok]
    groups = sorted({outcome.case.group for outcome in outcomes})
    return {"bad_inputs_tried": len(outcomes), "bad_inputs_clear_error": sum(outcome.ok for outcome in outcomes),
            "bad_inputs_per_group": {group: sum(outcome.case.group == group for outcome in outcomes)
                                     for group in groups},
            "bad_input_failures": failures}


def load_results(model, clients: int, turns: int, rounds: int, max_queue: int, closed_tab_keep_s: float) -> dict:
    from benchmarks.app_browser import running_app
    from benchmarks.app_load import burst, run_load

    with running_app(model, max_queue=max_queue, closed_tab_keep_s=closed_tab_keep_s) as url:
        report = run_load(url, clients, turns, rounds).summary()
        answered, busy, others = burst(url, max_queue + 4)
    return {**report, "closed_tab_keep_s": closed_tab_keep_s, "queue_limit": max_queue, "burst": max_queue + 4,
            "burst_answered": answered, "burst_told_busy": busy, "burst_other_errors": others}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results: dict = {}
    started = time.time()
    if not {"bad_inputs", "load"} <= set(args.skip):
        from chat.quiet import quiet
        from chat.session import load_chat_model

        quiet()
        model = load_chat_model(args.model)
        if "bad_inputs" not in args.skip:
            results |= bad_input_results(model)
            logger.info("bad inputs: %d of %d clear", results["bad_inputs_clear_error"], results["bad_inputs_tried"])
        if "load" not in args.skip:
            results |= load_results(model, args.clients, args.turns, args.rounds, args.max_queue,
                                    args.closed_tab_keep_s)
            logger.info("load: %s", {key: results[key] for key in ("replies_lost", "histories_crossed",
                                                                   "latency_p50_s", "latency_p95_s")})
    if not {"crashes", "ddp"} <= set(args.skip):
        from benchmarks.training_crashes import build_tiny_setup, crash_trials, ddp_matches_one_process

        with tempfile.TemporaryDirectory(prefix="robustness-") as folder:
            work = Path(folder)
            setup = build_tiny_setup(work / "setup")
            if "crashes" not in args.skip:
                trials = crash_trials(setup, work, args.crash_trials, args.seed)
                results |= {"crash_points_tried": sum(trial["killed"] for trial in trials),
                            "resumes_exact": sum(trial["killed"] and trial["exact"] for trial in trials),
                            "crash_trials": trials}
            if "ddp" not in args.skip:
                results["ddp_two_process_equal"] = ddp_matches_one_process(setup, work)
    if "saves" not in args.skip:
        from benchmarks.save_crashes import full_disk_save, killed_saves

        with tempfile.TemporaryDirectory(prefix="robustness-saves-") as folder:
            results |= killed_saves(Path(folder), args.save_trials, args.seed) | full_disk_save(Path(folder))
    results["seconds"] = round(time.time() - started, 1)
    print(json.dumps({key: value for key, value in results.items() if key not in ("crash_trials",)}, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
