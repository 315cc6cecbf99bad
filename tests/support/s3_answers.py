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


def _error_answer(status: int, code: str, message: str) -> tuple[AWSResponse, dict[str, Any]]:
    """What a ``before-call`` hook returns in place of sending: S3's error, as parsed."""
    response = AWSResponse(url="", status_code=status, headers=HTTPHeaders(), raw=None)
    parsed = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return response, parsed


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
        return _error_answer(403, code, "Forbidden" if code == "403" else "Access Denied")

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
        message = "A conflicting operation occurred. If using PutObject you can retry the request."
        return _error_answer(409, "ConditionalRequestConflict", message)

    client.meta.events.register("before-call.s3.PutObject", answer_409)
    return conflicted
