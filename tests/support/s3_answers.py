"""S3 answers that moto cannot give, stubbed into a boto3 client with a botocore
``before-call`` hook (the request is never sent), so that the code's handling of them can
be tested.

- ``deny_reads_below``: real S3 answers GetObject/HeadObject of a missing key with 403 to a
  caller without ``s3:ListBucket``; moto answers 404 whatever the caller's grants.
- ``conflict_once``: real S3 answers a conditional PutObject with 409
  ConditionalRequestConflict when another conditional write of the key is in progress at
  the same moment; moto serialises the two and answers 412 or 200.
"""

from __future__ import annotations

from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders

# HeadObject has no body to name the error in: botocore reports the status as the code.
_DENIAL_CODES = {"HeadObject": "403", "GetObject": "AccessDenied"}


def deny_reads_below(client: Any, prefix: str) -> list[str]:
    """Make ``client``'s reads of keys below ``prefix`` answer 403; returns the keys denied."""
    denied: list[str] = []

    def answer_403(context: dict[str, Any], model: Any, **_: Any) -> Any:
        key = str(context.get("input_params", {}).get("Key", ""))
        if not key.startswith(prefix):
            return None
        denied.append(key)
        code = _DENIAL_CODES[model.name]
        response = AWSResponse(url="", status_code=403, headers=HTTPHeaders(), raw=None)
        parsed = {
            "Error": {"Code": code, "Message": "Forbidden" if code == "403" else "Access Denied"},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        }
        return response, parsed

    for operation in _DENIAL_CODES:
        client.meta.events.register(f"before-call.s3.{operation}", answer_403)
    return denied


def conflict_once(client: Any, key: str) -> list[str]:
    """Make ``client``'s first conditional PutObject of ``key`` answer 409
    ConditionalRequestConflict; returns the keys so answered."""
    conflicted: list[str] = []

    def answer_409(params: dict[str, Any], context: dict[str, Any], **_: Any) -> Any:
        headers = params.get("headers", {})
        conditional = "If-None-Match" in headers or "If-Match" in headers
        if context.get("input_params", {}).get("Key") != key or not conditional or conflicted:
            return None
        conflicted.append(key)
        response = AWSResponse(url="", status_code=409, headers=HTTPHeaders(), raw=None)
        message = "A conflicting operation occurred. If using PutObject you can retry the request."
        parsed = {
            "Error": {"Code": "ConditionalRequestConflict", "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 409},
        }
        return response, parsed

    client.meta.events.register("before-call.s3.PutObject", answer_409)
    return conflicted
