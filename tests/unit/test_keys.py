from __future__ import annotations

from urllib.parse import quote_plus

import pytest

from pipeline_core import keys


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
