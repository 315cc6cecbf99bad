"""Checks that the benchmark's stored figures agree with the figures they are derived from."""

from __future__ import annotations

from typing import Any

from support.rounding import assert_derived


def assert_latency_run_consistent(run: dict[str, Any]) -> None:
    """A latency run's overhead and calls per service follow from its seconds and operations."""
    files = run["files"]
    assert_derived(
        (run["overhead"], 4),
        lambda loop_s, engine_s: loop_s / engine_s - 1,
        (run["loop_seconds"], 3),
        (run["engine_seconds"], 3),
    )
    assert_derived(
        (run["overhead_ms_per_file"], 1),
        lambda loop_s, engine_s: 1000 * (loop_s - engine_s) / files,
        (run["loop_seconds"], 3),
        (run["engine_seconds"], 3),
    )
    if "idle_exit_seconds" in run:  # the loop ends at the last hand-off, in three parts
        assert_derived(
            (run["overhead"], 4),
            lambda first_s, between, last_s, engine_s: (first_s + last_s) / engine_s + between,
            (run["first_fetch_seconds"], 3),
            (run["between_files_overhead"], 4),
            (run["last_hand_off_seconds"], 3),
            (run["engine_seconds"], 3),
        )
        assert_derived(
            (run["overhead_with_idle_exit"], 4),
            lambda loop_s, idle_s, engine_s: (loop_s + idle_s) / engine_s - 1,
            (run["loop_seconds"], 3),
            (run["idle_exit_seconds"], 3),
            (run["engine_seconds"], 3),
        )
        assert min(run["first_fetch_seconds"], run["last_hand_off_seconds"]) > 0
        assert run["idle_exit_seconds"] > 0
        assert 0 <= run["between_files_overhead"] <= run["overhead"]
    elif "between_files_overhead" in run:  # runs from before 2026-12-02: the idle exit in it
        assert 0 <= run["between_files_overhead"] <= run["overhead"]
        assert 0 <= run["first_and_last_seconds"] <= run["loop_seconds"]
    operations = run["api_calls_by_operation_per_file"]
    assert set(run["api_calls_per_file"]) == {op.split(".", 1)[0] for op in operations}
    for service, calls in run["api_calls_per_file"].items():
        of_service = [(n, 2) for op, n in operations.items() if op.startswith(f"{service}.")]
        assert_derived((calls, 2), lambda *counts: sum(counts), *of_service)
    assert run["proxied_requests_per_file"] >= sum(run["api_calls_per_file"].values())
    assert run["peak_rss_mib"] >= run["rss_before_mib"] > 0


def assert_batching_row_consistent(row: dict[str, Any]) -> None:
    """A language's RTFs follow from its seconds; its error rates are rates."""
    assert row["audio_seconds"] > 30  # longer than one window: the batched path ran
    for path in ("unbatched", "batched"):
        assert_derived(
            (row[f"{path}_rtf"], 4),
            lambda seconds, audio: seconds / audio,
            (row[f"{path}_seconds"], 3),
            (row["audio_seconds"], 2),
        )
        assert row[f"{path}_cer"] >= 0
        wer = row[f"{path}_wer"]
        assert wer is None or wer >= 0


def assert_batch_memory_section_consistent(section: dict[str, Any]) -> None:
    """The estimate is the engine's own for the section's model and device; each run's RTF
    follows from its seconds; the batch sizes rise."""
    from bench.engines import model_dir
    from gpu_worker.transcription.engines.batch_size import (
        MOST_CHUNKS,
        ModelSize,
        chunk_bytes,
        ct2_activation_bytes,
    )

    size = ModelSize.of_ct2(model_dir(section["engine"], section["model"]))
    activation_bytes = ct2_activation_bytes(section["compute_type"])
    estimate = chunk_bytes(size, section["device"], activation_bytes)
    assert section["estimate_chunk_mib"] == round(estimate / 2**20, 1)
    assert section["most_chunks"] == MOST_CHUNKS[section["device"]]
    sizes = [run["batch_size"] for run in section["runs"]]
    assert sizes == sorted(set(sizes))
    for run in section["runs"]:
        assert run["audio_seconds"] > 30  # longer than one window: the batched path ran
        assert_derived(
            (run["rtf"], 4),
            lambda seconds, audio: seconds / audio,
            (run["seconds"], 3),
            (run["audio_seconds"], 2),
        )
        assert run["peak_rss_mib"] >= run["rss_before_mib"] > 0
