"""The objects an S3 event notification announces, with their keys decoded.

S3 event notifications carry keys URL-encoded (``+`` for a space, ``%2B`` for a plus,
``%D7%A9`` for a Hebrew letter). Chalice's ``S3Event.key`` decodes only the first record's
key; every record is read here, each decoded by ``pipeline_core.keys.decode_event_key``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline_core.keys import decode_event_key


@dataclass(frozen=True)
class CreatedObject:
    bucket: str
    key: str  # decoded; for a key that does not decode, the raw key (refused later)
    etag: str | None
    version_id: str | None
    size: int | None
    sequencer: str | None = None
    key_error: str | None = None  # why the raw key could not be decoded


def _clean_etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def created_objects(event: Mapping[str, Any]) -> Iterator[CreatedObject]:
    """Every ``ObjectCreated`` record of an S3 event (other records are not ours)."""
    for record in event.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record["s3"]
        obj = s3["object"]
        raw_key = obj["key"]
        try:
            key, key_error = decode_event_key(raw_key), None
        except UnicodeDecodeError as exc:
            key = raw_key
            key_error = f"the event's key {raw_key!r} is not URL-encoded UTF-8 ({exc})"
        size = obj.get("size")
        yield CreatedObject(
            bucket=s3["bucket"]["name"],
            key=key,
            etag=_clean_etag(obj.get("eTag") or obj.get("etag")),
            version_id=obj.get("versionId") or None,
            size=int(size) if size is not None else None,
            sequencer=obj.get("sequencer"),
            key_error=key_error,
        )
