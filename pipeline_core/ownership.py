"""Whose recording an output object belongs to, as the writers record it on the object.

Every object the worker and the LLM Caller write under a recording's output name carries,
as S3 user metadata, the job id and the source key (percent-encoded: S3 metadata is ASCII).
A writer reads an object already at its key before replacing it: an object of the same job
(a redelivery) or of an older upload of the same source (a newer upload of the same file)
may be replaced; anything else belongs to another recording, and the job fails with a reason
rather than overwrite it. An object of a *newer* upload of the same source is never replaced
by an older one's outputs, however the two jobs interleave on several workers: the older job
ends ``superseded`` (``SupersededError``). Reserved output names (``pipeline_core.keys``)
keep other recordings apart; this check catches what they cannot (objects written before
names were reserved, a message sent by hand without its name). The LLM Caller also reads
the job id on the transcript it corrects, and on the worker's JSON it takes the word timings
from, so that it never delivers another recording's text or timings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, unquote

from pipeline_core.errors import PermanentError

JOB_ID: Final = "job-id"
SOURCE_KEY: Final = "source-key"
# On the worker's timed transcript: the S3 version of the JSON it wrote just before, so that
# the LLM Caller reads that JSON's word timings even if a newer upload replaced the object.
JSON_VERSION_ID: Final = "json-version-id"


def owner_metadata(job_id: str | None, source_key: str | None) -> dict[str, str]:
    """The ``Metadata=`` entries that name the object's recording (what is known of it)."""
    metadata = {}
    if job_id:
        metadata[JOB_ID] = job_id
    if source_key:
        metadata[SOURCE_KEY] = quote(source_key, safe="/")
    return metadata


def json_version_metadata(json_version_id: str | None) -> dict[str, str]:
    """The timed transcript's ``Metadata=`` entry naming its JSON's version (none in a
    bucket without versioning)."""
    return {JSON_VERSION_ID: json_version_id} if json_version_id else {}


def json_version_of(metadata: Mapping[str, str]) -> str | None:
    """The JSON version a timed transcript's metadata names, if any."""
    return {key.lower(): value for key, value in metadata.items()}.get(JSON_VERSION_ID) or None


@dataclass(frozen=True)
class Owner:
    """The recording an existing object names in its metadata (either may be unknown)."""

    job_id: str | None
    source_key: str | None

    @classmethod
    def of(cls, metadata: Mapping[str, str]) -> Owner:
        """From ``head_object(...)["Metadata"]`` or ``get_object(...)["Metadata"]``."""
        lowered = {key.lower(): value for key, value in metadata.items()}
        try:
            source = unquote(lowered.get(SOURCE_KEY) or "", errors="strict") or None
        except UnicodeDecodeError:
            source = None
        return cls(job_id=lowered.get(JOB_ID) or None, source_key=source)

    def may_be_replaced_by(self, job_id: str, source_key: str) -> bool:
        """True for an object of this job, or of an earlier upload of the same source."""
        return self.job_id == job_id or self.source_key == source_key

    def describe(self) -> str:
        """For a reason the user reads: which recording holds the object."""
        who = self.source_key or "an unknown recording"
        return f"{who} (job {self.job_id})" if self.job_id else who


class OutputTakenError(PermanentError):
    """An output key holds another recording's object; the job is failed, never written."""

    def __init__(self, key: str, owner: Owner, source_key: str) -> None:
        self.key = key
        self.owner = owner
        super().__init__(
            f"{key} already holds the output of {owner.describe()}; {source_key} was not "
            "written over it (rename the file and upload it again)"
        )


class SupersededError(PermanentError):
    """A newer upload of the same source holds the output name; this older job's outputs
    would replace the newer ones, so it writes nothing and ends ``superseded``."""

    def __init__(self, source_key: str, key: str, newer: Owner) -> None:
        self.key = key
        self.newer = newer
        newer_job = f" (job {newer.job_id})" if newer.job_id else ""
        super().__init__(
            f"superseded: {source_key} was uploaded again{newer_job} while this upload was "
            f"being processed; {key} and the other outputs are the newer upload's, and its "
            "own Result delivers them"
        )
