from __future__ import annotations

import boto3
import pytest

from pipeline_core.metadata import MetadataError, decode_metadata, encode_metadata


def test_hebrew_details_round_trip_through_real_s3_headers(aws: None) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="recordings")
    details = "בבא קמא ב. — 100% «quoted» & more"
    s3.put_object(
        Bucket="recordings", Key="k", Body=b"x", Metadata=encode_metadata("hebrew", details)
    )
    read = decode_metadata(s3.head_object(Bucket="recordings", Key="k")["Metadata"])
    assert read.language == "hebrew"
    assert read.details == details


def test_plain_metadata_from_other_tools_is_read_as_is() -> None:
    read = decode_metadata({"Language": "english", "details": "50%20off"})
    assert read.language == "english"
    assert read.details == "50%20off"


def test_missing_metadata_is_none_and_empty() -> None:
    read = decode_metadata({})
    assert read.language is None
    assert read.details == ""


def test_metadata_over_s3_limit_is_refused() -> None:
    with pytest.raises(MetadataError, match="2048"):
        encode_metadata("he", "א" * 400)


def test_bad_percent_encoding_is_an_error() -> None:
    with pytest.raises(MetadataError, match="details"):
        decode_metadata({"meta-encoding": "percent-utf8", "details": "%FF%FE"})
