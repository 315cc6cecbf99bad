"""Work the in-process emulator repeats for every test, done once per test process.

Most component tests create the template's stack in a fresh ``mock_aws``; profiled, most of
that time was spent redoing the same work: botocore parsing its service models again for each
new default session, moto filling the region with its AMI catalogue, parsing the same template
YAML with the pure-Python loader, and making a 2048-bit RSA key for every KMS key (symmetric
ones too). What a test observes does not change: the emulated account gets its own AMI
(``cloudformation.emulated.emulator_parameters``), each stack gets its own copy of the parsed
template, and moto's symmetric KMS operations do not use the RSA key.
"""

from __future__ import annotations

import copy
import functools
import os
from types import SimpleNamespace
from typing import Any

import botocore.loaders
import botocore.session
import moto.kms.utils
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.cloudformation.models import Stack


def install() -> None:
    """Share what can be shared; the moto servers the tests start inherit the AMI setting."""
    # One session already shares its loader (and what it parsed) between all its clients.
    botocore.session.create_loader = functools.cache(botocore.loaders.create_loader)
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")

    parse_template = Stack.parse_template

    @functools.cache
    def parsed_once(template: str) -> dict[str, Any]:
        parsed: dict[str, Any] = parse_template(template)
        return parsed

    def parse_a_copy(template: str) -> dict[str, Any]:
        return copy.deepcopy(parsed_once(template))

    Stack.parse_template = staticmethod(parse_a_copy)  # type: ignore[method-assign]
    cached_rsa = {name: getattr(rsa, name) for name in dir(rsa) if not name.startswith("__")}
    cached_rsa["generate_private_key"] = functools.cache(rsa.generate_private_key)
    moto.kms.utils.rsa = SimpleNamespace(**cached_rsa)  # type: ignore[assignment,attr-defined]
