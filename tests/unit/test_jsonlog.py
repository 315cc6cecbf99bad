from __future__ import annotations

import io
import json
import logging

from pipeline_core.jsonlog import configure_logging, log_context


def test_every_line_is_json_with_the_job_key() -> None:
    stream = io.StringIO()
    configure_logging("INFO", service="test", stream=stream)
    log = logging.getLogger("pipeline.test")
    with log_context(s3_key="audio-input/שיעור.mp3", job_id="j1"):
        log.info("downloaded", extra={"bytes": 42})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("failed")
    log.info("outside")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["downloaded", "failed", "outside"]
    assert lines[0]["s3_key"] == "audio-input/שיעור.mp3"
    assert lines[0]["bytes"] == 42
    assert lines[0]["service"] == "test"
    assert lines[1]["job_id"] == "j1"
    assert "RuntimeError: boom" in lines[1]["exception"]
    assert "s3_key" not in lines[2]
