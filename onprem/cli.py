"""The ``onprem`` command: ``upload``, ``poll``, ``status``, ``redrive``.

Exit codes, for cron wrappers and systemd: 0 all good or nothing to do; 1 some files or
messages failed (or the run was interrupted); 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Final

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from rich.console import Console

from onprem import poll, reconcile, redrive, status, upload
from onprem.aws import Clients
from onprem.console import (
    NoProgress,
    RichUploadProgress,
    is_interactive,
    setup_logging,
    stdout_console,
)
from onprem.recording import speakers_flag
from onprem.settings import DEFAULT_FORMATS, OnpremSettings, formats_flag, load_settings
from onprem.shutdown import GracefulStop
from onprem.state import AlreadyRunningError, UploadState, run_lock
from pipeline_core.config import ConfigError
from pipeline_core.glossary import UnknownGlossaryError, check_name
from pipeline_core.jobs import JobState, JobTable
from pipeline_core.keys import OutputFormat
from pipeline_core.languages import UnknownLanguageError, normalize_language

log = logging.getLogger(__name__)

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
MIB: Final = 1024 * 1024

Handler = Callable[[argparse.Namespace, OnpremSettings, Console | None], int]


def _common() -> argparse.ArgumentParser:
    # SUPPRESS: an option left out of a sub-command must not overwrite one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="TOML config file (default: $ONPREM_CONFIG or ~/.config/transcribe-onprem.toml)",
    )
    common.add_argument("--region", default=argparse.SUPPRESS, help="AWS region")
    common.add_argument(
        "--profile", default=argparse.SUPPRESS, help="AWS profile (credentials stay in ~/.aws)"
    )
    common.add_argument(
        "--log-level", default=argparse.SUPPRESS, help="DEBUG, INFO, WARNING or ERROR"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="onprem",
        description="On-prem side of the transcription pipeline: upload recordings, fetch "
        "transcripts, show jobs, redrive dead letters.",
        parents=[common],
        epilog="Exit codes: 0 all good or nothing to do, 1 some files/messages failed, "
        "2 usage or configuration error. Settings: flags > environment > config file.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "upload", parents=[common], help="upload new recordings to audio-input/"
    )
    up.add_argument("folder", nargs="?", type=Path, help="folder to scan (config: input_dir)")
    up.add_argument("--bucket", help="the pipeline bucket (PIPELINE_BUCKET)")
    up.add_argument(
        "--glob",
        action="append",
        dest="patterns",
        metavar="PATTERN",
        help="file pattern, repeatable (default: the audio suffixes the pipeline accepts)",
    )
    up.add_argument(
        "--language",
        help="language for recordings without a sidecar or folder default (e.g. hebrew)",
    )
    up.add_argument(
        "--details", help="details for recordings without their own (e.g. 'Bava Kamma 2a')"
    )
    up.add_argument(
        "--speakers",
        type=speakers_flag,
        help="speaker labels for recordings that do not say: auto, a number of speakers or off",
    )
    up.add_argument(
        "--glossary",
        help="domain glossary for recordings without their own (e.g. talmud; 'none': no "
        "glossary; default: the one the details mention, else the deployment's)",
    )
    up.add_argument("--state-file", type=Path, help="SQLite file remembering uploads")
    up.add_argument(
        "--min-age",
        type=float,
        dest="min_age_seconds",
        metavar="SECONDS",
        help="skip files modified more recently (still being copied in); default 30",
    )
    up.add_argument("--multipart-threshold-mb", type=int, metavar="MB")
    up.add_argument("--multipart-chunksize-mb", type=int, metavar="MB")
    up.add_argument("--max-concurrency", type=int, metavar="N")
    up.add_argument("--dry-run", action="store_true", help="show what would be uploaded")
    up.add_argument(
        "--delete-after-upload",
        action="store_true",
        help="delete each original once its object is verified in the bucket",
    )
    up.add_argument("--no-progress", action="store_true", help="no progress bar")
    up.set_defaults(handler=_upload)

    po = commands.add_parser(
        "poll", parents=[common], help="download finished transcripts from the results queue"
    )
    po.add_argument("--queue-url", help="the Results Queue URL (RESULTS_QUEUE_URL)")
    po.add_argument("--output-dir", type=Path, help="where transcripts go")
    po.add_argument("--once", action="store_true", help="drain the queue, then exit (cron)")
    po.add_argument(
        "--wait-seconds",
        type=int,
        choices=range(21),
        metavar="0-20",
        dest="poll_wait_seconds",
        help="long-poll wait (default 20)",
    )
    po.add_argument(
        "--formats",
        type=formats_flag,
        metavar="LIST",
        help="what to bring home for each transcript, comma-separated, from "
        f"{','.join(f.value for f in OutputFormat)} (default "
        f"{','.join(f.value for f in DEFAULT_FORMATS)})",
    )
    po.set_defaults(handler=_poll)

    st = commands.add_parser("status", parents=[common], help="jobs in the job table")
    st.add_argument("--job-table", help="the job table's name (JOB_TABLE)")
    st.add_argument(
        "--state",
        action="append",
        choices=[state.value for state in JobState],
        help="only jobs in this state (repeatable)",
    )
    st.add_argument("--since", help="only jobs created since: 2025-01-01, 2025-01-01T10:00, 7d")
    st.add_argument("--limit", type=int, default=200, help="rows in the table (default 200)")
    st.add_argument("--json", action="store_true", help="all matching jobs as JSON")
    st.add_argument(
        "--reconcile",
        action="store_true",
        help="find uploads in audio-input/ whose dispatch did not finish and hand them to "
        "the pipeline's reconciler (instead of listing jobs)",
    )
    st.add_argument(
        "--grace-minutes",
        type=float,
        default=60.0,
        help="with --reconcile: leave younger uploads to Lambda's own retries (default 60, "
        "the Dispatcher's maximum event age)",
    )
    st.add_argument("--bucket", help="with --reconcile: the pipeline bucket (PIPELINE_BUCKET)")
    st.set_defaults(handler=_status)

    rd = commands.add_parser(
        "redrive", parents=[common], help="show dead-lettered messages; move them back"
    )
    rd.add_argument(
        "--queue",
        action="append",
        choices=["audio", "llm", "results"],
        help="only this DLQ (repeatable; default all configured)",
    )
    rd.add_argument("--job-table", help="the job table, for each job's recorded error")
    rd.add_argument("--yes", action="store_true", help="move the messages back")
    rd.add_argument("--limit", type=int, default=500, help="messages per DLQ (default 500)")
    rd.add_argument("--json", action="store_true", help="JSON instead of a table")
    rd.set_defaults(handler=_redrive)
    return parser


_OVERRIDES: Final = {
    # argparse dest -> settings field
    "bucket": "bucket",
    "folder": "input_dir",
    "patterns": "patterns",
    "state_file": "state_file",
    "min_age_seconds": "min_age_seconds",
    "multipart_threshold_mb": "multipart_threshold_mb",
    "multipart_chunksize_mb": "multipart_chunksize_mb",
    "max_concurrency": "max_concurrency",
    "queue_url": "results_queue_url",
    "output_dir": "output_dir",
    "poll_wait_seconds": "poll_wait_seconds",
    "formats": "formats",
    "job_table": "job_table",
    "region": "region",
    "profile": "profile",
    "log_level": "log_level",
}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    values = {field: getattr(args, dest, None) for dest, field in _OVERRIDES.items()}
    if values["patterns"] is not None:
        values["patterns"] = tuple(values["patterns"])
    return values


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _upload(args: argparse.Namespace, settings: OnpremSettings, console: Console | None) -> int:
    root: Path = settings.need("input_dir")
    if not root.is_dir():
        raise ConfigError(f"the folder to upload from, {root}, is not a folder")
    for source, language in (("--language", args.language), ("language", settings.language)):
        try:
            if language is not None:
                normalize_language(language)
        except UnknownLanguageError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    if args.glossary is not None:
        try:
            check_name(args.glossary)
        except UnknownGlossaryError as exc:
            raise ConfigError(f"--glossary: {exc}") from None
    options = upload.UploadOptions(
        bucket=settings.need("bucket"),
        root=root.resolve(),
        patterns=settings.patterns,
        flag_language=args.language,
        flag_details=args.details,
        flag_speakers=args.speakers,
        flag_glossary=args.glossary,
        config_language=settings.language,
        min_age_seconds=settings.min_age_seconds,
        dry_run=args.dry_run,
        delete_after_upload=args.delete_after_upload,
        multipart_threshold=settings.multipart_threshold_mb * MIB,
        multipart_chunksize=settings.multipart_chunksize_mb * MIB,
        max_concurrency=settings.max_concurrency,
    )
    # SIGTERM (systemd stop, cron timeout) unwinds like Ctrl-C: s3transfer then aborts the
    # multipart upload in flight instead of leaving it behind.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    s3 = Clients(settings).s3()
    progress = RichUploadProgress(console) if console and not args.no_progress else NoProgress()
    if args.dry_run:
        with UploadState(settings.state_path, read_only=True) as state:
            report = upload.run_upload(s3, state, options, progress)
    else:
        with run_lock(settings.state_path), UploadState(settings.state_path) as state:
            report = upload.run_upload(s3, state, options, progress)
    if report.fatal and console is None:
        print(f"onprem upload: {report.fatal}", file=sys.stderr)
    if console is not None:
        summary = ", ".join(f"{count} {name}" for name, count in report.summary().items())
        console.print(summary or "no audio files found", highlight=False)
    return report.exit_code


def _poll(args: argparse.Namespace, settings: OnpremSettings, console: Console | None) -> int:
    options = poll.PollOptions(
        queue_url=settings.need("results_queue_url"),
        output_dir=settings.need("output_dir"),
        wait_seconds=settings.poll_wait_seconds,
        once=args.once,
        state_file=settings.state_path,
        formats=settings.formats,
    )
    clients = Clients(settings)
    stop = GracefulStop()
    stop.install()
    report = poll.Poller(clients.s3(), clients.sqs(), options, stop).run()
    if report.fatal and console is None:
        # Cron mails stderr; the JSON line is there, this says it in words too.
        print(f"onprem poll: {report.fatal}", file=sys.stderr)
    if console is not None:
        for source, lines in sorted(report.lines_refused.items()):
            console.print(
                f"{source}: {lines} line(s) kept as recognised (edits refused; see onprem status)",
                highlight=False,
                markup=False,
            )
    return report.exit_code


def _status(args: argparse.Namespace, settings: OnpremSettings, console: Console | None) -> int:
    if args.reconcile:
        return _reconcile(args, settings)
    table = JobTable(Clients(settings).dynamodb(), settings.need("job_table"))
    try:
        since = status.parse_since(args.since) if args.since else None
    except status.SinceError as exc:
        raise ConfigError(str(exc)) from None
    states = [JobState(value) for value in args.state] if args.state else None
    rows = status.collect(table, states, since)
    if args.json:
        print(status.to_json(rows))
    else:
        status.render(rows[: args.limit], stdout_console(), total=len(rows))
    return EXIT_OK


def _reconcile(args: argparse.Namespace, settings: OnpremSettings) -> int:
    clients = Clients(settings)
    handed = reconcile.hand_over_unfinished(
        clients.s3(),
        clients.sqs(),
        JobTable(clients.dynamodb(), settings.need("job_table")),
        bucket=settings.need("bucket"),
        dispatcher_dlq_url=settings.need("dispatcher_dlq_url"),
        grace=timedelta(minutes=args.grace_minutes),
    )
    if args.json:
        print(reconcile.to_json(handed))
    else:
        reconcile.render(handed, stdout_console())
    return EXIT_OK


def _redrive(args: argparse.Namespace, settings: OnpremSettings, console: Console | None) -> int:
    specs = redrive.dlq_specs(
        audio_dlq=settings.audio_dlq_url,
        llm_dlq=settings.llm_dlq_url,
        results_dlq=settings.results_dlq_url,
        audio_queue=settings.audio_queue_url,
        llm_queue=settings.llm_queue_url,
        results_queue=settings.results_queue_url,
    )
    if args.queue:
        specs = [spec for spec in specs if spec.name in args.queue]
    if not specs:
        raise ConfigError(
            "no dead-letter queue configured: set audio_dlq_url, llm_dlq_url or "
            "results_dlq_url (AUDIO_DLQ_URL, LLM_DLQ_URL, RESULTS_DLQ_URL)"
        )
    clients = Clients(settings)
    sqs = clients.sqs()
    jobs = JobTable(clients.dynamodb(), settings.job_table) if settings.job_table else None
    shown: list[redrive.DlqMessage] = []
    code = EXIT_OK
    for spec in specs:
        items = redrive.inspect(sqs, spec, jobs, limit=args.limit)
        try:
            if args.yes and items:
                redrive.move(sqs, spec, items, jobs)
        except (redrive.RedriveError, ClientError, BotoCoreError) as exc:
            log.error("%s DLQ: %s", spec.name, exc)
            code = EXIT_FAILED
        finally:
            redrive.release(sqs, spec, items)
        shown.extend(items)
    if args.json:
        print(json.dumps([item.to_dict() for item in shown], ensure_ascii=False, indent=2))
    else:
        console_out = stdout_console()
        redrive.render(shown, console_out)
        if shown and not args.yes:
            console_out.print("Run again with --yes to move these back to their source queues.")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    interactive = is_interactive()
    try:
        settings = load_settings(getattr(args, "config", None), overrides=_overrides(args))
        console = setup_logging(settings.log_level, interactive)
    except ConfigError as exc:
        setup_logging("INFO", interactive)
        log.error("configuration error: %s", exc)
        return EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args, settings, console)
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_USAGE
    except (NoRegionError, NoCredentialsError, PartialCredentialsError, ProfileNotFound) as exc:
        log.error("AWS configuration error: %s", exc)
        return EXIT_USAGE
    except sqlite3.Error as exc:
        log.error("the upload state file %s cannot be used: %s", settings.state_path, exc)
        return EXIT_USAGE
    except AlreadyRunningError as exc:
        log.warning("%s", exc)
        return EXIT_OK
    except (ClientError, BotoCoreError) as exc:
        log.error("AWS error: %s", exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        log.warning("interrupted; nothing half-done is left behind, the next run goes on")
        return EXIT_FAILED
