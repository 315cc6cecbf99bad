"""S3's 403 for a read the caller may not make, where moto cannot give it.

Real S3 answers GetObject/HeadObject of a missing key with 403 to a caller without
``s3:ListBucket``; moto answers 404 whatever the caller's grants. ``deny_reads_below``
stubs that answer into a boto3 client with a botocore ``before-call`` hook (the request is
never sent), so that the code's handling of the 403 can be tested.
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
