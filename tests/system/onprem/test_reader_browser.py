"""The reader page in a real headless Chromium, opened from disk (``file://``) like a user would.

A real recording (espeak-ng speech, WAV) lies in a folder beside the transcripts' folder,
under a name that needs percent-encoding, and the page links it relatively.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from support.audio_factory import speech_wav
from support.browser import browser_missing, console_errors, headless_chromium
from support.reader_page import document_from_timed_text
from support.repo_paths import REPO_ROOT
from support.waiting import wait_until

from onprem.reader import (
    ReaderDocument,
    ReaderLine,
    recording_href,
    write_page,
)
from pipeline_core.timed_text import format_timestamp

pytestmark = [
    pytest.mark.slow,  # starts a browser and plays audio for a few seconds
    pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing())),
]

WAIT_SECONDS = 20.0
SPOKEN = "one, two, three, four, five, six, seven, eight, nine, ten, eleven, twelve"


@dataclass(frozen=True)
class Recording:
    path: Path
    seconds: float
    sample_rate: int


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    path = speech_wav(tmp_path_factory.mktemp("home") / "recordings" / "שיעור #1 (a+b).wav", SPOKEN)
    with wave.open(str(path)) as audio:
        seconds = audio.getnframes() / audio.getframerate()
        sample_rate = audio.getframerate()
    assert seconds > 5, "long enough to seek in"
    return Recording(path, seconds, sample_rate)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with headless_chromium() as driver:
        yield driver


@pytest.fixture(autouse=True)
def _no_console_errors(browser: webdriver.Chrome) -> Iterator[None]:
    """A script error, a refused load or a CSP refusal fails the test that caused it."""
    console_errors(browser)
    yield
    assert console_errors(browser) == []


def timed_text(lines: list[tuple[float, float, str]]) -> str:
    return "".join(
        f"[{format_timestamp(start)} --> {format_timestamp(end)}] {text}\n"
        for start, end, text in lines
    )


def open_page(browser: webdriver.Chrome, page: Path, document: ReaderDocument) -> None:
    write_page(page, document)
    browser.get(page.as_uri())


def english_lines(recording: Recording) -> list[tuple[float, float, str]]:
    """Four lines over the recording; the third starts at 2.5 s."""
    return [
        (0.0, 1.2, "one, two"),
        (1.2, 2.5, "three, four"),
        (2.5, 4.0, "five, six, seven"),
        (4.0, round(recording.seconds, 3), "eight to twelve"),
    ]


def lines_of(browser: webdriver.Chrome) -> list[WebElement]:
    return browser.find_elements(By.CSS_SELECTOR, "#transcript li")


def playing_lines(browser: webdriver.Chrome) -> list[int]:
    found: list[int] = browser.execute_script(
        "return Array.from(document.querySelectorAll('#transcript li'))"
        ".flatMap((li, i) => li.classList.contains('playing') ? [i] : [])"
    )
    return found


@pytest.fixture
def english_page(tmp_path: Path, recording: Recording, browser: webdriver.Chrome) -> Path:
    page = recording.path.parent.parent / "transcripts" / f"{tmp_path.name}.html"
    document = document_from_timed_text(
        recording.path.name,
        timed_text(english_lines(recording)),
        corrected_segments={1},
        language="english",
        recording_href=recording_href(recording.path, page),
    )
    open_page(browser, page, document)
    wait_until(
        lambda: browser.execute_script("return document.getElementById('player').readyState") >= 1,
        WAIT_SECONDS,
        "the player to load the recording's metadata",
    )
    return page


def test_clicking_the_third_line_plays_the_recording_from_its_start(
    english_page: Path, recording: Recording, browser: webdriver.Chrome
) -> None:
    duration = browser.execute_script("return document.getElementById('player').duration")
    assert duration == pytest.approx(recording.seconds, abs=0.05), "the linked file is loaded"
    # After the page's own click handler: read back the position it set (the official
    # playback position, set synchronously) and hold it there, so that playback cannot move
    # on before the assertions; then note where the seek landed.
    browser.execute_script(
        """
        const player = document.getElementById('player');
        window.observed = {played: false};
        player.addEventListener('play', () => { window.observed.played = true; });
        document.addEventListener('click', () => {
          window.observed.setTo = player.currentTime;
          player.pause();
        }, {once: true});
        player.addEventListener('seeked', () => {
          window.observed.seekedAt = player.currentTime;
        }, {once: true});
        """
    )
    third = lines_of(browser)[2]
    third.click()
    wait_until(
        lambda: browser.execute_script("return window.observed.seekedAt !== undefined"),
        WAIT_SECONDS,
        "the player to seek",
    )
    observed = browser.execute_script("return window.observed")
    line_start = float(third.get_attribute("data-start") or "nan")
    assert line_start == 2.5
    assert observed["setTo"] == line_start
    # WAV seeks to the sample: within one sample period of what the page asked for.
    assert observed["seekedAt"] == pytest.approx(line_start, abs=1 / recording.sample_rate)
    assert observed["played"], "a click plays, not only seeks"
    assert playing_lines(browser) == [2]
    assert third.get_attribute("aria-current") == "true"


def test_the_highlight_follows_playback_into_the_next_line(
    english_page: Path, browser: webdriver.Chrome
) -> None:
    lines = lines_of(browser)
    lines[2].click()
    wait_until(lambda: playing_lines(browser) == [2], WAIT_SECONDS, "line 3 to be highlighted")
    # Only timeupdate events during playback can move the highlight on from here.
    browser.execute_script(
        "const player = document.getElementById('player');"
        "player.currentTime = Number(arguments[0].dataset.start) - 0.3; player.play();",
        lines[3],
    )
    wait_until(lambda: playing_lines(browser) == [3], WAIT_SECONDS, "playback to reach line 4")
    assert lines[3].get_attribute("aria-current") == "true"
    assert lines[2].get_attribute("aria-current") is None
    browser.execute_script("document.getElementById('player').pause()")


def test_corrected_lines_are_marked(english_page: Path, browser: webdriver.Chrome) -> None:
    marked = [
        "corrected" in (line.get_attribute("class") or "").split() for line in lines_of(browser)
    ]
    assert marked == [False, True, False, False]
    badge = lines_of(browser)[1].find_element(By.CSS_SELECTOR, ".badge")
    assert badge.is_displayed()
    assert "1 of 4 lines" in browser.find_element(By.TAG_NAME, "header").text


def test_a_hebrew_transcript_is_laid_out_right_to_left(
    tmp_path: Path, recording: Recording, browser: webdriver.Chrome
) -> None:
    document = document_from_timed_text(
        "שיעור.wav",
        timed_text([(0.0, 2.0, "שלום לכולם, היום נלמד בבא קמא דף ב."), (2.0, 4.0, "מתחילים.")]),
        language="hebrew",
        recording_href=recording_href(recording.path, tmp_path / "page.html"),
    )
    open_page(browser, tmp_path / "page.html", document)
    direction = browser.execute_script(
        "return getComputedStyle(document.querySelector('#transcript .text')).direction"
    )
    assert direction == "rtl"
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "he"
    first = lines_of(browser)[0]
    time_box = first.find_element(By.CSS_SELECTOR, ".time").rect
    text_box = first.find_element(By.CSS_SELECTOR, ".text").rect
    assert time_box["x"] > text_box["x"], "the time stands at the right, where the line begins"


def test_a_script_in_the_transcript_stays_text(tmp_path: Path, browser: webdriver.Chrome) -> None:
    hostile = [
        "<script>window.injected = 'script'</script>",
        '<img src="x" onerror="window.injected = \'img\'">',
        '"><svg onload="window.injected = \'attribute\'">',
    ]
    document = ReaderDocument(
        title="<script>window.injected = 'title'</script>",
        lines=tuple(ReaderLine(text, float(i), float(i + 1)) for i, text in enumerate(hostile)),
        corrections_known=False,
        recording_href=None,
    )
    open_page(browser, tmp_path / "page.html", document)
    assert browser.execute_script("return window.injected === undefined")
    shown = [line.find_element(By.CSS_SELECTOR, ".text").text for line in lines_of(browser)]
    assert shown == hostile
    assert browser.title == document.title
    assert browser.find_elements(By.TAG_NAME, "img") == []
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1, "only the page's own"


def test_without_a_recording_the_transcript_is_still_there(
    tmp_path: Path, browser: webdriver.Chrome
) -> None:
    document = document_from_timed_text(
        "gone.mp3", timed_text([(0.0, 1.0, "first"), (1.0, 2.0, "second")])
    )
    open_page(browser, tmp_path / "page.html", document)
    assert browser.find_elements(By.TAG_NAME, "audio") == []
    lines = lines_of(browser)
    assert [line.find_element(By.CSS_SELECTOR, ".text").text for line in lines] == [
        "first",
        "second",
    ]
    lines[1].click()  # nothing to play, and no error either (checked after each test)
    assert "No copy of the recording" in browser.find_element(By.TAG_NAME, "header").text


def test_the_readme_screenshot_script_photographs_a_page(tmp_path: Path) -> None:
    picture = tmp_path / "reader.png"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "reader_screenshot.py"),
            "--output",
            str(picture),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    png = picture.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])  # the IHDR chunk comes first
    assert width == 900
    assert height > 300
