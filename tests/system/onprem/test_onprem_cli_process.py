"""``python -m onprem`` as cron and systemd run it: a real process against moto's HTTP server.

Covers what only a separate process shows: JSON lines on a non-terminal, a progress bar on a
terminal, SIGTERM, and an output folder that is read-only or full (made real with a private
mount in a user namespace when the tests run as root, who ignores permission bits).
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from support.onprem_helpers import BUCKET, REGION, write_final_outputs
from support.waiting import wait_until

from pipeline_core import keys
from pipeline_core.contracts import Result, send_to_queue

pytestmark = pytest.mark.slow  # processes of their own: not in the fast loop

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def endpoint(moto_endpoint: str) -> str:
    request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass
    return moto_endpoint


@pytest.fixture
def s3(endpoint: str) -> S3Client:
    client: S3Client = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def sqs(endpoint: str) -> SQSClient:
    client: SQSClient = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
    return client


@pytest.fixture
def queue(sqs: SQSClient) -> str:
    return sqs.create_queue(QueueName="results", Attributes={"VisibilityTimeout": "30"})["QueueUrl"]


def child_env(endpoint: str) -> dict[str, str]:
    return {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
    }


def onprem(*args: str) -> list[str]:
    return [sys.executable, "-m", "onprem", *args]


def run(
    endpoint: str, *args: str, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), *onprem(*args)],
        env=child_env(endpoint),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def publish(s3: S3Client, sqs: SQSClient, queue: str, name: str, body: bytes) -> None:
    audio = keys.audio_key(name)
    final = write_final_outputs(s3, audio, "the transcript")  # every format, then the text
    s3.put_object(Bucket=BUCKET, Key=final.text, Body=body)
    result = Result.success(audio, keys.s3_uri(BUCKET, final.text))
    send_to_queue(sqs, queue, result)


def depth(sqs: SQSClient, queue: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_cron_upload_logs_one_json_line_per_file_then_poll_fetches(
    s3: S3Client, sqs: SQSClient, queue: str, endpoint: str, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp3").write_bytes(b"a")
    (folder / "ב.mp3").write_bytes(b"b")
    (folder / "bad.mp3").write_bytes(b"c")
    (folder / "bad.mp3.json").write_text('{"language": "elvish"}')

    first = run(endpoint, "upload", str(folder), "--bucket", BUCKET, "--language", "he")
    assert first.returncode == 1, first.stderr
    lines = json_lines(first.stderr)
    per_file = {line["s3_key"]: line["status"] for line in lines if "status" in line}
    assert per_file == {
        "audio-input/a.mp3": "uploaded",
        "audio-input/ב.mp3": "uploaded",
        "audio-input/bad.mp3": "failed",
    }
    assert all(line["service"] == "onprem" for line in lines)

    (folder / "bad.mp3.json").write_text('{"language": "english"}')
    second = run(endpoint, "upload", str(folder), "--bucket", BUCKET, "--language", "he")
    assert second.returncode == 0, second.stderr
    statuses = [line.get("status") for line in json_lines(second.stderr)]
    assert statuses.count("uploaded") == 1

    publish(s3, sqs, queue, "ב.mp3", "תמליל".encode())
    out = tmp_path / "out"
    args = ["poll", "--once", "--queue-url", queue, "--output-dir", str(out), "--wait-seconds", "1"]
    polled = run(endpoint, *args)
    assert polled.returncode == 0, polled.stderr
    assert (out / "ב.txt").read_text(encoding="utf-8") == "תמליל"
    assert depth(sqs, queue) == 0


def test_an_interactive_upload_shows_rich_progress_not_json(
    s3: S3Client, endpoint: str, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "lecture.mp3").write_bytes(os.urandom(64 * 1024))
    controller, terminal = pty.openpty()
    env = {**child_env(endpoint), "TERM": "xterm-256color", "COLUMNS": "160"}
    process = subprocess.Popen(
        onprem("upload", str(folder), "--bucket", BUCKET, "--language", "en"),
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=60) == 0
    text = output.decode("utf-8", errors="replace")
    assert "audio-input/lecture.mp3" in text
    assert "1 uploaded" in text
    assert '"level"' not in text, "no JSON lines on a terminal"
    assert s3.head_object(Bucket=BUCKET, Key="audio-input/lecture.mp3")["ContentLength"] == 65536


def test_sigterm_stops_the_service_cleanly(
    s3: S3Client, sqs: SQSClient, queue: str, endpoint: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    publish(s3, sqs, queue, "first.mp3", b"first")
    process = subprocess.Popen(
        onprem("poll", "--queue-url", queue, "--output-dir", str(out), "--wait-seconds", "20"),
        env=child_env(endpoint),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_until((out / "first.txt").exists, 30, "the first transcript", interval=0.1)
    assert (out / "first.txt").read_bytes() == b"first"
    wait_until(lambda: depth(sqs, queue) == 0, 30, "the Results Queue to empty", interval=0.1)
    time.sleep(0.5)  # now idle in a 20 s long poll
    stopped_at = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr
    assert time.monotonic() - stopped_at < 10, "the long poll must not hold the stop"
    assert depth(sqs, queue) == 0
    assert any(line.get("message") == "poll run finished" for line in json_lines(stderr))


def confinement() -> str | None:
    """How to make a folder read-only or full here: 'chmod', 'namespace' or None."""
    if os.geteuid() != 0:
        return "chmod"
    if shutil.which("unshare") is None:
        return None
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False)
    return "namespace" if probe.returncode == 0 else None


def test_a_read_only_output_folder_is_a_clear_error_and_the_message_stays(
    s3: S3Client, sqs: SQSClient, queue: str, endpoint: str, tmp_path: Path
) -> None:
    how = confinement()
    if how is None:
        pytest.skip("running as root without user namespaces: no way to make a folder read-only")
    out = tmp_path / "out"
    out.mkdir()
    publish(s3, sqs, queue, "lecture.mp3", b"text")
    args = ["poll", "--once", "--queue-url", queue, "--output-dir", str(out), "--wait-seconds", "1"]
    if how == "chmod":
        out.chmod(0o555)
        prefix: list[str] = []
    else:
        script = 'mount -o bind,ro "$1" "$1" || exit 99; shift; exec "$@"'
        prefix = ["unshare", "-rm", "sh", "-c", script, "sh", str(out)]
    try:
        result = run(endpoint, *args, prefix=prefix)
    finally:
        out.chmod(0o755)
    assert result.returncode == 1, result.stderr
    assert f"the output folder {out} is not writable" in result.stderr
    assert "Read-only file system" in result.stderr or "Permission denied" in result.stderr
    assert depth(sqs, queue) == 1
    assert list(out.iterdir()) == []


def test_a_full_disk_stops_the_run_and_keeps_the_message(
    s3: S3Client, sqs: SQSClient, queue: str, endpoint: str, tmp_path: Path
) -> None:
    if confinement() != "namespace":
        pytest.skip("a small private file system needs a user namespace")
    out = tmp_path / "out"
    out.mkdir()
    publish(s3, sqs, queue, "long.mp3", os.urandom(3 * 1024 * 1024))
    script = (
        'mount -t tmpfs -o size=1m tmpfs "$1" || exit 99; out="$1"; shift; "$@"; rc=$?; '
        'echo "LEFT:$(ls -A "$out")"; exit $rc'
    )
    args = ["poll", "--once", "--queue-url", queue, "--output-dir", str(out), "--wait-seconds", "1"]
    result = run(endpoint, *args, prefix=["unshare", "-rm", "sh", "-c", script, "sh", str(out)])
    assert result.returncode == 1, result.stderr
    assert "No space left on device" in result.stderr
    assert "the message stays in the queue" in result.stderr
    assert "LEFT:\n" in result.stdout, f"no partial or temporary file: {result.stdout}"
    assert depth(sqs, queue) == 1
    # Handed back at once, not after the 30 s visibility timeout.
    assert len(sqs.receive_message(QueueUrl=queue).get("Messages", [])) == 1


def test_sigterm_during_a_multipart_upload_leaves_nothing_half_done(
    s3: S3Client, endpoint: str, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    data = os.urandom(60 * 1024 * 1024)
    (folder / "big.mp3").write_bytes(data)
    args = ["upload", str(folder), "--bucket", BUCKET, "--language", "en"]
    sizes = ["--multipart-threshold-mb", "5", "--multipart-chunksize-mb", "5"]
    process = subprocess.Popen(
        onprem(*args, *sizes, "--max-concurrency", "1"),
        env=child_env(endpoint),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )

    def multipart_upload_started() -> bool:
        assert process.poll() is None, process.communicate()[1]
        return bool(s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads"))

    wait_until(multipart_upload_started, 30, "the multipart upload to start", interval=0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 1, stderr
    assert "interrupted" in stderr
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0, "no half object"

    again = run(endpoint, *args, *sizes)
    assert again.returncode == 0, again.stderr
    assert s3.get_object(Bucket=BUCKET, Key="audio-input/big.mp3")["Body"].read() == data
