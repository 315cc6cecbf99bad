"""Results JSON -> Markdown tables, PNG plots and the README's generated section."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from pipeline_core.config import GLOSSARY_HOTWORDS

START: Final = "<!-- bench:start -->"
END: Final = "<!-- bench:end -->"
JSON_NAME: Final = "results.json"
MARKDOWN_NAME: Final = "results.md"
RTF_PLOT: Final = "rtf_vs_length.png"
MEMORY_PLOT: Final = "memory_vs_length.png"
FLEET_PLOT: Final = "fleet_timeline.png"

Row = list[Any]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: list[Row]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(value: float | None) -> str | None:
    return None if value is None else f"{100 * value:.1f}%"


def measured_on(results: dict[str, Any]) -> str:
    return f"{_machine(results)} Audio: {results.get('evaluation_audio')}."


def _machine(results: dict[str, Any]) -> str:
    """Date, machine, load, device, commit and versions of a run (or of a merged section)."""
    env = results["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    dirty = " (uncommitted changes)" if env.get("git_dirty") else ""
    return (
        f"Measured {env['date_utc']} on {env['cpu']} ({env['cpu_cores']} cores, "
        f"{env['memory_gib']} GiB, load average {env.get('load_average_1min')} at the start, "
        f"{results.get('load_average_1min_at_end')} at the end), GPU: {env['gpu'] or 'none'}; "
        "engines on "
        f"**{env['device']}**; commit {env['git_commit']}{dirty}; {versions}."
    )


def _accuracy_md(section: dict[str, Any]) -> list[str]:
    out = ["## Accuracy", "", f"Normaliser: {section['normaliser']}", ""]
    rows = []
    for run in section["runs"]:
        for group in run["groups"]:
            rows.append([
                run["engine"], run["model"], run["compute_type"], group["scope"], group["clips"],
                group["audio_seconds"], group["reference_words"], _pct(group["wer"]),
                _pct(group["cer"]),
            ])  # fmt: skip
    header = ["engine", "model", "compute", "scope", "clips", "audio s", "words", "WER", "CER"]
    out += [table(header, rows), ""]
    out += ["<details><summary>Per clip</summary>", ""]
    rows = [
        [run["engine"], run["model"], c["clip_id"], c["language"], c["duration_s"],
         _pct(c["wer"]), _pct(c["cer"]), c["rtf"], c["hypothesis"][:120]]
        for run in section["runs"]
        for c in run["clips"]
    ]  # fmt: skip
    header = ["engine", "model", "clip", "lang", "s", "WER", "CER", "RTF", "hypothesis"]
    out += [table(header, rows), "", "</details>", ""]
    corr = section["correction"]
    out += ["### LLM correction", ""]
    if corr["status"] == "measured":
        out.append(
            f"Corrector {corr['corrector']} on {corr['engine']}: WER {_pct(corr['wer_before'])} "
            f"before, {_pct(corr['wer_after'])} after (CER {_pct(corr['cer_before'])} -> "
            f"{_pct(corr['cer_after'])})."
        )
    else:
        out.append(f"{corr['status']}: {corr['reason']}")
    if corr.get("languages"):
        rows = [[g["language"], g["clips"], _pct(g["wer_before"]), _pct(g["wer_after"])]
                for g in corr["languages"]]  # fmt: skip
        out += ["", table(["language", "clips", "WER before", "WER after"], rows)]
    return [*out, ""]


def _speed_md(section: dict[str, Any]) -> list[str]:
    audio = section["audio"]
    out = [
        "## Speed",
        "",
        f"Real-time factor (RTF) = processing seconds / audio seconds, on `{audio['file']}` "
        f"({audio['seconds']} s, {audio['source']}).",
        "",
        "Decoding options of the worker's engines: "
        + ", ".join(f"{k}={v}" for k, v in section.get("decode_options", {}).items())
        + ".",
        "",
    ]
    if section["bare"]:
        out += ["### Bare engine", "", section["bare"][0]["settings"] + ".", ""]
        rows = [
            [r["engine"], r["model"], r["compute_type"], r.get("batch_size"), r["device"],
             r["load_seconds"], r["seconds"], r["seconds_median"], r["runs"], r["rtf"],
             f"{1 / r['rtf']:.1f}x"]
            for r in section["bare"]
        ]  # fmt: skip
        header = ["engine", "model", "compute", "batch", "device", "load s", "best s",
                  "median s", "runs", "RTF", "speed"]  # fmt: skip
        out += [table(header, rows), ""]
    if section["batched"]:
        out += ["### Batch sizes", "", section["batched"][0]["settings"] + ".", ""]
        rows = [
            [r["engine"], r["model"], r["compute_type"], r["device"], r["batch_size"],
             r["seconds"], r["rtf"]]
            for r in section["batched"]
        ]  # fmt: skip
        header = ["engine", "model", "compute", "device", "batch", "s", "RTF"]
        out += [table(header, rows), ""]
    return out


def _error_rate(row: dict[str, Any], path: str) -> str | None:
    """WER, or CER for a language written without spaces between words."""
    wer = row[f"{path}_wer"]
    return _pct(wer if wer is not None else row[f"{path}_cer"])


def _engine_on_device(section: dict[str, Any]) -> str:
    """What a section measured with: "faster-whisper base int8 on cpu"."""
    return (
        f"{section['engine']} {section['model']} {section['compute_type']} on {section['device']}"
    )


def _batching_md(section: dict[str, Any]) -> list[str]:
    out = [
        "### Batched inference in the worker's engine, per language",
        "",
        f"{_engine_on_device(section)}, batch size {section['batch_size']}; {section['settings']}.",
        "",
        _machine(section),
        "",
    ]
    rows = [
        [r["language"], r["clips"], r["repeats"], r["audio_seconds"], r["reference_words"],
         _pct(r["unbatched_wer"]), _pct(r["batched_wer"]), _pct(r["unbatched_cer"]),
         _pct(r["batched_cer"]), r["unbatched_rtf"], r["batched_rtf"]]
        for r in section["languages"]
    ]  # fmt: skip
    header = ["language", "clips", "joined x", "audio s", "reference words", "WER unbatched",
              "WER batched", "CER unbatched", "CER batched", "RTF unbatched",
              "RTF batched"]  # fmt: skip
    return [*out, table(header, rows), ""]


def _batch_memory_md(section: dict[str, Any]) -> list[str]:
    out = [
        "### Batched inference: memory and time against the batch size",
        "",
        f"{_engine_on_device(section)}; {section['settings']}. WORKER_BATCH_SIZE=auto estimates "
        f"{section['estimate_chunk_mib']:g} MiB a chunk here and takes at most "
        f"{section['most_chunks']} chunks on this device.",
        "",
        _machine(section),
        "",
    ]
    rows = []
    previous: dict[str, Any] | None = None
    for run in section["runs"]:
        growth = None
        if previous is not None:
            chunks = run["batch_size"] - previous["batch_size"]
            key = "peak_gpu_mib" if run["peak_gpu_mib"] is not None else "peak_rss_mib"
            growth = round((run[key] - previous[key]) / chunks, 1)
        rows.append(
            [run["batch_size"], run["audio_seconds"], run["rss_before_mib"], run["peak_rss_mib"],
             run["peak_gpu_mib"], growth, section["estimate_chunk_mib"], run["seconds"],
             run["rtf"]]
        )  # fmt: skip
        previous = run
    header = ["batch size", "audio s", "RSS before MiB", "peak RSS MiB", "peak GPU MiB",
              "MiB a chunk more than the size before (GPU where measured)",
              "estimate MiB a chunk", "s", "RTF"]  # fmt: skip
    return [*out, table(header, rows), ""]


def _hotwords_md(section: dict[str, Any]) -> list[str]:
    out = [
        "### Whisper primed with the glossary's terms (hotwords), per language",
        "",
        f"{_engine_on_device(section)}; {section['settings']}. Low-confidence words: the "
        "share of the bare run's words under the LLM Caller's LOW_CONFIDENCE_PROBABILITY, "
        "which it marks for the model. Leaked terms: words of the hotwords the primed run "
        "wrote that the reference does not have.",
        "",
        _machine(section),
        "",
    ]
    rows = [
        [r["language"], r["clips"], r["reference_words"], len(r["hotwords"]),
         _error_rate(r, "bare"), _error_rate(r, "primed"), _pct(r["bare_cer"]),
         _pct(r["primed_cer"]), r["leaked_terms"],
         _pct(r["low_confidence_words"] / r["words"]) if r["words"] else None]
        for r in section["languages"]
    ]  # fmt: skip
    header = ["language", "clips", "reference words", "hotwords chars", "WER bare",
              "WER primed", "CER bare", "CER primed", "leaked terms",
              "low-confidence words"]  # fmt: skip
    return [*out, table(header, rows), ""]


def _loop_md(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    out = ["### Worker loop against the bare engine", "", runs[0]["settings"] + ".", ""]
    rows = [
        [r["engine"], r["model"], r["compute_type"], r["files"], r["audio_seconds"],
         r.get("seconds_per_file"), r["bare_seconds"], r["loop_seconds"], r["decode_seconds"],
         r["bare_rtf"], r["loop_rtf"], _pct(r["overhead"])]
        for r in runs
    ]  # fmt: skip
    header = ["engine", "model", "compute", "files", "audio s", "s per file", "bare s", "loop s",
              "decode s", "bare RTF", "loop RTF", "overhead (target < 5%)"]  # fmt: skip
    return [*out, table(header, rows), ""]


def _fraction(run: dict[str, Any]) -> str:
    return f"1/{1 / run['engine_fraction']:.4g}"


def _latency_md(sections: list[dict[str, Any]]) -> list[str]:
    out = []
    for section in sections:
        runs = section["runs"]
        out += [f"### Worker overhead at GPU speed: {section['label']}", "",
                _machine(section), "", section["settings"] + ".", ""]  # fmt: skip
        rows = [
            [r["files"], r["seconds_per_file"], r["call_latency_ms"], _fraction(r),
             r["engine_seconds"], r["loop_seconds"], _overhead(r), r["overhead_ms_per_file"],
             r.get("first_fetch_seconds"), _between_files(r), r.get("last_hand_off_seconds"),
             r.get("first_and_last_seconds"), r.get("idle_exit_seconds"),
             _overhead_with_idle_exit(r),
             sum(r["api_calls_per_file"].values()), r["proxied_requests_per_file"],
             r["rss_before_mib"], r["peak_rss_mib"], r.get("worker_kept_mib"),
             r.get("emulator_kept_mib")]
            for r in runs
        ]  # fmt: skip
        header = ["files", "s per file", "ms per AWS call", "stand-in time", "stand-in s",
                  "loop s", "overhead (target < 5% at 30 s)", "overhead ms per file",
                  "of it: s before the first file", "of it: between files (steady state)",
                  "of it: s after the last file", "s before the first, after the last file "
                  "and idle exit (earlier runs)", "s idle exit", "overhead with the idle exit",
                  "worker AWS calls per file", "HTTP requests per file", "RSS before MiB",
                  "peak RSS MiB", "kept MiB: worker", "kept MiB: moto"]  # fmt: skip
        out += [table(header, rows), ""]
        operations = sorted({op for r in runs for op in r["api_calls_by_operation_per_file"]})
        header = ["worker AWS calls per file", *(_batch(r) for r in runs)]
        rows = [[op, *(r["api_calls_by_operation_per_file"].get(op, 0) for r in runs)]
                for op in operations]  # fmt: skip
        out += [table(header, rows), ""]
    return out


def _fleet_md(section: dict[str, Any]) -> list[str]:
    out = ["## Fleet: files per hour with 1 and 2 workers", ""]
    if "environment" in section:
        out += [_machine(section), ""]
    out += [section["settings"] + ".", ""]
    out += [
        "Ideal: N x one worker's rate (one model thread per worker, as many cores as "
        "workers); the scaling timeline (backlog, desired capacity, workers) is "
        f"[{FLEET_PLOT}]({FLEET_PLOT}).",
        "",
    ]
    rows = [
        [r["max_workers"], r["most_workers_at_once"], r["files"], r["audio_s"], r["seconds"],
         r["files_per_hour"], r["ideal_files_per_hour"], _pct(r["of_ideal"]), r["transcribe_s"],
         len(r["failed"])]
        for r in section["runs"]
    ]  # fmt: skip
    header = ["MaxWorkers", "workers at once", "files", "audio s", "s to the last outcome",
              "files / hour", "ideal files / hour", "of ideal", "transcribe s (sum)",
              "failed"]  # fmt: skip
    return [*out, table(header, rows), ""]


def _between_files(run: dict[str, Any]) -> str | None:
    return _pct(run.get("between_files_overhead"))  # None (a dash) in runs from before it


def _overhead(run: dict[str, Any]) -> str | None:
    """The loop's overhead to the last hand-off; runs from before 2026-12-02 timed the idle
    exit with it, so theirs is only ``_overhead_with_idle_exit``."""
    return _pct(run["overhead"]) if "idle_exit_seconds" in run else None


def _overhead_with_idle_exit(run: dict[str, Any]) -> str | None:
    return _pct(run.get("overhead_with_idle_exit", run["overhead"]))


def _batch(run: dict[str, Any]) -> str:
    return f"{run['files']} x {run['seconds_per_file']:g} s files"


def _latency_comparison_md(sections: list[dict[str, Any]]) -> list[str]:
    """Each file length's figures side by side, one column per label (before, after)."""
    if len(sections) < 2:
        return []
    labels = [section["label"] for section in sections]
    runs = {
        (section["label"], (run["seconds_per_file"], run["files"])): run
        for section in sections
        for run in section["runs"]
    }
    batches = sorted({batch for _, batch in runs})
    figures: list[tuple[str, Any]] = [
        ("overhead", _overhead),
        ("of it between files", _between_files),
        ("overhead with the idle exit", _overhead_with_idle_exit),
        ("worker AWS calls per file", lambda r: f"{sum(r['api_calls_per_file'].values()):g}"),
        ("peak RSS MiB", lambda r: r["peak_rss_mib"]),
        ("MiB the worker keeps after the batch", lambda r: r.get("worker_kept_mib")),
    ]
    rows = []
    for seconds, files in batches:
        name_of_batch = f"{files} x {seconds:g} s files"
        cells = [runs.get((label, (seconds, files))) for label in labels]
        for name, figure in figures:
            rows.append([f"{name_of_batch}: {name}",
                         *(figure(run) if run else None for run in cells)])  # fmt: skip
        operations = sorted(
            {op for run in cells if run for op in run["api_calls_by_operation_per_file"]}
        )
        for op in operations:
            rows.append([f"{name_of_batch}: {op} per file",
                         *(run["api_calls_by_operation_per_file"].get(op, 0) if run else None
                           for run in cells)])  # fmt: skip
    return ["### Worker overhead at GPU speed, side by side", "",
            table(["figure", *labels], rows), ""]  # fmt: skip


def _calls_total(o: dict[str, Any]) -> float:
    return round(float(sum(o["api_calls_per_file"].values())), 2)


def _orchestration_md(o: dict[str, Any]) -> list[str]:
    calls = ", ".join(f"{service} {n:g}" for service, n in o["api_calls_per_file"].items())
    rows = [[o["files"], o["upload_ms_per_file"], o["dispatch_ms_per_file"],
             o["worker_ms_per_file"], o["llm_caller_ms_per_file"],
             o["total_ms_per_file"]]]  # fmt: skip
    header = ["files", "upload ms", "dispatch ms", "worker ms (no ASR)", "LLM Caller ms",
              "total ms (after upload)"]  # fmt: skip
    return [
        "### Orchestration per file (no ASR)",
        "",
        o["settings"] + ".",
        "",
        table(header, rows),
        "",
        f"AWS API calls per file: {_calls_total(o):g} ({calls}).",
        "",
        *_orchestration_calls_md(o),
    ]


def _orchestration_calls_md(o: dict[str, Any]) -> list[str]:
    """AWS calls per file by component and action, one column per label (earlier runs
    first); a run from before the count by component shows its totals only."""
    sections = [*o.get("earlier", []), o]
    labels = [section.get("label", "this checkout") for section in sections]
    by_component = [section.get("api_calls_by_component_per_file") for section in sections]
    components = list(dict.fromkeys(c for counted in by_component if counted for c in counted))
    rows: list[list[Any]] = []
    for component in components:
        operations = sorted(
            {op for counted in by_component if counted for op in counted.get(component, {})}
        )
        for op in operations:
            rows.append([component, op, *(counted.get(component, {}).get(op, 0) if counted
                                          else None for counted in by_component)])  # fmt: skip
        rows.append([component, "**all**", *(
            round(sum(counted.get(component, {}).values()), 2) if counted else None
            for counted in by_component)])  # fmt: skip
    rows.append(["**pipeline**", "**all**", *(_calls_total(s) for s in sections)])
    return ["AWS calls per file by component and action:", "",
            table(["component", "call", *labels], rows), ""]  # fmt: skip


def _memory_md(runs: list[dict[str, Any]]) -> list[str]:
    if not runs:
        return []
    out = ["## Memory", "", runs[0]["method"] + ".", ""]
    rows = [
        [f"{r['engine']} {r['model']} {r['compute_type']}", r["audio_minutes"],
         r.get("decode_path"), r["transcribed_seconds"], r["rss_after_load_mib"],
         r["rss_after_decode_mib"], r["peak_rss_mib"], r["peak_gpu_mib"], r["decode_seconds"],
         r["rtf"]]
        for r in runs
    ]  # fmt: skip
    header = ["engine", "audio min", "decode path", "transcribed s", "RSS after load MiB",
              "RSS after decode MiB", "peak RSS MiB", "peak GPU MiB", "decode s",
              "RTF"]  # fmt: skip
    return [*out, table(header, rows), ""]


def _diarization_md(d: dict[str, Any]) -> list[str]:
    settings = d["settings"]
    rows = [
        [c["case"], c["true_speakers"], c["found_speakers"], c["audio_seconds"], _pct(c["der"]),
         _pct(c["missed"]), _pct(c["false_alarm"]), _pct(c["confusion"]), c["rtf"]]
        for c in d["cases"]
    ]  # fmt: skip
    header = ["recording", "speakers", "found", "audio s", "DER", "missed", "false alarm",
              "confusion", "RTF"]  # fmt: skip
    return [
        "## Speaker labels (diarization)",
        "",
        f"{d['diarizer']} on {d['device']}, speaker count automatic (distance threshold "
        f"{settings['auto_distance_threshold']:g}); recordings joined from the evaluation "
        f"clips of different speakers, turns of {settings['turn_seconds'][0]:g}-"
        f"{settings['turn_seconds'][1]:g} s and pauses of {settings['pause_seconds'][0]:g}-"
        f"{settings['pause_seconds'][1]:g} s (bench/diarization.py); DER by pyannote.metrics "
        f"with a {settings['collar_seconds']:g} s collar, each part a share of the true speech.",
        "",
        table(header, rows),
        "",
        f"Speaker count right: {_pct(d['count_accuracy'])} of the recordings. The step's RTF: "
        f"{d['rtf']:g} (added to the recogniser's); loading the encoder "
        f"{d['load_seconds']:g} s; memory it adds: {d['added_rss_mib']:g} MiB RSS"
        + (f", {d['peak_gpu_mib']:g} MiB GPU" if d.get("peak_gpu_mib") is not None else "")
        + "."
        + (
            f" Load average at the end: {d['load_average_1min_at_end']:g}."
            if "load_average_1min_at_end" in d
            else ""
        ),
        "",
    ]


def _cost_md(c: dict[str, Any]) -> list[str]:
    b = c["batch"]
    out = [
        "## Cost",
        "",
        f"{c['formula']}; Spot prices are inputs (`--price NAME=USD[:cpu|cuda]`), applied only "
        f"to RTFs measured on the same kind of device (this run: {c['device']}). Daily batch: "
        f"{b['audio_hours_per_day']:g} audio hours in {b['files_per_day']} files, start-up "
        f"{b['startup_seconds']:.0f} s, idle tail {b['idle_tail_seconds']:.0f} s; "
        f"{c['batch_note']}.",
        "",
    ]
    if c.get("note"):
        out += [f"Note: {c['note']}.", ""]
    rows = [
        [r["system"], r["instance"], r["usd_per_hour"], r["rtf"], r["usd_per_audio_hour"],
         r["daily_batch_usd_per_audio_hour"], r["overhead_usd_per_file"],
         r["idle_usd_per_hour"], f"{r['vs_transcribe']:.3f}"]
        for r in c["rows"]
    ]  # fmt: skip
    header = ["system", "instance", "$/h", "RTF", "$/audio h", "daily batch $/audio h",
              "start-up+idle $/file", "idle $/h", "x Transcribe"]  # fmt: skip
    return [*out, table(header, rows), ""]


def _correction_md(c: dict[str, Any]) -> list[str]:
    out = [
        "## Correction checks and cost (scripted models)",
        "",
        f"Test set: {c['test_set']}, from {c['clips']} and {c['transcripts']}'s transcripts, "
        "built at run time (`bench/correction_set.py`). Each run goes through the LLM "
        "Caller's `correct_transcript` and `BedrockCorrector`, over HTTP, to the suite's "
        "Converse-protocol server playing a scripted model (`bench/correction_figures.py`).",
        "",
        "### Oracle: the edits that reach the reference",
        "",
    ]
    rows = [
        [g["language"], g["clips"], g["edits_proposed"], g["edits_accepted"],
         _pct(g["acceptance"]), g["lines_to_correct"], g["lines_reaching_reference"],
         _pct(g["wer_before"]), _pct(g["wer_after"])]
        for g in c["oracle"]["languages"]
    ]  # fmt: skip
    header = ["language", "clips", "edits", "accepted", "acceptance", "lines to correct",
              "lines reaching the reference", "WER before", "WER after"]  # fmt: skip
    out += [table(header, rows), ""]
    for miss in c["oracle"]["not_reached"]:
        edits = "; ".join(f"{e['from']!r} -> {e['to']!r}" for e in miss["edits"])
        out.append(f"- not reached: {miss['clip']} line {miss['line']}: {edits}")
    out += ["", "### Adversary: harmful edits refused", ""]
    rows = [
        [a["kind"], a["attempted"], a["refused"], _pct(a["refusal_rate"]),
         (a["passed_examples"] or [None])[0]]
        for a in c["adversary"]["attacks"]
    ]  # fmt: skip
    header = ["attack", "attempted", "refused", "refusal rate", "one that got through"]
    out += [table(header, rows), ""]
    size = c["answer_size"]
    out += [
        "### Answer size and cost per audio hour",
        "",
        f"Tokens as the server reports them ({size['tokenizer']}); {size['hour']}. Prices as "
        f"of {size['prices_as_of']}: {size['prices_source']}. The stand-in glossary has "
        f"{size['stand_in_glossary_tokens']} tokens; below a model's minimum prefix nothing "
        "is cached.",
        "",
    ]
    rows = [
        [r["language"], r["answer_format"], r["glossary_tokens"], r["model"], r["model_calls"],
         r["answer_chars"], r["usage"]["input_tokens"], r["usage"]["cache_write_tokens"],
         r["usage"]["cache_read_tokens"], r["usage"]["output_tokens"],
         f"${r['usd_per_audio_hour']:.3f}"]
        for r in size["rows"]
    ]  # fmt: skip
    header = ["language", "answer", "glossary tokens", "model", "calls", "answer chars", "input",
              "cache write", "cache read", "output", "$/audio hour"]  # fmt: skip
    return [*out, table(header, rows), ""]


def markdown(results: dict[str, Any]) -> str:
    out = ["# Benchmark results", "", measured_on(results), ""]
    if "accuracy" in results:
        out += _accuracy_md(results["accuracy"])
    if "speed" in results:
        out += _speed_md(results["speed"])
    if "batching" in results:
        out += _batching_md(results["batching"])
    if "batch_memory" in results:
        out += _batch_memory_md(results["batch_memory"])
    if "hotwords" in results:
        out += _hotwords_md(results["hotwords"])
    out += _loop_md(results.get("loop", []))
    out += _latency_comparison_md(results.get("latency", []))
    out += _latency_md(results.get("latency", []))
    if "orchestration" in results:
        out += _orchestration_md(results["orchestration"])
    if "fleet" in results:
        out += _fleet_md(results["fleet"])
    out += _memory_md(results.get("memory", []))
    if "diarization" in results:
        out += _diarization_md(results["diarization"])
    if "cost" in results:
        out += _cost_md(results["cost"])
    if "correction" in results:
        out += _correction_md(results["correction"])
    if results.get("skipped"):
        out += ["## Not measured", ""]
        out += [f"- {s['what']}: {s['reason']}" for s in results["skipped"]]
        out.append("")
    timing = ", ".join(f"{k} {v:g} s" for k, v in results["wall_seconds"].items())
    out += [f"Run time: {timing}.", ""]
    return "\n".join(out)


def _group(run: dict[str, Any], scope: str) -> float | None:
    return next((g["wer"] for g in run["groups"] if g["scope"] == scope), None)


def readme_section(results: dict[str, Any], results_link: str) -> str:
    """The README's headline table: one row per engine and model (default compute type)."""
    bare = results.get("speed", {}).get("bare", [])
    loops = results.get("loop", [])
    costs = results.get("cost", {}).get("rows", [])
    rows = []
    for run in results.get("accuracy", {}).get("runs", []):
        key = (run["engine"], run["model"], run["compute_type"])
        speed = next((r for r in bare if (r["engine"], r["model"], r["compute_type"]) == key), None)
        overheads = ", ".join(
            f"{_pct(r['overhead'])} ({r.get('seconds_per_file', 0):g} s files)"
            for r in loops
            if (r["engine"], r["model"], r["compute_type"]) == key
        )
        label = f"{run['engine']} {run['model']} {run['compute_type']}"
        price = next((c for c in costs if c["system"] == label), None)
        rows.append([
            run["engine"], run["model"], run["compute_type"], _pct(_group(run, "overall")),
            _pct(_group(run, "en")), _pct(_group(run, "he")), speed and speed["rtf"],
            overheads or None,
            price and f"${price['usd_per_audio_hour']:.3f} ({price['instance']})",
        ])  # fmt: skip
    header = ["engine", "model", "compute", "WER all", "WER en", "WER he", "RTF (bare)",
              "worker loop overhead", "$/audio hour"]  # fmt: skip
    lines = [measured_on(results), "", table(header, rows), ""]
    transcribe = results.get("cost", {}).get("transcribe_usd_per_audio_hour")
    if transcribe is not None:
        lines.append(f"Amazon Transcribe list price: ${transcribe:.2f} per audio hour.")
    if "orchestration" in results:
        o = results["orchestration"]
        earlier = "".join(
            f"; {run.get('label', 'earlier')}: {_calls_total(run):g}"
            for run in o.get("earlier", [])
        )
        lines.append(
            f"Orchestration without ASR: {o['total_ms_per_file']:g} ms per file on moto "
            f"({_calls_total(o):g} AWS API calls per file{earlier})."
        )
    if "batching" in results:
        b = results["batching"]
        by_language = ", ".join(
            f"{r['language']} {_error_rate(r, 'unbatched')} -> {_error_rate(r, 'batched')} "
            f"(RTF {r['unbatched_rtf']:g} -> {r['batched_rtf']:g})"
            for r in b["languages"]
        )
        lines.append(
            f"Batched inference (WORKER_BATCHED_INFERENCE; {b['engine']} {b['model']} "
            f"{b['compute_type']} on {b['device']}, batch {b['batch_size']}, measured "
            f"{b['environment']['date_utc']}), WER (CER where words are not spaced) unbatched "
            f"-> batched: {by_language}."
        )
    if "hotwords" in results:
        h = results["hotwords"]
        by_language = ", ".join(
            f"{r['language']} {_error_rate(r, 'bare')} -> {_error_rate(r, 'primed')}"
            for r in h["languages"]
            if r["hotwords"]
        )
        default = "on" if GLOSSARY_HOTWORDS else "off"
        lines.append(
            f"Glossary hotwords (WORKER_GLOSSARY_HOTWORDS, {default} by default; the "
            f"{h['glossary']!r} glossary's terms, {h['engine']} {h['model']} on {h['device']}, "
            f"measured {h['environment']['date_utc']}, clips outside the glossary's domain), "
            f"WER bare -> primed: {by_language}."
        )
    for section in results.get("latency", []):
        runs = section["runs"]
        overheads = ", ".join(
            f"{_batch(r)} "
            + (f"{_overhead(r)} to the last hand-off, " if _overhead(r) else "")
            + f"{_overhead_with_idle_exit(r)} with the idle exit ("
            + (
                f"{_between_files(r)} between files; "
                if r.get("between_files_overhead") is not None
                else ""
            )
            + f"{sum(r['api_calls_per_file'].values()):g} worker AWS calls per file)"
            for r in runs
        )
        first = runs[0]
        lines.append(
            f"Worker overhead at GPU speed, {section['label']} (measured "
            f"{section['environment']['date_utc']}; {first['call_latency_ms']:g} ms per AWS "
            f"call, engine stand-in at {_fraction(first)} of the audio's length): {overheads}; "
            f"peak RSS {max(r['peak_rss_mib'] for r in runs):.0f} MiB."
        )
    memory = results.get("memory", [])
    if memory:
        peaks = ", ".join(
            f"{m['audio_minutes']:g} min: {m['peak_rss_mib']:.0f} MiB" for m in memory
        )
        lines.append(f"Peak RSS by audio length ({memory[0]['model']}): {peaks}.")
    corr = results.get("accuracy", {}).get("correction")
    if corr:
        if corr["status"] == "measured":
            lines.append(
                f"LLM correction ({corr['corrector']}): WER {_pct(corr['wer_before'])} -> "
                f"{_pct(corr['wer_after'])}."
            )
        else:  # "not measured" ("not configured" in runs before it was so named) or "failed"
            why = "no model was reachable" if corr["status"] != "failed" else corr["reason"]
            lines.append(
                "LLM correction with a real model, WER before and after: not measured "
                f"({why}; `--corrector bedrock|openai` measures it)."
            )
    lines += _correction_summary(results.get("correction"))
    lines += ["", f"Every table, the plots and the settings: [{results_link}]({results_link})."]
    return "\n".join(lines)


def _correction_summary(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    oracle = c["oracle"]["languages"]
    proposed = sum(g["edits_proposed"] for g in oracle)
    accepted = sum(g["edits_accepted"] for g in oracle)
    per_language = ", ".join(
        f"{g['language']} {g['edits_accepted']}/{g['edits_proposed']} "
        f"(WER {_pct(g['wer_before'])} -> {_pct(g['wer_after'])})"
        for g in oracle
    )
    attacks = ", ".join(f"{a['kind']} {_pct(a['refusal_rate'])}" for a in c["adversary"]["attacks"])
    lines = [
        f"Correction checks, scripted oracle: {accepted} of {proposed} true corrections "
        f"accepted ({per_language}). Scripted adversary, share refused: {attacks}."
    ]
    rows = c["answer_size"]["rows"]
    for language in sorted({r["language"] for r in rows}):
        mine = [r for r in rows if r["language"] == language and r["model"] == rows[0]["model"]]
        costs = ", ".join(
            f"{r['answer_format']}{' + glossary' if r['glossary_tokens'] else ''} "
            f"${r['usd_per_audio_hour']:.2f}"
            for r in mine
        )
        lines.append(
            f"Correction cost per audio hour, correcting {c['transcripts']}'s mistakes "
            f"({language}, {rows[0]['model']}, list prices): {costs}."
        )
    return lines


def replace_section(text: str, body: str) -> str:
    """``text`` with what lies between the bench markers replaced by ``body``."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {START} ... {END} section")
    return text[: start + len(START)] + "\n" + body.strip() + "\n" + text[end:]


def plots(results: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run in results.get("accuracy", {}).get("runs", []):
        xs = [c["duration_s"] for c in run["clips"]]
        ys = [c["rtf"] for c in run["clips"]]
        ax.scatter(xs, ys, s=14, label=f"{run['engine']} {run['model']} (eval clips)")
    memory = results.get("memory", [])
    if memory:
        ax.plot(
            [m["transcribed_seconds"] for m in memory],
            [m["rtf"] for m in memory],
            "o-",
            label=f"{memory[0]['engine']} {memory[0]['model']} (long audio)",
        )
    if ax.has_data():
        ax.set_xscale("log")
        ax.set_yscale("log")  # engines differ by tens of times
        ax.set_xlabel("audio seconds transcribed")
        ax.set_ylabel("real-time factor (lower is faster, log)")
        ax.set_title(f"RTF vs audio length ({results['environment']['device']})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / RTF_PLOT, dpi=110)
        written.append(RTF_PLOT)
    plt.close(fig)
    if memory:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        minutes = [m["audio_minutes"] for m in memory]
        for field, label in (
            ("peak_rss_mib", "peak RSS"),
            ("rss_after_decode_mib", "highest RSS while decoding the whole file"),
            ("rss_after_load_mib", "RSS after loading the model"),
            ("peak_gpu_mib", "peak GPU memory"),
        ):
            values = [m[field] for m in memory]
            if all(v is not None for v in values):
                ax.plot(minutes, values, "o-", label=label)
        ax.set_xscale("log")
        ax.set_xlabel("audio minutes")
        ax.set_ylabel("MiB")
        ax.set_title(f"Memory vs audio length ({memory[0]['model']}, {memory[0]['device']})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / MEMORY_PLOT, dpi=110)
        written.append(MEMORY_PLOT)
        plt.close(fig)
    fleet_runs = results.get("fleet", {}).get("runs", [])
    if fleet_runs:
        fig, axes = plt.subplots(
            len(fleet_runs), 1, figsize=(7, 2.6 * len(fleet_runs)), sharex=True, squeeze=False
        )
        for ax, run in zip(axes[:, 0], fleet_runs, strict=True):
            times = [point["t"] for point in run["timeline"]]
            backlog = [point["backlog"] for point in run["timeline"]]
            ax.step(times, backlog, "-", where="post", color="tab:blue",
                    label="Audio Queue backlog (visible + in flight)")  # fmt: skip
            ax.set_ylabel("messages", color="tab:blue")
            # The group on its own axis: a few workers beside tens of messages.
            group = ax.twinx()
            for field, label, style, color in (
                ("desired", "desired capacity", "--", "tab:orange"),
                ("workers", "worker processes", ":", "tab:green"),
            ):
                group.step(times, [p[field] for p in run["timeline"]], style, where="post",
                           color=color, label=label, linewidth=2)  # fmt: skip
            group.set_ylim(0, run["max_workers"] + 0.5)
            group.yaxis.set_major_locator(MaxNLocator(integer=True))
            group.set_ylabel("instances")
            ax.set_title(
                f"MaxWorkers {run['max_workers']}: {run['files']} files, "
                f"{run['files_per_hour']:g} files/hour",
                fontsize=9,
            )
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            lines = ax.get_legend_handles_labels()
            more = group.get_legend_handles_labels()
            ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper right")
        axes[-1, 0].set_xlabel("seconds from the uploads")
        fig.tight_layout()
        fig.savefig(out_dir / FLEET_PLOT, dpi=110)
        written.append(FLEET_PLOT)
        plt.close(fig)
    return written


def merged(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``previous`` with the parts ``new`` measured replaced; latency sections by label, and
    orchestration runs of other labels kept as its ``earlier`` runs.

    The run's environment stays ``previous``'s: a merged latency section carries its own.
    """
    out = dict(previous)
    measured = (
        "accuracy", "speed", "batching", "batch_memory", "hotwords", "loop", "orchestration",
        "memory",
    )  # fmt: skip
    for part in (*measured, "diarization", "cost", "correction", "fleet"):
        if part in new:
            out[part] = new[part]
    labels = {s["label"] for s in new.get("latency", [])}
    kept = [s for s in previous.get("latency", []) if s["label"] not in labels]
    if kept or labels:
        out["latency"] = kept + new.get("latency", [])
    if "orchestration" in new and "orchestration" in previous:
        out["orchestration"] = _orchestration_merged(
            previous["orchestration"], new["orchestration"]
        )
    # Each part's time is added; the total stays that of the run that measured everything.
    parts = {k: v for k, v in new["wall_seconds"].items() if k != "total"}
    out["wall_seconds"] = {**previous.get("wall_seconds", {}), **parts}
    return out


def _orchestration_merged(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``new``, with ``previous`` and its earlier runs kept under ``earlier`` unless they
    carry ``new``'s label."""
    label = new.get("label")
    earlier = [*previous.get("earlier", []), {k: v for k, v in previous.items() if k != "earlier"}]
    return {**new, "earlier": [run for run in earlier if run.get("label") != label]}


def write(results: dict[str, Any], out_dir: Path, readme: Path | None = None) -> list[Path]:
    """JSON, Markdown and plots into ``out_dir``; the README's section when ``readme``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / JSON_NAME).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    images = plots(results, out_dir)
    text = markdown(results)
    if images:
        text += "\n" + "\n".join(f"![{name}]({name})" for name in images) + "\n"
    (out_dir / MARKDOWN_NAME).write_text(text)
    written = [out_dir / JSON_NAME, out_dir / MARKDOWN_NAME, *(out_dir / i for i in images)]
    if readme is not None:
        link = (out_dir / MARKDOWN_NAME).resolve().relative_to(readme.resolve().parent)
        body = readme_section(results, link.as_posix())
        readme.write_text(replace_section(readme.read_text(), body))
        written.append(readme)
    return written
