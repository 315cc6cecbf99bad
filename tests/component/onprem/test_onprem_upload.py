"""``onprem upload`` against moto S3: idempotence, metadata, refusals, interrupted transfers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.exceptions import ConnectionClosedError
from support.onprem_helpers import (
    BUCKET,
    REGION,
    all_keys,
    fast_client_config,
    versions,
)
from support.s3_answers import deny_reads_below

from onprem.cli import main
from onprem.state import UploadState, run_lock
from onprem.upload import MIB, Status, UploadOptions, run_upload
from pipeline_core.keys import AUDIO_SUFFIXES
from pipeline_core.metadata import decode_metadata

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def sidecar(audio: Path, **values: str) -> None:
    write(audio.with_name(audio.name + ".json"), json.dumps(values, ensure_ascii=False))


def upload(folder: Path, *extra: str) -> int:
    return main(["upload", str(folder), "--bucket", BUCKET, *extra])


def speakers_of(s3: S3Client, key: str) -> str | None:
    return decode_metadata(s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]).speakers


def metadata_of(s3: S3Client, key: str) -> tuple[str | None, str]:
    head = s3.head_object(Bucket=BUCKET, Key=key)
    decoded = decode_metadata(head["Metadata"])
    return decoded.language, decoded.details


def test_hebrew_names_and_details_arrive_intact_and_a_second_run_uploads_nothing(
    s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "lectures"
    audio = write(folder / "גמרא" / "שיעור א.mp3", b"ID3 first lecture")
    sidecar(audio, language="hebrew", details="בבא קמא ב. – רש״י")
    write(folder / "notes.txt", "not audio")

    assert upload(folder) == 0
    key = "audio-input/גמרא/שיעור א.mp3"
    assert all_keys(s3) == [key]
    assert metadata_of(s3, key) == ("he", "בבא קמא ב. – רש״י")
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"ID3 first lecture"
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    uploaded = [line for line in lines if line.get("status") == "uploaded"]
    assert [line["s3_key"] for line in uploaded] == [key]

    assert upload(folder) == 0
    assert len(versions(s3, key)) == 1, "the second run must not upload again"


def test_a_changed_file_is_uploaded_again(s3: S3Client, tmp_path: Path) -> None:
    audio = write(tmp_path / "in" / "lecture.mp3", b"version one")
    assert upload(tmp_path / "in", "--language", "english") == 0
    write(audio, b"version two, longer")
    assert upload(tmp_path / "in", "--language", "english") == 0
    key = "audio-input/lecture.mp3"
    assert len(versions(s3, key)) == 2
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b"version two, longer"
    # Same size, different bytes: the content hash, not the size, decides.
    write(audio, b"version TWO, longer")
    assert upload(tmp_path / "in", "--language", "english") == 0
    assert len(versions(s3, key)) == 3


def test_sidecar_beats_folder_defaults_beats_flags(s3: S3Client, tmp_path: Path) -> None:
    root = tmp_path / "in"
    write(root / "_defaults.json", json.dumps({"language": "english", "details": "root"}))
    write(root / "sub" / ".transcribe.json", json.dumps({"language": "french"}))
    write(root / "sub" / "deeper" / "a.mp3", b"a")  # inherits sub/ and root
    sidecar(write(root / "sub" / "b.mp3", b"b"), details="only details")
    sidecar(write(root / "c.mp3", b"c"), language="German", details="Sidecar")
    write(root / "d.mp3", b"d")
    flags_only = tmp_path / "flags"
    write(flags_only / "e.mp3", b"e")
    sidecar(write(flags_only / "f.mp3", b"f"), language="yiddish")

    assert upload(root, "--language", "hebrew", "--details", "flag") == 0
    assert upload(flags_only, "--language", "hebrew", "--details", "flag") == 0

    assert metadata_of(s3, "audio-input/sub/deeper/a.mp3") == ("fr", "root")
    assert metadata_of(s3, "audio-input/sub/b.mp3") == ("fr", "only details")
    assert metadata_of(s3, "audio-input/c.mp3") == ("de", "Sidecar")
    assert metadata_of(s3, "audio-input/d.mp3") == ("en", "root")
    assert metadata_of(s3, "audio-input/e.mp3") == ("he", "flag")
    assert metadata_of(s3, "audio-input/f.mp3") == ("yi", "flag")


def test_the_glossary_comes_from_sidecar_or_folder_and_an_unknown_one_is_refused_before_upload(
    s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "in"
    write(root / "_defaults.json", json.dumps({"language": "hebrew", "glossary": "talmud"}))
    write(root / "folder-default.mp3", b"a")
    sidecar(write(root / "own-choice.mp3", b"b"), glossary="none")
    sidecar(write(root / "typo.mp3", b"c"), glossary="talmus")
    write(tmp_path / "unsaid" / "d.mp3", b"d")

    assert upload(root) == 1  # the typo fails alone
    assert upload(tmp_path / "unsaid", "--language", "english") == 0
    glossaries = {
        key: decode_metadata(s3.head_object(Bucket=BUCKET, Key=key)["Metadata"]).glossary
        for key in all_keys(s3)
    }
    assert glossaries == {
        "audio-input/folder-default.mp3": "talmud",
        "audio-input/own-choice.mp3": "none",
        "audio-input/d.mp3": None,  # the Dispatcher decides: the details, else the default
    }
    [failed] = [
        line for line in map(json.loads, capsys.readouterr().err.splitlines())
        if line.get("status") == "failed"
    ]  # fmt: skip
    assert "typo.mp3.json: unknown glossary 'talmus'; known glossaries: talmud" in failed["error"]
    assert upload(tmp_path / "unsaid", "--glossary", "talmus") == 2  # a flag is checked at once


@pytest.mark.parametrize(("flags", "run_wide"), [((), None), (("--speakers", " 3 "), "3")])
def test_speakers_come_from_the_sidecar_or_folder_defaults_like_the_language(
    s3: S3Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: tuple[str, ...],
    run_wide: str | None,
) -> None:
    root = tmp_path / "in"
    write(root / "panel" / "_defaults.json", json.dumps({"speakers": "auto"}))
    write(root / "panel" / "a.mp3", b"a")
    write(root / "panel" / "b.mp3", b"b")
    write(root / "panel" / "b.mp3.json", json.dumps({"speakers": 2}))
    write(root / "c.mp3", b"c")
    write(root / "d.mp3", b"d")
    write(root / "d.mp3.json", json.dumps({"speakers": "a crowd"}))

    assert upload(root, "--language", "english", *flags) == 1

    assert speakers_of(s3, "audio-input/panel/a.mp3") == "auto"
    assert speakers_of(s3, "audio-input/panel/b.mp3") == "2"
    assert speakers_of(s3, "audio-input/c.mp3") == run_wide  # the flag: only where none says
    assert "audio-input/d.mp3" not in all_keys(s3)
    assert "speakers must be" in capsys.readouterr().err


def test_a_speakers_flag_that_is_not_a_request_stops_the_run_before_any_upload(
    s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "in" / "a.mp3", b"a")
    with pytest.raises(SystemExit) as exit_:
        upload(tmp_path / "in", "--language", "english", "--speakers", "a crowd")
    assert exit_.value.code == 2
    assert "speakers must be 'auto', 'off' or a number" in capsys.readouterr().err
    assert all_keys(s3) == []


def test_config_language_is_the_last_fallback(
    s3: S3Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path / "onprem.toml", f'bucket = "{BUCKET}"\nlanguage = "arabic"\n')
    write(tmp_path / "in" / "a.mp3", b"a")
    assert main(["upload", str(tmp_path / "in"), "--config", str(config)]) == 0
    assert metadata_of(s3, "audio-input/a.mp3") == ("ar", "")


def test_one_bad_file_fails_alone(
    s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "in"
    sidecar(write(root / "klingon.mp3", b"k"), language="klingon")
    write(root / "good.mp3", b"g")
    write(root / "nolang" / "x.mp3", b"x")
    write(root / "nolang" / "_defaults.json", json.dumps({"details": "but no language"}))
    write(root / "bad-json" / "y.mp3", b"y")
    write(root / "bad-json" / "y.mp3.json", "{not json")
    write(root / "typo" / "z.mp3", b"z")
    write(root / "typo" / "z.mp3.json", json.dumps({"langauge": "english"}))
    write(root / "bell\x07.mp3", b"control character")
    write(root / "back\\slash.mp3", b"backslash")
    write(root / "long.mp3", b"l")
    sidecar(root / "long.mp3", details="א" * 1900)

    code = main(["upload", str(root), "--bucket", BUCKET, "--language", "english"])
    assert code == 1
    assert all_keys(s3) == ["audio-input/good.mp3", "audio-input/nolang/x.mp3"]
    assert metadata_of(s3, "audio-input/nolang/x.mp3") == ("en", "but no language")
    errors = {
        Path(line["path"]).name: line["error"]
        for line in map(json.loads, capsys.readouterr().err.splitlines())
        if line.get("status") == "failed"
    }
    assert "unknown language 'klingon'" in errors["klingon.mp3"]
    assert "klingon.mp3.json" in errors["klingon.mp3"]
    assert "cannot be read as UTF-8 JSON" in errors["y.mp3"]
    assert "langauge" in errors["z.mp3"]
    assert "control characters" in errors["bell\x07.mp3"]
    assert "backslash" in errors["back\\slash.mp3"]
    assert "shorten 'details'" in errors["long.mp3"]


def test_a_recording_with_no_language_anywhere_is_refused(s3: S3Client, tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.mp3", b"a")
    assert upload(tmp_path / "in") == 1
    assert all_keys(s3) == []


def test_dry_run_uploads_and_records_nothing(
    s3: S3Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path / "in" / "a.mp3", b"a")
    state = tmp_path / "state.sqlite3"
    args = ["--language", "he", "--state-file", str(state)]
    assert upload(tmp_path / "in", "--dry-run", *args) == 0
    assert all_keys(s3) == []
    assert not state.exists()
    assert '"status": "would-upload"' in capsys.readouterr().err
    assert upload(tmp_path / "in", *args) == 0
    assert all_keys(s3) == ["audio-input/a.mp3"]


def test_default_patterns_cover_every_accepted_suffix_and_skip_hidden_files(
    s3: S3Client, tmp_path: Path
) -> None:
    root = tmp_path / "in"
    for suffix in AUDIO_SUFFIXES:
        write(root / f"x{suffix.upper()}", b"audio")
    write(root / ".partial.mp3.XyZ12", b"rsync temp")
    write(root / ".hidden.mp3", b"hidden")
    write(root / ".Trash" / "old.mp3", b"trash")
    write(root / "cover.jpg", b"jpeg")
    assert upload(root, "--language", "en") == 0
    assert all_keys(s3) == sorted(f"audio-input/x{s.upper()}" for s in AUDIO_SUFFIXES)


def test_glob_limits_what_is_scanned(s3: S3Client, tmp_path: Path) -> None:
    write(tmp_path / "in" / "2025" / "a.mp3", b"a")
    write(tmp_path / "in" / "2024" / "b.mp3", b"b")
    assert upload(tmp_path / "in", "--language", "en", "--glob", "2025/*.mp3") == 0
    assert all_keys(s3) == ["audio-input/2025/a.mp3"]


def test_files_still_being_copied_in_wait_for_the_next_run(s3: S3Client, tmp_path: Path) -> None:
    fresh = write(tmp_path / "in" / "fresh.mp3", b"f")
    old = write(tmp_path / "in" / "old.mp3", b"o")
    os.utime(old, (old.stat().st_atime - 600, old.stat().st_mtime - 600))
    assert upload(tmp_path / "in", "--language", "en", "--min-age", "60") == 0
    assert all_keys(s3) == ["audio-input/old.mp3"]
    os.utime(fresh, (fresh.stat().st_atime - 600, fresh.stat().st_mtime - 600))
    assert upload(tmp_path / "in", "--language", "en", "--min-age", "60") == 0
    assert all_keys(s3) == ["audio-input/fresh.mp3", "audio-input/old.mp3"]


def test_originals_are_kept_unless_deletion_is_asked_for(s3: S3Client, tmp_path: Path) -> None:
    kept = write(tmp_path / "in" / "kept.mp3", b"k")
    assert upload(tmp_path / "in", "--language", "en") == 0
    assert kept.exists()
    fresh = write(tmp_path / "in" / "fresh.mp3", b"f")
    assert upload(tmp_path / "in", "--language", "en", "--delete-after-upload") == 0
    # Both are verified in the bucket in this run, so both go; nothing is uploaded twice.
    assert not kept.exists()
    assert not fresh.exists()
    assert len(versions(s3, "audio-input/kept.mp3")) == 1
    assert len(versions(s3, "audio-input/fresh.mp3")) == 1


def test_a_lost_state_file_does_not_cause_a_second_upload(s3: S3Client, tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.mp3", b"a")
    assert upload(tmp_path / "in", "--language", "en", "--state-file", str(tmp_path / "1.db")) == 0
    assert upload(tmp_path / "in", "--language", "en", "--state-file", str(tmp_path / "2.db")) == 0
    assert len(versions(s3, "audio-input/a.mp3")) == 1


def test_an_overlapping_run_does_nothing(s3: S3Client, tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.mp3", b"a")
    state = tmp_path / "state.db"
    with run_lock(state):
        assert upload(tmp_path / "in", "--language", "en", "--state-file", str(state)) == 0
    assert all_keys(s3) == []


def test_usage_errors_exit_2(aws: None, tmp_path: Path) -> None:
    assert main(["upload", str(tmp_path), "--language", "en"]) == 2  # no bucket
    assert main(["upload", str(tmp_path / "missing"), "--bucket", BUCKET]) == 2
    assert main(["upload", "--bucket", BUCKET]) == 2  # no folder
    assert main(["upload", str(tmp_path), "--bucket", BUCKET, "--language", "klingon"]) == 2
    assert main(["upload", str(tmp_path), "--bucket", BUCKET, "--multipart-threshold-mb", "1"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["upload", "--no-such-flag"])
    assert exc.value.code == 2


# Multipart: a 12 MiB file in 5 MiB parts (S3's minimum part size).
BIG = 12 * MIB


def multipart_options(root: Path) -> UploadOptions:
    return UploadOptions(
        bucket=BUCKET,
        root=root,
        patterns=("*.mp3",),
        flag_language="hebrew",
        multipart_threshold=5 * MIB,
        multipart_chunksize=5 * MIB,
        max_concurrency=1,
    )


def hooked_client(fail: Any) -> S3Client:
    """A client whose UploadPart requests pass through ``fail`` before they are sent."""
    client: S3Client = boto3.client("s3", region_name=REGION, config=fast_client_config())
    client.meta.events.register("before-send.s3.UploadPart", fail)
    return client


def part_number(request: Any) -> int:
    query = request.url.split("?", 1)[1]
    return int(dict(p.split("=", 1) for p in query.split("&"))["partNumber"])


def test_network_errors_are_retried(s3: S3Client, tmp_path: Path) -> None:
    data = os.urandom(BIG)
    write(tmp_path / "in" / "big.mp3", data)
    failures = {"left": 2}

    def flaky(request: Any, **_: Any) -> None:
        if part_number(request) == 2 and failures["left"]:
            failures["left"] -= 1
            raise ConnectionClosedError(endpoint_url=request.url)

    with UploadState(tmp_path / "state.db") as state:
        report = run_upload(hooked_client(flaky), state, multipart_options(tmp_path / "in"))
    assert [o.status for o in report.outcomes] == [Status.UPLOADED]
    assert failures["left"] == 0
    assert s3.get_object(Bucket=BUCKET, Key="audio-input/big.mp3")["Body"].read() == data


def test_an_interrupted_multipart_upload_leaves_nothing_and_the_next_run_completes(
    s3: S3Client, tmp_path: Path
) -> None:
    data = os.urandom(BIG)
    write(tmp_path / "in" / "big.mp3", data)

    def broken(request: Any, **_: Any) -> None:
        if part_number(request) == 2:
            raise ConnectionClosedError(endpoint_url=request.url)

    with UploadState(tmp_path / "state.db") as state:
        report = run_upload(hooked_client(broken), state, multipart_options(tmp_path / "in"))
    assert report.exit_code == 1
    assert report.outcomes[0].status is Status.FAILED
    assert all_keys(s3) == [], "no half object"
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []

    with UploadState(tmp_path / "state.db") as state:
        report = run_upload(s3, state, multipart_options(tmp_path / "in"))
    assert report.exit_code == 0
    assert s3.get_object(Bucket=BUCKET, Key="audio-input/big.mp3")["Body"].read() == data
    assert len(versions(s3, "audio-input/big.mp3")) == 1


def test_a_multipart_upload_left_by_a_killed_run_is_aborted_and_restarted(
    s3: S3Client, tmp_path: Path
) -> None:
    data = os.urandom(BIG)
    write(tmp_path / "in" / "big.mp3", data)
    key = "audio-input/big.mp3"
    # What a run killed with SIGKILL mid-transfer leaves: an open upload with one part.
    stale = s3.create_multipart_upload(Bucket=BUCKET, Key=key, ChecksumAlgorithm="SHA256")
    s3.upload_part(
        Bucket=BUCKET, Key=key, UploadId=stale["UploadId"], PartNumber=1, Body=data[: 5 * MIB]
    )

    with UploadState(tmp_path / "state.db") as state:
        report = run_upload(s3, state, multipart_options(tmp_path / "in"))
    assert report.exit_code == 0
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == data
    assert metadata_of(s3, key) == ("he", "")


def test_names_that_normalise_to_one_key_are_not_both_uploaded(
    s3: S3Client, tmp_path: Path
) -> None:
    composed, decomposed = "caf\u00e9.mp3", "cafe\u0301.mp3"
    write(tmp_path / "in" / composed, b"composed")
    write(tmp_path / "in" / decomposed, b"decomposed")
    assert upload(tmp_path / "in", "--language", "fr") == 1
    assert all_keys(s3) == [f"audio-input/{composed}"]
    assert len(versions(s3, f"audio-input/{composed}")) == 1


def test_an_unusable_state_file_is_a_configuration_error(s3: S3Client, tmp_path: Path) -> None:
    write(tmp_path / "in" / "a.mp3", b"a")
    state = write(tmp_path / "state.db", b"this is not an SQLite database, just text" * 10)
    assert upload(tmp_path / "in", "--language", "en", "--state-file", str(state)) == 2
    assert all_keys(s3) == []


def test_a_denied_head_stops_the_run_naming_the_missing_grant(s3: S3Client, tmp_path: Path) -> None:
    """Without s3:ListBucket S3 answers the HEAD before each upload of a new file with 403
    (stubbed: moto answers 404); that is the policy's fault, not the files': the run stops
    at the first denial, naming the grant, instead of failing every file."""
    for name in ("a.mp3", "b.mp3"):
        write(tmp_path / "in" / name, b"audio")
    client: S3Client = boto3.client("s3", region_name=REGION, config=fast_client_config())
    denied = deny_reads_below(client, "audio-input/")
    options = UploadOptions(
        bucket=BUCKET, root=tmp_path / "in", patterns=("*.mp3",), flag_language="hebrew"
    )
    with UploadState(tmp_path / "state.db") as state:
        report = run_upload(client, state, options)
    assert denied == ["audio-input/a.mp3"]  # b.mp3 is not tried
    assert report.outcomes == []  # no file is blamed
    assert report.fatal is not None
    assert "AccessDenied on HeadObject" in report.fatal
    assert "the on-prem client's policy needs" in report.fatal
    assert "s3:ListBucket" in report.fatal
    assert report.exit_code == 1
    assert all_keys(s3) == []
