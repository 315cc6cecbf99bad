"""Poison input of every kind, between good recordings: each ends as a ``failed`` Result
with a reason, or (when nobody can be named) in the Audio DLQ after 3 receives; the daemon
keeps serving the good files in between."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.audio_factory import corrupt_mp3, text_as_mp3
from system.reliability.conftest import Report
from system.reliability.scenario import scenario

from gpu_worker.weights.bundled import tiny_en_ct2

pytestmark = pytest.mark.slow

# Audio Queue messages sent by hand (a bug upstream, a person with the CLI): body -> the
# audio key a failed Result names (None: DLQ) and words its reason must contain.
MESSAGES: list[tuple[str, str | None, str]] = [
    ("{not json", None, ""),
    (json.dumps({"language": "english"}), None, ""),  # no s3_key: nobody to tell
    (json.dumps({"s3_key": "no-language.mp3"}), "audio-input/no-language.mp3", "language"),
    (
        json.dumps({"s3_key": "klingon.mp3", "language": "klingon"}),
        "audio-input/klingon.mp3",
        "klingon",
    ),
    (json.dumps({"s3_key": "ghost.mp3", "language": "en"}), "audio-input/ghost.mp3", "not exist"),
    (
        # Another bucket: failed as this job's input before any read (the worker's role
        # could not read it: AWS would answer 403, a configuration error for the worker).
        json.dumps({"s3_key": "elsewhere.mp3", "language": "en", "bucket": "no-such-bucket"}),
        "audio-input/elsewhere.mp3",
        "names bucket 'no-such-bucket'",
    ),
]


def test_poison_input_fails_with_reasons_or_dead_letters_and_good_work_goes_on(
    tmp_path: Path, fox_mp3: Path, report: Report
) -> None:
    # The Hebrew model is missing on this "AMI": not the file's fault, so the worker retries
    # (with back-off), and on the last of the 3 deliveries fails the job with the reason
    # instead of letting the message reach the DLQ unseen.
    models = f"*={tiny_en_ct2()},he={tmp_path / 'no-hebrew-model'}"
    with scenario(tmp_path / "run", worker={"WORKER_MODELS": models}) as run:
        good = [run.upload("good-1.mp3", fox_mp3)]
        bad = [
            run.upload("empty.mp3", b""),
            run.upload("corrupt.mp3", corrupt_mp3(tmp_path / "c.mp3")),
            run.upload("notes.mp3", text_as_mp3(tmp_path / "t.mp3")),
            run.upload("alien.mp3", fox_mp3, language="klingon"),
            run.upload("scan.pdf", b"%PDF-1.4 not audio"),
            run.upload(
                "bad-meta.mp3",
                fox_mp3,
                metadata={"language": "en", "details": "%FF%FE", "meta-encoding": "percent-utf8"},
            ),
            run.upload("hebrew.mp3", fox_mp3, language="hebrew"),
        ]
        audio_url = run.queues()["AudioQueue"]
        for body, _, _ in MESSAGES:
            run.sqs.send_message(QueueUrl=audio_url, MessageBody=body)
        good.append(run.upload("good-2.mp3", fox_mp3))

        took = run.wait_finished()
        run.wait_queues_empty(timeout=60, expected={"AudioDlq": 2})
        run.wait_scaled_in()
        injected = {key: words for _, key, words in MESSAGES if key is not None}
        figures = run.check(
            expected_depths={"AudioDlq": 2},
            injected=injected,
        )

        assert figures.succeeded == len(good)
        assert figures.failed == len(bad)
        for upload in bad:
            record = run.record(upload)
            assert record is not None, upload.key
            assert record.error, upload.key
        dead = run.sqs.receive_message(
            QueueUrl=run.queues()["AudioDlq"], MaxNumberOfMessages=10, AttributeNames=["All"]
        )["Messages"]
        assert sorted(m["Body"] for m in dead) == sorted(b for b, k, _ in MESSAGES if k is None)
        assert all(int(m["Attributes"]["ApproximateReceiveCount"]) >= 1 for m in dead)
        hebrew = run.record(bad[-1])
        assert hebrew is not None
        assert "gave up after 3 attempts" in (hebrew.error or "")
    report(
        fault="poison input: 7 bad uploads + 6 bad Audio Queue messages between 2 good files",
        happened=(
            "Dispatcher refused empty/unsupported/bad-metadata/unknown-language uploads; the "
            "worker failed corrupt, non-audio and missing ones at once, and a job whose model is "
            "missing on its 3rd delivery; 2 messages naming no file went to the Audio DLQ "
            "after 3 receives"
        ),
        outcome="2 succeeded, 11 failed with reasons, 2 in the DLQ (alarmed)",
        figures={
            **figures.as_dict(),
            "injected_failed": len(injected),
            "dlq": 2,
            "finish_s": round(took, 1),
        },
    )
