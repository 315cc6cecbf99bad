"""Reading an Audio Queue message: a valid ``AudioJob``, or what is wrong with it."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipeline_core import keys
from pipeline_core.contracts import AudioJob, ContractError


@dataclass(frozen=True)
class Malformed:
    """A message that is not a valid audio job.

    ``source_key`` is the audio key when the message still names one safely: the job can
    then be failed with a result the user sees. Otherwise nobody can be told, and the
    message is left to reach the dead-letter queue.
    """

    reason: str
    source_key: str | None = None
    job_id: str | None = None


def read_audio_job(body: str) -> AudioJob | Malformed:
    try:
        return AudioJob.from_json(body)
    except ContractError as exc:
        return Malformed(str(exc), *_salvage(body))


def _salvage(body: str) -> tuple[str | None, str | None]:
    try:
        data = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    raw_key, raw_job_id = data.get("s3_key"), data.get("job_id")
    try:
        source_key = keys.audio_key(raw_key) if isinstance(raw_key, str) else None
    except keys.InvalidKeyError:
        source_key = None
    job_id = raw_job_id if isinstance(raw_job_id, str) and 0 < len(raw_job_id) <= 128 else None
    return source_key, job_id
