"""Screenshot of the reader page for the README: ``docs/images/reader.png``.

    .venv/bin/python scripts/reader_screenshot.py [--output PATH]

Builds a short Hebrew lecture the way the poller would (spoken by espeak-ng, two lines
changed by the correction), opens the page in headless Chromium (Debian's ``chromium`` and
``chromedriver``), clicks the third line and photographs the page with that line playing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import wave
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "tests"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from selenium.webdriver.common.by import By  # noqa: E402
from support.audio_factory import speech_wav  # noqa: E402
from support.browser import console_errors, headless_chromium  # noqa: E402
from support.waiting import wait_until  # noqa: E402

from onprem.reader import ReaderDocument, ReaderLine, recording_href, write_page  # noqa: E402

OUTPUT: Final = ROOT / "docs" / "images" / "reader.png"
# (corrected text, what was recognised where the correction changed it)
LECTURE: Final = (
    ("שלום לכולם, היום נמשיך בלימוד מסכת בבא קמא.", None),
    ("ארבעה אבות נזיקין: השור והבור והמבעה וההבער.", "ארבעה אבות נזקין השור והבור והמבעה והבער"),
    ("לא הרי השור כהרי המבעה, ולא הרי המבעה כהרי השור.", None),
    ("רש״י מסביר שהמבעה זה האדם.", "רשי מסביר שהמבעה זה האדם"),
    ("ושמואל אמר: מבעה זה השן.", None),
    ("נעבור עכשיו לגמרא בדף ב׳ עמוד ב׳.", None),
)


def lecture(recording: Path, page: Path, seconds: float) -> ReaderDocument:
    """The lines timed in proportion to their length over the recording."""
    total = sum(len(text) for text, _ in LECTURE)
    lines, start = [], 0.0
    for text, original in LECTURE:
        end = round(start + seconds * len(text) / total, 3)
        lines.append(ReaderLine(text, start, end, original is not None, original))
        start = end
    return ReaderDocument(
        title="שיעורים/בבא קמא ב.mp3",
        lines=tuple(lines),
        corrections_known=True,
        language="he",
        recording_href=recording_href(recording, page),
    )


def screenshot(output: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        recording = speech_wav(
            home / "recordings" / "בבא קמא ב.wav", " ".join(t for t, _ in LECTURE), voice="he"
        )
        page = home / "transcripts" / "בבא קמא ב.html"
        with headless_chromium(width=900, height=560) as browser:
            with wave.open(str(recording)) as audio:
                seconds = audio.getnframes() / audio.getframerate()
            write_page(page, lecture(recording, page, seconds))
            browser.get(page.as_uri())
            wait_until(
                lambda: browser.execute_script(
                    "return document.getElementById('player').readyState >= 1"
                ),
                20,
                "the recording's metadata to load",
            )
            # Hold the position where the click puts it, so the picture shows that line lit.
            browser.execute_script(
                "document.addEventListener('click', () =>"
                " document.getElementById('player').pause(), {once: true});"
            )
            third = browser.find_elements(By.CSS_SELECTOR, "#transcript li")[2]
            third.click()
            wait_until(
                lambda: "playing" in (third.get_attribute("class") or ""), 20, "the highlight"
            )
            errors = console_errors(browser)
            if errors:
                raise SystemExit(f"the page logged errors: {errors}")
            output.parent.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(output))
    print(f"{output} ({output.stat().st_size // 1024} KiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    screenshot(parser.parse_args().output)


if __name__ == "__main__":
    main()
