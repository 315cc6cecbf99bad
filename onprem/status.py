"""``onprem status``: the job table as a table (or JSON), newest first."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from pipeline_core.jobs import JobField, JobRecord, JobState, JobTable


class SinceError(ValueError):
    pass


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``2025-01-01``, ``2025-01-01T10:00`` (UTC unless it says otherwise), ``7d``, ``12h``."""
    relative = re.fullmatch(r"(\d+)([dh])", value.strip())
    if relative:
        amount = int(relative.group(1))
        delta = timedelta(days=amount) if relative.group(2) == "d" else timedelta(hours=amount)
        return (now or datetime.now(UTC)) - delta
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise SinceError(
            f"--since {value!r} is not a date (2025-01-01), a UTC time (2025-01-01T10:00) "
            f"or an age (7d, 12h)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _seconds(start: object, end: object) -> float | None:
    begin, finish = _parse_time(start), _parse_time(end)
    if begin is None or finish is None:
        return None
    return round((finish - begin).total_seconds(), 1)


@dataclass(frozen=True)
class JobRow:
    job_id: str
    state: str
    language: str | None
    s3_key: str
    created_at: str
    updated_at: str
    # Durations in seconds, from the ``<state>_at`` times the job table records per step.
    waiting_seconds: float | None  # queued -> transcribing (GPU start-up included)
    transcribe_seconds: float | None
    correct_seconds: float | None
    total_seconds: float | None  # created -> finished, or -> now while running
    error: str | None
    # Lines an edit was refused for (kept as recognised) and the first reasons: a success
    # with refusals is delivered, and this is where its reader learns what to check.
    lines_refused: int | None = None
    refused_edits: str | None = None
    # The Result's status: tells a failure from a "superseded" older upload (job state
    # "failed" too), whose file a newer upload delivers.
    result_status: str | None = None

    @classmethod
    def from_record(cls, record: JobRecord, now: datetime) -> JobRow:
        at = {state: record.attributes.get(state.at_field) for state in JobState}
        finished = at[JobState.SUCCEEDED] or at[JobState.FAILED]
        end = finished or now.strftime("%Y-%m-%dT%H:%M:%SZ")
        return cls(
            job_id=record.job_id,
            state=record.state.value,
            language=record.language,
            s3_key=record.s3_key,
            created_at=record.created_at,
            updated_at=record.updated_at,
            waiting_seconds=_seconds(record.created_at, at[JobState.TRANSCRIBING]),
            transcribe_seconds=_seconds(at[JobState.TRANSCRIBING], at[JobState.TRANSCRIBED]),
            correct_seconds=_seconds(at[JobState.CORRECTING], at[JobState.SUCCEEDED]),
            total_seconds=_seconds(record.created_at, end),
            error=record.error if record.state is JobState.FAILED else None,
            lines_refused=_count(record.attributes.get(JobField.LINES_REFUSED)),
            refused_edits=record.attributes.get(JobField.REFUSED_EDITS),
            result_status=record.attributes.get(JobField.RESULT_STATUS),
        )


def _count(value: object) -> int | None:
    """A number of the job table (a ``Decimal``), or None where it is absent."""
    return int(value) if isinstance(value, Decimal | int) else None


def collect(
    table: JobTable,
    states: Sequence[JobState] | None = None,
    since: datetime | None = None,
    now: datetime | None = None,
) -> list[JobRow]:
    now = now or datetime.now(UTC)
    rows = []
    for record in table.scan(states or None):
        created = _parse_time(record.created_at)
        if since is not None and (created is None or created < since):
            continue
        rows.append(JobRow.from_record(record, now))
    rows.sort(key=lambda row: row.created_at, reverse=True)
    return rows


def to_json(rows: Iterable[JobRow]) -> str:
    return json.dumps([asdict(row) for row in rows], ensure_ascii=False, indent=2)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


_STATE_STYLE = {"succeeded": "green", "failed": "red", "superseded": "cyan"}


def render(rows: Sequence[JobRow], console: Console, total: int | None = None) -> None:
    count = f"{len(rows)} of {total}" if total and total > len(rows) else str(len(rows))
    table = Table(title=f"{count} job(s)")
    columns = ("created (UTC)", "state", "lang", "key", "wait", "asr", "llm", "total", "refused")
    for column in columns:
        table.add_column(column, no_wrap=column != "key")
    table.add_column("error", overflow="fold", max_width=60)
    for row in rows:
        shown_state = "superseded" if row.result_status == "superseded" else row.state
        # Text, not markup strings: a key like "lecture [2].mp3" must print as it is.
        table.add_row(
            Text(row.created_at.replace("T", " ").removesuffix("Z")),
            Text(shown_state, style=_STATE_STYLE.get(shown_state, "yellow")),
            Text(row.language or ""),
            Text(row.s3_key),
            _duration(row.waiting_seconds),
            _duration(row.transcribe_seconds),
            _duration(row.correct_seconds),
            _duration(row.total_seconds),
            Text(str(row.lines_refused), style="yellow") if row.lines_refused else "",
            Text(row.error or row.refused_edits or ""),
        )
    console.print(table)
