"""On-prem settings: config file < environment < flags, and errors that say where to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from onprem.cli import main
from onprem.settings import DEFAULT_PATTERNS, load_settings, parse_formats
from pipeline_core.config import ConfigError
from pipeline_core.keys import OutputFormat

TOML = """
bucket = "from-file"
results_queue_url = "https://sqs.example/file"
output_dir = "~/transcripts"
patterns = ["*.mp3"]
min_age_seconds = 5
poll_wait_seconds = 3
"""


def config(tmp_path: Path, text: str = TOML) -> Path:
    path = tmp_path / "onprem.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    path = config(tmp_path)
    from_file = load_settings(path, environ={})
    assert from_file.bucket == "from-file"
    assert from_file.output_dir == Path("~/transcripts").expanduser()
    assert from_file.patterns == ("*.mp3",)
    assert from_file.min_age_seconds == 5
    assert from_file.config_path == path

    env = {"PIPELINE_BUCKET": "from-env", "ONPREM_PATTERNS": "*.wav, *.flac"}
    from_env = load_settings(path, environ=env)
    assert from_env.bucket == "from-env"
    assert from_env.patterns == ("*.wav", "*.flac")
    assert from_env.results_queue_url == "https://sqs.example/file"

    flagged = load_settings(path, environ=env, overrides={"bucket": "from-flag", "region": None})
    assert flagged.bucket == "from-flag"


def test_defaults_without_any_file(tmp_path: Path) -> None:
    settings = load_settings(environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert settings.config_path is None
    assert settings.patterns == DEFAULT_PATTERNS
    assert settings.bucket is None
    with pytest.raises(ConfigError, match="PIPELINE_BUCKET") as error:
        settings.need("bucket")
    assert "--bucket" in str(error.value)


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = config(tmp_path)
    assert load_settings(environ={"ONPREM_CONFIG": str(path)}).bucket == "from-file"
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"ONPREM_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('bucket = "b"\nbuckit = "typo"\n', "unknown setting 'buckit'"),
        ("poll_wait_seconds = 'soon'\n", "'poll_wait_seconds' must be a number"),
        ("max_concurrency = 1.5\n", "must be an integer"),
        ("multipart_chunksize_mb = 1\n", "at least 5"),
        ("patterns = '*.mp3'\n", "list of glob patterns"),
        ("bucket = \n", "not valid TOML"),
        ('log_level = "chatty"\n', "log level 'chatty'"),
    ],
)
def test_bad_files_are_named_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(config(tmp_path, text), environ={})


def test_bad_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ONPREM_MAX_CONCURRENCY"):
        load_settings(environ={"XDG_CONFIG_HOME": str(tmp_path), "ONPREM_MAX_CONCURRENCY": "x"})


def test_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = config(tmp_path, "buckit = 1\n")
    assert main(["status", "--config", str(bad)]) == 2
    assert "unknown setting 'buckit'" in capsys.readouterr().err
    assert main(["--config", str(tmp_path / "nope.toml"), "status"]) == 2


def test_formats_from_file_environment_and_flag(tmp_path: Path) -> None:
    txt, srt, docx = OutputFormat.TXT, OutputFormat.SRT, OutputFormat.DOCX
    default = load_settings(environ={"XDG_CONFIG_HOME": str(tmp_path)}).formats
    assert default == (txt, srt, OutputFormat.HTML)
    path = config(tmp_path, 'formats = ["docx", "TXT", ".docx"]\n')
    assert load_settings(path, environ={}).formats == (docx, txt)
    from_env = load_settings(path, environ={"ONPREM_FORMATS": "srt, vtt"})
    assert from_env.formats == (srt, OutputFormat.VTT)
    assert parse_formats("timed,json") == (OutputFormat.TIMED, OutputFormat.JSON)


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ('formats = ["txt", "pdf"]\n', {}, "'formats': unknown format 'pdf'; the formats are txt"),
        ('formats = "txt"\n', {}, "list of formats"),
        ("formats = []\n", {}, "no format"),
        ("", {"ONPREM_FORMATS": "srt,doc"}, "ONPREM_FORMATS: unknown format 'doc'"),
    ],
)
def test_unknown_formats_are_named_with_the_known_ones(
    tmp_path: Path, text: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(config(tmp_path, text), environ=environ)


def test_an_unknown_format_flag_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["poll", "--formats", "txt,mp4", "--queue-url", "q", "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "unknown format 'mp4'" in capsys.readouterr().err
