"""The EC2 instance metadata service, version 2 (a session token on every request).

Hand-written on the standard library: the worker needs three reads (instance id, Spot
interruption notice, rebalance recommendation) and botocore's fetchers are private API
built for credentials; the ``ec2-metadata`` package hard-codes the endpoint, which the
tests must point at a local imitation.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Final

logger = logging.getLogger(__name__)

TOKEN_PATH: Final = "/latest/api/token"
INSTANCE_ID_PATH: Final = "/latest/meta-data/instance-id"
SPOT_ACTION_PATH: Final = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH: Final = "/latest/meta-data/events/recommendations/rebalance"
TOKEN_TTL_SECONDS: Final = 21600


class ImdsError(RuntimeError):
    """The metadata service did not answer as expected."""


@dataclass(frozen=True)
class SpotNotice:
    action: str  # terminate, stop or hibernate
    at: float  # epoch seconds when EC2 takes the instance


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class ImdsClient:
    def __init__(self, endpoint: str, timeout_seconds: float = 2.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.timeout = timeout_seconds
        self._token: str | None = None
        self._token_expires = 0.0
        self._lock = threading.Lock()

    def _request(self, method: str, path: str, headers: dict[str, str]) -> str | None:
        request = urllib.request.Request(
            self.endpoint + path,
            method=method,
            headers=headers,
            data=b"" if method == "PUT" else None,
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return str(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            if exc.code == 401:
                raise _UnauthorizedError from None
            raise ImdsError(f"{method} {path}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ImdsError(f"{method} {path}: {exc}") from None

    def _session_token(self, renew: bool = False) -> str:
        with self._lock:
            if renew or self._token is None or time.monotonic() >= self._token_expires:
                token = self._request(
                    "PUT",
                    TOKEN_PATH,
                    {"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
                )
                if not token:
                    raise ImdsError("the metadata service gave no session token")
                self._token = token
                self._token_expires = time.monotonic() + TOKEN_TTL_SECONDS - 60
            return self._token

    def get(self, path: str) -> str | None:
        """The text at ``path``, or None where the service answers 404 (nothing there)."""
        try:
            return self._request("GET", path, {"X-aws-ec2-metadata-token": self._session_token()})
        except _UnauthorizedError:  # the token expired early (e.g. the service restarted)
            token = self._session_token(renew=True)
            try:
                return self._request("GET", path, {"X-aws-ec2-metadata-token": token})
            except _UnauthorizedError:
                raise ImdsError(f"GET {path}: the metadata service refused a fresh token") from None

    def instance_id(self) -> str:
        value = self.get(INSTANCE_ID_PATH)
        if not value:
            raise ImdsError("the metadata service has no instance id")
        return value.strip()

    def spot_notice(self) -> SpotNotice | None:
        """The Spot interruption notice (two minutes ahead), if EC2 has given one."""
        body = self.get(SPOT_ACTION_PATH)
        if body is None:
            return None
        try:
            data = json.loads(body)
            return SpotNotice(action=str(data["action"]), at=_epoch(str(data["time"])))
        except (ValueError, KeyError, TypeError) as exc:
            raise ImdsError(f"unreadable Spot notice {body!r}: {exc}") from None

    def rebalance_recommended(self) -> bool:
        """True once EC2 recommends leaving this Spot instance (elevated interruption risk)."""
        return self.get(REBALANCE_PATH) is not None


class _UnauthorizedError(Exception):
    pass
