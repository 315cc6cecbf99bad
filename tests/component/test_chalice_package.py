"""The Lambda bundle as `chalice package` builds it: our code and pydantic, nothing heavy.

Needs PyPI (chalice downloads the Lambda platform's pydantic-core wheel) on a first run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.repo_paths import repo_root

HEAVY = ("torch", "transformers", "ctranslate2", "faster_whisper", "librosa", "numpy", "boto3")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_package_holds_the_app_and_the_shared_core_only(tmp_path: Path) -> None:
    out = tmp_path / "package"
    # What scripts/deploy.sh does first: chalice copies vendor/ (a link to pipeline_core) as
    # it is, and this suite has just compiled pipeline_core there.
    for cache in (Path(repo_root()) / "pipeline_core").rglob("__pycache__"):
        shutil.rmtree(cache)
    chalice = Path(sys.executable).with_name("chalice")
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run(
        [str(chalice), "package", "--pkg-format", "terraform", "--stage", "dev", str(out)],
        cwd=Path(repo_root()) / "chalice_app",
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    bundle = out / "deployment.zip"
    names = set(zipfile.ZipFile(bundle).namelist())
    print(f"deployment.zip: {bundle.stat().st_size / 1e6:.2f} MB, {len(names)} files")
    for needed in (
        "app.py",
        "chalicelib/dispatch/dispatcher.py",
        "chalicelib/correction/llm_caller.py",
        "pipeline_core/contracts.py",
        "pipeline_core/jobs.py",
        "pydantic/__init__.py",
    ):
        assert needed in names, needed
    tops = {name.split("/", 1)[0] for name in names}
    assert not [top for top in tops if top.startswith(HEAVY)], sorted(tops)
    assert not any(name.endswith(".pyc") for name in names)
    assert "stage_config.py" not in names  # a deploy-time tool, not Lambda code

    resources = json.loads((out / "chalice.tf.json").read_text())["resource"]
    [mapping] = resources["aws_lambda_event_source_mapping"].values()
    assert mapping["batch_size"] == 1
    assert mapping["scaling_config"] == {"maximum_concurrency": 3}
    assert resources["aws_lambda_function"]["llm_caller"]["reserved_concurrent_executions"] == 3
    # The reconciler on its schedule (app.py), with its own function and timeout.
    [rule] = resources["aws_cloudwatch_event_rule"].values()
    assert rule["schedule_expression"] == "rate(15 minutes)"
    assert resources["aws_lambda_function"]["reconciler"]["timeout"] == 300
    [notification] = resources["aws_s3_bucket_notification"].values()
    [target] = notification["lambda_function"]
    assert target["filter_prefix"] == "audio-input/"
    assert target["events"] == ["s3:ObjectCreated:*"]
