"""``python -m bench``: measure, then write JSON, Markdown and plots (see bench/run.sh)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from bench import cost, latency, report
from bench.correction import make_corrector
from bench.paths import README, RESULTS_DIR, default_eval_dir
from bench.run import PARTS, Options, run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated, of: {', '.join(PARTS)}"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smallest input: one generated clip, tiny model"
    )
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    parser.add_argument(
        "--eval-dir",
        type=Path,
        help="real-speech set with manifest.jsonl (default: $BENCH_EVAL_DIR or ../shared/eval; "
        "generated speech when absent)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--price",
        action="append",
        type=cost.parse_price,
        help="instance price NAME=USD_PER_HOUR[:cpu|cuda], repeatable (replaces the defaults)",
    )
    parser.add_argument("--audio-hours-per-day", type=float, default=10)
    parser.add_argument("--files-per-day", type=int, default=50)
    parser.add_argument(
        "--startup-seconds",
        type=float,
        default=120,
        help="boot and daemon start before the model loads (assumed)",
    )
    parser.add_argument("--idle-seconds", type=float, default=300, help="IDLE_SHUTDOWN_SECONDS")
    parser.add_argument(
        "--memory-minutes", default="1,10,60,180", help="audio lengths for the memory runs"
    )
    parser.add_argument(
        "--memory-cap-seconds",
        type=float,
        default=300,
        help="the memory runs transcribe this much of each file (all of it is decoded)",
    )
    parser.add_argument("--corrector", choices=("none", "bedrock", "openai"), default="none")
    parser.add_argument("--llm-url", help="OpenAI-compatible server for --corrector openai")
    parser.add_argument("--llm-model", default="local-model")
    parser.add_argument(
        "--bedrock-model", help="model or inference profile id (default: the LLM Caller's)"
    )
    parser.add_argument(
        "--call-latency-ms",
        type=float,
        default=latency.DEFAULT_CALL_LATENCY_MS,
        help="latency: how long the proxy holds each of the worker's AWS calls",
    )
    parser.add_argument(
        "--engine-fraction",
        type=float,
        default=latency.DEFAULT_ENGINE_FRACTION,
        help="latency: the engine stand-in's time per audio second (0.02: a T4, large model)",
    )
    parser.add_argument(
        "--latency-label",
        default="this checkout",
        help='latency: names the worker measured ("before prefetch"); one section per label',
    )
    parser.add_argument(
        "--orchestration-label",
        default="this checkout",
        help="orchestration: names the pipeline measured; --merge keeps other labels' figures",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep OUT/results.json's other parts (and other latency and orchestration labels), "
        "replace those run",
    )
    parser.add_argument(
        "--update-readme", action="store_true", help="rewrite README.md's generated section"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: write the Markdown, plots (and README) from OUT/results.json",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quick and args.update_readme:
        print("--quick figures are not published: drop --update-readme", file=sys.stderr)
        return 2
    if args.quick and args.merge:
        print("--quick figures are not merged with published ones: drop --merge", file=sys.stderr)
        return 2
    readme = README if args.update_readme else None
    if args.render_only:
        results = json.loads((args.out / report.JSON_NAME).read_text())
        for path in report.write(results, args.out, readme):
            print(path)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = set(parts) - set(PARTS)
    if unknown:
        print(f"unknown parts: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    options = Options(
        parts=parts,
        quick=args.quick,
        eval_dir=args.eval_dir or default_eval_dir(),
        device=args.device,
        prices=tuple(args.price) if args.price else cost.DEFAULT_PRICES,
        batch=cost.BatchAssumptions(
            audio_hours_per_day=args.audio_hours_per_day,
            files_per_day=args.files_per_day,
            startup_seconds=args.startup_seconds,
            idle_tail_seconds=args.idle_seconds,
        ),
        memory_minutes=tuple(float(m) for m in args.memory_minutes.split(",")),
        memory_cap_seconds=args.memory_cap_seconds,
        call_latency_ms=args.call_latency_ms,
        engine_fraction=args.engine_fraction,
        latency_label=args.latency_label,
        orchestration_label=args.orchestration_label,
        corrector=make_corrector(
            args.corrector,
            llm_url=args.llm_url,
            llm_model=args.llm_model,
            bedrock_model=args.bedrock_model,
        ),
    )
    results = run(options)
    previous = args.out / report.JSON_NAME
    if args.merge and previous.exists():
        results = report.merged(json.loads(previous.read_text()), results)
    written = report.write(results, args.out, readme)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
