"""One benchmark run: every part asked for, into one JSON-ready dictionary."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from bench import (
    accuracy,
    batch_memory,
    batching,
    correction,
    correction_figures,
    cost,
    diarization,
    fleet,
    hotwords,
    latency,
    memory,
    orchestration,
    speed,
)
from bench.clips import Clip, concatenated_mp3, eval_clips, generated_clips, looped_mp3
from bench.engines import (
    FASTER_WHISPER,
    TRANSFORMERS,
    EngineSpec,
    Skipped,
    compute_types,
    decode_options,
    load,
    supports_batch_size,
    transformers_available,
    transformers_dtype,
)
from bench.environment import collect, resolve_device

if TYPE_CHECKING:
    from chalicelib.correction.correctors import Corrector

log = logging.getLogger(__name__)

PARTS: Final = (
    "accuracy",
    "speed",
    "batching",
    "batch_memory",
    "hotwords",
    "loop",
    "latency",
    "orchestration",
    "memory",
    "diarization",
    "cost",
    "correction",
    "fleet",
)
SCHEMA: Final = 1
LONG_LOOP_SECONDS: Final = 180.0  # one longer recording for the worker loop
# The latency-injected loop: (seconds per file, files) for a full run and for --quick; 30 s
# files in a batch of 10 and of 30, since the first fetch and the last hand-off are per batch;
# and one 30-minute lecture, three 600 s decoding windows (the decoder's wait between them).
LATENCY_FILES: Final = ((30.0, 10), (30.0, 30), (600.0, 3), (1800.0, 1))
LATENCY_FILES_QUICK: Final = ((30.0, 2),)
# The fleet: the same files with up to 1 and up to 2 workers (this machine has 2 cores).
FLEET_SIZES: Final = (1, 2)
FLEET_FILES: Final = 48
FLEET_FILES_QUICK: Final = 2
T = TypeVar("T")


@dataclass(frozen=True)
class Options:
    parts: tuple[str, ...] = PARTS
    quick: bool = False
    eval_dir: Path | None = None
    device: str = "auto"
    prices: tuple[cost.Price, ...] = cost.DEFAULT_PRICES
    batch: cost.BatchAssumptions = field(
        default_factory=lambda: cost.BatchAssumptions(
            audio_hours_per_day=10, files_per_day=50, startup_seconds=120, idle_tail_seconds=300
        )
    )
    memory_minutes: tuple[float, ...] = (1, 10, 60, 180)
    memory_cap_seconds: float = 300
    corrector: Corrector | None = None
    call_latency_ms: float = latency.DEFAULT_CALL_LATENCY_MS
    engine_fraction: float = latency.DEFAULT_ENGINE_FRACTION
    latency_label: str = "this checkout"
    orchestration_label: str = "this checkout"


@dataclass
class Plan:
    """What this run measures, from the options and this machine."""

    device: str
    clips: list[Clip]
    clip_source: str
    speed_clip: Clip  # one file: the English clips end to end
    loop_clips: list[Clip]
    long_clip: Clip | None  # the English speech looped to LONG_LOOP_SECONDS; None: --quick
    models: tuple[str, ...]
    skipped: list[Skipped]
    # The multilingual run's transcripts, once the accuracy part made them (correction uses).
    transcribed: tuple[str, list[accuracy.Transcribed]] | None = None


def _default_compute(device: str, engine: str = FASTER_WHISPER) -> str:
    if engine == TRANSFORMERS:
        return transformers_dtype(device)
    return "float16" if device == "cuda" else "int8"


_CPU_BOUND: Final = (
    "the transformers engine runs several times slower than real time on these 2 shared CPU "
    "cores, so a CPU run measures it less to stay within its time bound; a CUDA run measures "
    "it fully"
)


def _models(plan: Plan, engine: str, part: str) -> tuple[str, ...]:
    """The models ``part`` measures with ``engine``; recorded in ``skipped`` where cut."""
    if engine == FASTER_WHISPER or plan.device == "cuda" or len(plan.models) == 1:
        return plan.models
    if part == "loop":
        plan.skipped.append(Skipped(f"worker loop {engine}", _CPU_BOUND))
        return ()
    for model in plan.models[1:]:
        plan.skipped.append(Skipped(f"{part} {engine} {model}", _CPU_BOUND))
    return plan.models[:1]


def _batch_sizes(device: str) -> list[int]:
    return [1, 8, 16, 32] if device == "cuda" else [1, 8]


def make_plan(options: Options, work_dir: Path) -> Plan:
    device = resolve_device(options.device)
    skipped: list[Skipped] = []
    if options.quick:
        clips = generated_clips(work_dir, count=1)
        source = "generated speech (espeak-ng), --quick: one clip"
    elif options.eval_dir is not None:
        clips = eval_clips(options.eval_dir)
        source = f"real speech: {options.eval_dir} ({len(clips)} clips)"
    else:
        clips = generated_clips(work_dir)
        source = "generated speech (espeak-ng): no evaluation set found"
        skipped.append(Skipped("real-speech evaluation set", "not found; pass --eval-dir"))
    english = [c for c in clips if c.language == "en"] or clips[:1]
    if len(english) > 1:
        speech = concatenated_mp3(english, work_dir / "english-concatenated.mp3")
    else:
        speech = english[0].path
    speed_clip = Clip(
        clip_id=speech.stem,
        path=speech,
        language="en",
        reference=" ".join(c.reference for c in english),
        duration_s=sum(c.duration_s for c in english),
        source=english[0].source,
    )
    models = ("tiny.en",) if options.quick else ("tiny.en", "base")
    long_clip = None
    if not options.quick:
        long_path = looped_mp3(speech, LONG_LOOP_SECONDS, work_dir / "english-long.mp3")
        long_clip = Clip(
            clip_id=long_path.stem,
            path=long_path,
            language="en",
            reference="",
            duration_s=LONG_LOOP_SECONDS,
            source="synthetic: the English clips looped",
        )
    return Plan(device, clips, source, speed_clip, english, long_clip, models, skipped)


def _engines(plan: Plan, quick: bool) -> list[str]:
    engines = [FASTER_WHISPER]
    missing = transformers_available()
    if missing is not None:
        plan.skipped.append(missing)
    elif quick:
        plan.skipped.append(Skipped(TRANSFORMERS, "--quick measures faster-whisper only"))
    else:
        engines.append(TRANSFORMERS)
    return engines


def _guarded(plan: Plan, what: str, engine: str, work: Callable[[], T]) -> T | None:
    """faster-whisper errors propagate; the transformers engine is new: record and go on."""
    if engine == FASTER_WHISPER:
        return work()
    try:
        return work()
    except Exception as exc:
        log.exception("%s failed", what)
        plan.skipped.append(Skipped(what, f"failed: {exc!r}"))
        return None


def _accuracy(plan: Plan, engines: list[str], corrector: Corrector | None) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    transcribed: list[tuple[EngineSpec, list[accuracy.Transcribed]]] = []
    for engine_name in engines:
        for model in _models(plan, engine_name, "accuracy"):
            spec = EngineSpec(engine_name, model, _default_compute(plan.device, engine_name))
            clips = [c for c in plan.clips if c.language == "en" or not spec.english_only]

            def work(spec: EngineSpec = spec, clips: list[Clip] = clips) -> dict[str, Any]:
                engine, _ = load(spec, plan.device)
                items = [accuracy.transcribe_clip(engine, clip) for clip in clips]
                pairs = [(i.clip, i.text) for i in items]
                return {
                    "engine": spec.engine,
                    "model": spec.model,
                    "compute_type": spec.compute_type,
                    "device": plan.device,
                    "items": items,
                    "groups": [asdict(g) for g in accuracy.groups(pairs)],
                    "clips": [asdict(accuracy.score_clip(i)) for i in items],
                }

            log.info("accuracy: %s on %d clips", spec.label, len(clips))
            run = _guarded(plan, f"accuracy {spec.label}", engine_name, work)
            if run is None:
                continue
            transcribed.append((spec, run.pop("items")))
            runs.append(run)
    # Correction is measured on a multilingual model's transcripts (every language) if any.
    chosen = next((t for t in transcribed if not t[0].english_only), None)
    chosen = chosen or (transcribed[0] if transcribed else None)
    if chosen is not None:
        plan.transcribed = (chosen[0].label, chosen[1])
    effect = (
        correction.measure(corrector, chosen[0].label, chosen[1])
        if chosen
        else correction.measure(corrector, "", [])
    )
    return {"normaliser": accuracy.NORMALISER, "runs": runs, "correction": asdict(effect)}


def _speed(plan: Plan, engines: list[str], quick: bool) -> dict[str, Any]:
    bare_runs: list[dict[str, Any]] = []
    batched_runs: list[dict[str, Any]] = []
    for engine_name in engines:
        for model in _models(plan, engine_name, "speed"):
            if engine_name == FASTER_WHISPER:
                computes = [_default_compute(plan.device)] if quick else compute_types(plan.device)
                specs = [EngineSpec(engine_name, model, c) for c in computes]
            else:
                dtype = transformers_dtype(plan.device)
                specs = [EngineSpec(engine_name, model, dtype)]
                if supports_batch_size() and plan.device == "cuda":
                    specs = [
                        EngineSpec(engine_name, model, dtype, b) for b in _batch_sizes(plan.device)
                    ]
            for spec in specs:
                log.info("speed: %s bare", spec.label)

                runs = 1 if quick or engine_name != FASTER_WHISPER else 2

                def work(spec: EngineSpec = spec, runs: int = runs) -> speed.BareRun:
                    return speed.bare(spec, plan.device, plan.speed_clip, runs)

                row = _guarded(plan, f"bare {spec.label}", engine_name, work)
                if row is not None:
                    bare_runs.append(asdict(row))
            if engine_name == FASTER_WHISPER and not quick:
                spec = EngineSpec(engine_name, model, _default_compute(plan.device))
                sizes = _batch_sizes(plan.device)
                log.info("speed: %s batched %s", spec.label, sizes)
                rows = speed.batched(spec, plan.device, plan.speed_clip, sizes)
                batched_runs += [asdict(r) for r in rows]
    if quick:
        plan.skipped.append(Skipped("batched decoding", "--quick skips batch sizes"))
    if TRANSFORMERS in engines and not supports_batch_size():
        plan.skipped.append(
            Skipped("transformers batch sizes", "this checkout's engines take no batch size")
        )
    elif TRANSFORMERS in engines and plan.device != "cuda":
        plan.skipped.append(
            Skipped("transformers batch sizes", f"CUDA only (CPU run time); {_CPU_BOUND}")
        )
    return {
        "decode_options": decode_options(),
        "audio": {
            "file": plan.speed_clip.path.name,
            "seconds": round(plan.speed_clip.duration_s, 2),
            "source": plan.speed_clip.source,
        },
        "bare": bare_runs,
        "batched": batched_runs,
    }


def _batching(plan: Plan, work_dir: Path, quick: bool) -> dict[str, Any]:
    """The worker's engine batched and not, with the multilingual model where there is one."""
    model = plan.models[-1]
    spec = EngineSpec(FASTER_WHISPER, model, _default_compute(plan.device))
    batch_size = max(_batch_sizes(plan.device))
    log.info("batching: %s, batch size %d", spec.label, batch_size)
    rows = batching.measure(spec, plan.device, plan.clips, work_dir, batch_size, warm_up=not quick)
    return {
        "engine": spec.engine,
        "model": spec.model,
        "compute_type": spec.compute_type,
        "device": plan.device,
        "batch_size": batch_size,
        "settings": batching.SETTINGS,
        "languages": [asdict(r) for r in rows],
        # Its own record: a part merged into earlier results (--merge) is measured later.
        "environment": asdict(collect(plan.device)),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def _batch_memory(plan: Plan, work_dir: Path, quick: bool) -> dict[str, Any]:
    """The batched engine's memory and time per batch size, the multilingual model where there
    is one, on a recording of many chunks (--quick: two sizes on a short one)."""
    spec = EngineSpec(FASTER_WHISPER, plan.models[-1], _default_compute(plan.device))
    sizes = [1, 2] if quick else ([1, 4, 8, 16, 32] if plan.device == "cuda" else [1, 2, 4, 8, 16])
    seconds = 35.0 if quick else 480.0
    log.info("batch memory: %s, batch sizes %s, %g s", spec.label, sizes, seconds)
    section = batch_memory.measure(
        spec,
        plan.device,
        speech=plan.speed_clip.path,
        language=plan.speed_clip.language,
        seconds=seconds,
        batch_sizes=sizes,
        work_dir=work_dir,
        pad=quick,  # --quick's one short clip would repeat itself within a window
    )
    # Its own record: a part merged into earlier results (--merge) is measured later.
    return {
        **section,
        "environment": asdict(collect(plan.device)),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def _hotwords(plan: Plan) -> dict[str, Any]:
    """The worker's engine with and without the glossary's hotwords, multilingual model."""
    model = plan.models[-1]
    spec = EngineSpec(FASTER_WHISPER, model, _default_compute(plan.device))
    log.info("hotwords: %s", spec.label)
    rows = hotwords.measure(spec, plan.device, plan.clips)
    return {
        "engine": spec.engine,
        "model": spec.model,
        "compute_type": spec.compute_type,
        "device": plan.device,
        "glossary": hotwords.GLOSSARY,
        "settings": hotwords.SETTINGS,
        "languages": [asdict(r) for r in rows],
        # Its own record: a part merged into earlier results (--merge) is measured later.
        "environment": asdict(collect(plan.device)),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
    }


def _loop(plan: Plan, engines: list[str], quick: bool) -> list[dict[str, Any]]:
    runs = []
    for engine_name in engines:
        # The long recording with the worker's default engine and smallest model only.
        for model in _models(plan, engine_name, "loop"):
            spec = EngineSpec(engine_name, model, _default_compute(plan.device, engine_name))
            log.info("loop: %s on %d files", spec.label, len(plan.loop_clips))
            file_sets = [plan.loop_clips]
            first = model == plan.models[0] and engine_name == FASTER_WHISPER
            if plan.long_clip is not None and first:
                file_sets.append([plan.long_clip])
            for files in file_sets:

                def work(spec: EngineSpec = spec, files: list[Clip] = files) -> speed.LoopRun:
                    return speed.worker_loop(spec, plan.device, files, 1 if quick else 2)

                run = _guarded(plan, f"worker loop {spec.label}", engine_name, work)
                if run is not None:
                    runs.append(asdict(run))
    return runs


def _latency(plan: Plan, options: Options, work_dir: Path) -> dict[str, Any]:
    runs = []
    for seconds, files in LATENCY_FILES_QUICK if options.quick else LATENCY_FILES:
        path = looped_mp3(plan.speed_clip.path, seconds, work_dir / f"latency-{seconds:g}s.mp3")
        log.info("latency: %d files of %g s", files, seconds)
        run = latency.measure(
            path,
            plan.speed_clip.language,
            seconds,
            files,
            latency_ms=options.call_latency_ms,
            fraction=options.engine_fraction,
            repeats=1 if options.quick else 2,
        )
        runs.append(asdict(run))
    return {
        "label": options.latency_label,
        "environment": asdict(collect(plan.device)),
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "settings": latency.SETTINGS,
        "runs": runs,
    }


def _timed(name: str, timings: dict[str, float], work: Callable[[], T]) -> T:
    started = time.perf_counter()
    try:
        return work()
    finally:
        timings[name] = round(time.perf_counter() - started, 1)


def run(options: Options) -> dict[str, Any]:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    results: dict[str, Any] = {"schema": SCHEMA, "quick": options.quick}
    with tempfile.TemporaryDirectory(prefix="bench-") as folder:
        work_dir = Path(folder)
        plan = make_plan(options, work_dir)
        results["environment"] = asdict(collect(plan.device))
        results["evaluation_audio"] = plan.clip_source
        engines = _engines(plan, options.quick)
        if "accuracy" in options.parts:
            results["accuracy"] = _timed(
                "accuracy", timings, lambda: _accuracy(plan, engines, options.corrector)
            )
        if "speed" in options.parts:
            results["speed"] = _timed(
                "speed", timings, lambda: _speed(plan, engines, options.quick)
            )
        if "batching" in options.parts:
            results["batching"] = _timed(
                "batching", timings, lambda: _batching(plan, work_dir, options.quick)
            )
        if "batch_memory" in options.parts:
            results["batch_memory"] = _timed(
                "batch_memory", timings, lambda: _batch_memory(plan, work_dir, options.quick)
            )
        if "hotwords" in options.parts:
            results["hotwords"] = _timed("hotwords", timings, lambda: _hotwords(plan))
        if "loop" in options.parts:
            results["loop"] = _timed("loop", timings, lambda: _loop(plan, engines, options.quick))
        if "latency" in options.parts:
            results["latency"] = [
                _timed("latency", timings, lambda: _latency(plan, options, work_dir))
            ]
        if "orchestration" in options.parts:
            clip = plan.clips[0]
            results["orchestration"] = asdict(
                _timed(
                    "orchestration",
                    timings,
                    lambda: orchestration.measure(
                        clip.path,
                        clip.language,
                        3 if options.quick else 20,
                        clip.duration_s,
                        options.orchestration_label,
                    ),
                )
            )
        if "memory" in options.parts:
            spec = EngineSpec(FASTER_WHISPER, "tiny.en", _default_compute(plan.device))
            minutes = [0.25] if options.quick else list(options.memory_minutes)
            cap = 15.0 if options.quick else options.memory_cap_seconds
            results["memory"] = [
                asdict(r)
                for r in _timed(
                    "memory",
                    timings,
                    lambda: memory.measure(
                        spec,
                        plan.device,
                        speech=plan.speed_clip.path,
                        language="en",
                        minutes=minutes,
                        cap_seconds=cap,
                        work_dir=work_dir,
                    ),
                )
            ]
        if "diarization" in options.parts:
            if options.eval_dir is None:
                reason = "needs the evaluation clips of different speakers; pass --eval-dir"
                plan.skipped.append(Skipped("diarization", reason))
            else:
                eval_dir = options.eval_dir
                results["diarization"] = _timed(
                    "diarization",
                    timings,
                    lambda: {
                        **diarization.measure(eval_dir, work_dir, plan.device, options.quick),
                        # Its own record: a part merged into earlier results is measured later.
                        "environment": asdict(collect(plan.device)),
                        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
                    },
                )
        if "cost" in options.parts:
            results["cost"] = _cost(results, options, plan.device)
        if "correction" in options.parts:
            results["correction"] = _timed(
                "correction", timings, lambda: _correction(plan, options.quick)
            )
        if "fleet" in options.parts:
            english = [(c.path, c.duration_s) for c in plan.clips if c.language == "en"]
            files = FLEET_FILES_QUICK if options.quick else FLEET_FILES
            # Its own record, as batching's: merged later into earlier results.
            environment = asdict(collect(plan.device))
            measured = _timed(
                "fleet", timings, lambda: fleet.measure(english, FLEET_SIZES, files, work_dir)
            )
            results["fleet"] = {
                **measured,
                "environment": environment,
                "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            }
        results["skipped"] = [asdict(s) for s in plan.skipped]
    timings["total"] = round(time.perf_counter() - started, 1)
    results["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    results["wall_seconds"] = timings
    return results


def _correction(plan: Plan, quick: bool) -> dict[str, Any]:
    """The correction figures on the accuracy part's multilingual transcripts, or on the
    multilingual model's own when that part did not run."""
    if plan.transcribed is None:
        model = plan.models[-1]
        spec = EngineSpec(FASTER_WHISPER, model, _default_compute(plan.device))
        clips = [c for c in plan.clips if c.language == "en" or not spec.english_only]
        log.info("correction: transcribing %d clips with %s", len(clips), spec.label)
        engine, _ = load(spec, plan.device)
        plan.transcribed = (spec.label, [accuracy.transcribe_clip(engine, c) for c in clips])
    label, items = plan.transcribed
    log.info("correction: oracle, adversary and answer sizes on %s's transcripts", label)
    return {
        "transcripts": label,
        "clips": plan.clip_source,
        # Its own record: a part merged into earlier results (--merge) is measured later.
        "environment": asdict(collect(plan.device)),
        **correction_figures.measure(items, hour_languages=("he", "en") if not quick else ()),
    }


def _cost(results: dict[str, Any], options: Options, device: str) -> dict[str, Any]:
    measured: list[tuple[str, float, str, str]] = []
    loads = []
    for row in results.get("speed", {}).get("bare", []):
        label = f"{row['engine']} {row['model']} {row['compute_type']}"
        measured.append((label, row["rtf"], row["device"], "bare engine"))
        loads.append(row["load_seconds"])
    for row in results.get("loop", []):
        label = f"{row['engine']} {row['model']} {row['compute_type']} (worker loop)"
        measured.append((label, row["loop_rtf"], row["device"], "worker loop"))
    batch = options.batch
    if loads:  # the model load is measured; the rest of start-up is assumed
        batch = cost.BatchAssumptions(
            audio_hours_per_day=batch.audio_hours_per_day,
            files_per_day=batch.files_per_day,
            startup_seconds=batch.startup_seconds + max(loads),
            idle_tail_seconds=batch.idle_tail_seconds,
        )
    prices = list(options.prices)
    return {
        "formula": "USD per audio hour = instance USD per hour x RTF",
        "transcribe_usd_per_audio_hour": cost.TRANSCRIBE_USD_PER_AUDIO_HOUR,
        "prices": [asdict(p) for p in prices],
        "batch": asdict(batch),
        "batch_note": (
            "start-up = assumed boot and daemon start plus the slowest measured model load; "
            "idle tail = IDLE_SHUTDOWN_SECONDS; scale to zero: no instance, so no cost, while "
            "no audio waits (SQS, DynamoDB and S3 are pay per request)"
        ),
        "device": device,
        "rows": [asdict(r) for r in cost.rows(measured, prices, batch)],
        "note": None
        if any(p.device == device for p in prices)
        else f"no price given for device {device}",
    }
