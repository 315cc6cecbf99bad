"""The on-prem client's fixtures (one home: ``support/onprem_fixtures.py``) for this folder."""

from support.onprem_fixtures import (  # noqa: F401  (pytest finds fixtures by name)
    _isolated_settings,
    _restore_logging,
    results_queue,
    s3,
    sqs,
)
