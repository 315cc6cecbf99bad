from __future__ import annotations

import itertools
from pathlib import PurePosixPath
from urllib.parse import quote_plus

import pytest

from pipeline_core import keys
from pipeline_core.ownership import Owner, owner_metadata


@pytest.mark.parametrize(
    "name",
    ["recording-001.mp3", "my lecture.mp3", "שיעור א׳ בבא קמא.mp3", "a+b%20c.mp3", "dir/sub/x.MP3"],
)
def test_event_keys_round_trip(name: str) -> None:
    key = keys.AUDIO_PREFIX + name
    assert keys.decode_event_key(quote_plus(key, safe="/")) == key
    assert keys.audio_key(name) == key
    assert keys.audio_key(key) == key


def test_plus_in_event_key_is_a_space() -> None:
    assert keys.decode_event_key("audio-input/my+lecture.mp3") == "audio-input/my lecture.mp3"
    assert keys.decode_event_key("audio-input/a%2Bb.mp3") == "audio-input/a+b.mp3"


def test_derived_names_keep_folders_and_unicode() -> None:
    audio = "audio-input/2025/שיעור 1.mp3"
    assert keys.stem(audio) == "2025/שיעור 1"
    derived = keys.transcript_keys(keys.stem(audio))
    assert derived.timed == "transcriptions/2025/שיעור 1.timed.txt"
    assert derived.json == "transcriptions/2025/שיעור 1.json"
    assert derived.srt.endswith(".srt")
    assert derived.vtt.endswith(".vtt")
    assert keys.stem_from_timed_key(derived.timed) == "2025/שיעור 1"
    final = keys.final_keys("2025/שיעור 1")
    assert final.text == "final-output/2025/שיעור 1.txt"
    assert final.timed == "final-output/2025/שיעור 1.timed.txt"


def test_stem_of_names_without_extension() -> None:
    assert keys.stem("audio-input/noext") == "noext"
    assert keys.stem("audio-input/.hidden") == ".hidden"


@pytest.mark.parametrize(
    "bad",
    ["", "../x.mp3", "a/../../x.mp3", "/abs.mp3", "a\x00.mp3", "a\nb.mp3", "x" * 1100, "dir/"],
)
def test_unsafe_keys_are_refused(bad: str) -> None:
    with pytest.raises(keys.InvalidKeyError):
        keys.audio_key(bad)


def test_s3_uris() -> None:
    uri = keys.s3_uri("my-bucket", "final-output/a b.txt")
    assert uri == "s3://my-bucket/final-output/a b.txt"
    assert keys.parse_s3_uri(uri) == ("my-bucket", "final-output/a b.txt")
    for bad in ("http://x/y", "s3://bucket-only", "s3:///key"):
        with pytest.raises(keys.InvalidKeyError):
            keys.parse_s3_uri(bad)


def test_local_paths_never_escape_the_folder() -> None:
    path = keys.local_relative_path("final-output/2025/שיעור.txt", keys.FINAL_PREFIX)
    assert str(path) == "2025/שיעור.txt"
    for bad in (
        "final-output/../../etc/passwd",
        "final-output//etc/passwd",
        "final-output/a\\..\\b",
        "other/x.txt",
        "final-output/",
    ):
        with pytest.raises(keys.InvalidKeyError):
            keys.local_relative_path(bad, keys.FINAL_PREFIX)


def test_audio_suffixes() -> None:
    assert keys.has_audio_suffix("audio-input/a.MP3")
    assert not keys.has_audio_suffix("audio-input/a.txt")


def test_long_names_are_shortened_for_the_local_folder_and_stay_apart() -> None:
    long_a = "ש" * 300 + "-a"
    long_b = "ש" * 300 + "-b"
    a = keys.local_relative_path(f"final-output/{'x' * 300}/{long_a}.timed.txt", keys.FINAL_PREFIX)
    b = keys.local_relative_path(f"final-output/{'x' * 300}/{long_b}.timed.txt", keys.FINAL_PREFIX)
    assert a != b
    assert all(len(part.encode()) <= keys.MAX_LOCAL_NAME_BYTES for part in a.parts)
    assert a.name.endswith(".timed.txt")
    assert a.parent == b.parent  # the same folder, shortened the same way
    text = keys.local_relative_path(f"final-output/{long_a}.txt", keys.FINAL_PREFIX)
    assert text.name.split("~")[1].removesuffix(".txt") == a.name.split("~")[1].removesuffix(
        ".timed.txt"
    )  # the two outputs of one recording share their shortened name
    assert (
        keys.local_relative_path("final-output/a/b.txt", keys.FINAL_PREFIX).as_posix() == "a/b.txt"
    )


def first(source_key: str, count: int) -> list[str]:
    return list(itertools.islice(keys.output_name_candidates(source_key), count))


def test_output_name_candidates_start_with_the_design_example() -> None:
    assert first("audio-input/recording-001.mp3", 1) == ["recording-001"]
    assert first("recording-001.mp3", 1) == ["recording-001"]  # relative keys too
    assert first("audio-input/lecture.wav", 4) == [
        "lecture", "lecture (wav)", "lecture (wav 2)", "lecture (wav 3)",
    ]  # fmt: skip
    assert first("audio-input/2025/Lecture.MP3", 2) == ["2025/Lecture", "2025/Lecture (MP3)"]
    assert first("audio-input/noext", 2) == ["noext (1)", "noext (2)"]


def test_an_upload_that_is_not_audio_never_asks_for_the_plain_name() -> None:
    assert first("audio-input/notes.txt", 2) == ["notes (txt)", "notes (txt 2)"]


def test_no_name_makes_a_text_file_that_is_another_names_timed_file() -> None:
    # "lecture.Timed"'s text would be final-output/lecture.Timed.txt: lecture's timed file.
    assert first("audio-input/lecture.Timed.mp3", 1) == ["lecture.Timed (mp3)"]
    assert keys.final_keys("lecture.Timed (mp3)").text != keys.final_keys("lecture").timed


def test_output_name_candidates_end_in_a_name_of_the_key_alone() -> None:
    a = list(keys.output_name_candidates("audio-input/a.mp3"))
    b = list(keys.output_name_candidates("audio-input/A.mp3"))
    assert len(a) == keys.MAX_NUMBERED_NAMES + 2
    assert keys.folded_name(a[-1]) != keys.folded_name(b[-1])
    assert len({keys.folded_name(name) for name in a}) == len(a)  # never the same name twice


@pytest.mark.parametrize(
    ("one", "other"),
    [("Lecture", "lecture"), ("LECTURE (MP3)", "lecture (mp3)"), ("Straße", "STRASSE"),
     ("e\u0301te", "\u00e9te"), ("שיעור", "שיעור")],
)  # fmt: skip
def test_names_that_one_case_insensitive_folder_holds_as_one_fold_alike(
    one: str, other: str
) -> None:
    assert keys.folded_name(one) == keys.folded_name(other)


def test_names_that_differ_on_every_file_system_fold_apart() -> None:
    assert keys.folded_name("lecture") != keys.folded_name("lecture (wav)")
    assert keys.folded_name("a/lecture") != keys.folded_name("b/lecture")


def test_failure_reports_are_named_after_the_output_name() -> None:
    assert keys.failure_report_relative_path("lecture (wav)") == PurePosixPath("lecture (wav).json")
    assert keys.failure_report_relative_path("2025/x").as_posix() == "2025/x.json"
    for bad in ("../x", "/x", "a/../../x", "x\\..\\y", ""):
        with pytest.raises(keys.InvalidKeyError):
            keys.failure_report_relative_path(bad)


def test_an_output_name_must_make_safe_keys() -> None:
    assert keys.check_output_name("lecture (wav)") == "lecture (wav)"
    for bad in ("", "../x", "a//b", "dir/", "x" * 1010):
        with pytest.raises(keys.InvalidKeyError):
            keys.check_output_name(bad)


def test_owner_metadata_round_trips_through_ascii_headers() -> None:
    source = "audio-input/2025/שיעור א (wav).wav"
    metadata = owner_metadata("job-1", source)
    assert all(value.isascii() for value in metadata.values())
    owner = Owner.of({key.title(): value for key, value in metadata.items()})  # any case
    assert owner == Owner("job-1", source)
    assert owner.may_be_replaced_by("job-1", "audio-input/other.mp3")  # a redelivery
    assert owner.may_be_replaced_by("job-2", source)  # a new upload of the same source
    assert not owner.may_be_replaced_by("job-2", "audio-input/2025/שיעור א.mp3")
    assert not Owner.of({}).may_be_replaced_by("job-2", source)  # whose is unknown: not ours
