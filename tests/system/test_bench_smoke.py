"""``python -m bench --quick`` end to end, so the benchmark cannot rot.

Benchmarks are not tests: nothing here asserts how fast anything is, only that every part
ran and wrote figures of the right shape and range.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.bench_figures import (
    assert_batch_memory_section_consistent,
    assert_batching_row_consistent,
    assert_latency_run_consistent,
)
from support.repo_paths import REPO_ROOT
from support.rounding import assert_derived

from bench import diarization, report

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench")
    readme = (REPO_ROOT / "README.md").read_text()
    subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
        timeout=300,
    )
    assert (REPO_ROOT / "README.md").read_text() == readme, "--quick must not touch the README"
    return out, json.loads((out / report.JSON_NAME).read_text())


def test_every_figure_records_where_and_how_it_was_measured(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    _, results = quick_run
    env = results["environment"]
    for field in ("date_utc", "cpu", "device", "git_commit"):
        assert env[field]
    assert env["versions"]["faster-whisper"]
    assert results["quick"] is True
    assert results["accuracy"]["normaliser"]


def test_accuracy_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    run = results["accuracy"]["runs"][0]
    assert (run["engine"], run["model"]) == ("faster-whisper", "tiny.en")
    overall = run["groups"][0]
    assert overall["scope"] == "overall"
    assert overall["reference_words"] > 0
    assert 0 <= overall["wer"] <= 1
    clip = run["clips"][0]
    assert clip["hypothesis"]
    assert clip["rtf"] > 0
    assert results["accuracy"]["correction"]["status"] == "not measured"


def test_correction_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    section = results["correction"]
    [oracle] = section["oracle"]["languages"]
    assert oracle["language"] == "en"
    assert oracle["edits_accepted"] <= oracle["edits_proposed"]
    attacks = {a["kind"]: a for a in section["adversary"]["attacks"]}
    assert attacks["Aramaic -> Hebrew"]["attempted"] == 12  # its own Talmudic lines
    assert all(a["refused"] <= a["attempted"] for a in attacks.values())
    assert section["answer_size"]["rows"] == []  # --quick: no hour of speech


def test_speed_loop_and_orchestration_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    bare = results["speed"]["bare"][0]
    assert bare["rtf"] > 0
    assert bare["seconds"] > 0
    loop = results["loop"][0]
    assert loop["files"] == 1
    assert loop["loop_seconds"] > 0
    assert loop["bare_seconds"] > 0
    assert_derived(
        (loop["overhead"], 4),
        lambda loop_s, bare_s: loop_s / bare_s - 1,
        (loop["loop_seconds"], 3),
        (loop["bare_seconds"], 3),
    )
    orchestration = results["orchestration"]
    assert orchestration["total_ms_per_file"] > 0
    assert orchestration["api_calls_per_file"]["s3"] > 0
    assert orchestration["api_calls_per_file"]["sqs"] > 0
    assert orchestration["api_calls_per_file"]["dynamodb"] > 0


def test_batched_against_unbatched_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    section = results["batching"]
    assert (section["engine"], section["model"]) == ("faster-whisper", "tiny.en")
    [row] = section["languages"]
    assert row["language"] == "en"
    assert row["repeats"] >= 2  # one short generated clip, joined past one window
    assert row["reference_words"] > 0
    assert_batching_row_consistent(row)


def test_hotwords_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    section = results["hotwords"]
    assert (section["engine"], section["model"], section["glossary"]) == (
        "faster-whisper", "tiny.en", "talmud",
    )  # fmt: skip
    [row] = section["languages"]
    assert row["language"] == "en"
    assert "Abaye" in row["hotwords"]
    assert row["bare_wer"] is not None
    assert row["primed_wer"] is not None
    assert 0 <= row["low_confidence_words"] <= row["words"]


def test_batch_memory_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    section = results["batch_memory"]
    assert section["environment"]["date_utc"]
    assert (section["engine"], section["model"]) == ("faster-whisper", "tiny.en")
    assert [run["batch_size"] for run in section["runs"]] == [1, 2]
    assert_batch_memory_section_consistent(section)


def test_latency_injected_loop_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    [section] = results["latency"]
    assert section["label"] == "this checkout"
    assert section["environment"]["date_utc"]
    [run] = section["runs"]
    assert (run["files"], run["seconds_per_file"]) == (2, 30)
    assert (run["call_latency_ms"], run["engine_fraction"]) == (20, 0.02)
    assert_latency_run_consistent(run)
    # The worker claims, downloads, writes and hands off each file: every service is called.
    operations = run["api_calls_by_operation_per_file"]
    for operation in ("sqs.ReceiveMessage", "dynamodb.UpdateItem", "s3.GetObject"):
        assert operations[operation] >= 1


def test_memory_and_cost_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    [memory] = results["memory"]
    assert memory["audio_seconds"] == pytest.approx(15, abs=0.5)
    assert memory["peak_rss_mib"] >= memory["rss_after_load_mib"] > 0
    rows = results["cost"]["rows"]
    assert rows[-1]["usd_per_audio_hour"] == pytest.approx(1.44)
    measured = [r for r in rows[:-1] if r["rtf"] is not None]
    for row in measured:  # priced from the stored RTF, so only the result is rounded
        assert_derived(
            (row["usd_per_audio_hour"], 4),
            lambda usd, rtf: usd * rtf,
            (row["usd_per_hour"], None),
            (row["rtf"], None),
        )


def test_diarization_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    if "diarization" not in results:  # no evaluation clips here: the part says so
        assert any(s["what"] == "diarization" for s in results["skipped"])
        return
    section = results["diarization"]
    assert [c["case"] for c in section["cases"]] == [c.name for c in diarization.QUICK_CASES]
    for case in section["cases"]:
        assert 0 <= case["confusion"] <= case["der"]
        assert case["found_speakers"] >= 1
        assert_derived(
            (case["rtf"], 4),
            lambda took, audio: took / audio,
            (case["diarize_seconds"], 3),
            (case["audio_seconds"], 1),
        )
    assert 0 <= section["count_accuracy"] <= 1
    assert section["added_rss_mib"] > 0
    assert "## Speaker labels (diarization)" in (out / report.MARKDOWN_NAME).read_text()


def test_markdown_and_plots_are_written(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    text = (out / report.MARKDOWN_NAME).read_text()
    latency = "### Worker overhead at GPU speed"
    batching = "### Batched inference in the worker's engine"
    for heading in ("## Accuracy", "## Speed", batching, latency, "## Memory", "## Cost"):
        assert heading in text
    assert results["environment"]["date_utc"] in text
    for name in (report.RTF_PLOT, report.MEMORY_PLOT):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    section = report.readme_section(results, "bench/results/results.md")
    assert "faster-whisper" in section
    assert "1.44" in section


def test_render_only_rewrites_the_report_from_the_json(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    out, _ = quick_run
    markdown = out / report.MARKDOWN_NAME
    before = markdown.read_text()
    markdown.unlink()
    subprocess.run(
        [sys.executable, "-m", "bench", "--render-only", "--out", str(out)],
        cwd=REPO_ROOT,
        check=True,
        timeout=120,
    )
    assert markdown.read_text() == before


def test_fleet_figures(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    section = results["fleet"]
    assert section["threads_per_worker"] == 1
    one, two = section["runs"]
    assert (one["max_workers"], two["max_workers"]) == (1, 2)
    for run in (one, two):
        assert run["failed"] == []
        assert run["files"] == 2
        assert 1 <= run["most_workers_at_once"] <= run["max_workers"]
        assert_derived(
            (run["files_per_hour"], 1),
            lambda files, seconds: files * 3600 / seconds,
            (run["files"], 0),
            (run["seconds"], 1),
        )
        assert max(point["desired"] for point in run["timeline"]) <= run["max_workers"]
        assert run["timeline"][-1]["workers"] == 0  # back to zero at the end
    assert two["ideal_files_per_hour"] == round(2 * one["files_per_hour"], 1)
    assert (out / report.FLEET_PLOT).stat().st_size > 0
