"""A real headless browser for tests: Debian's Chromium driven by its chromedriver (selenium)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")
# A container has no sandbox and a small /dev/shm; a page may start playing without a click
# of its own (tests call play() from scripts), and audio goes to a null sink.
_ARGUMENTS: Final = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
)


def browser_missing() -> str | None:
    """Why no browser can run here, or None."""
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not tool.exists() and shutil.which(tool.name) is None:
            return f"{tool} is missing: apt-get install chromium chromium-driver"
    return None


@contextmanager
def headless_chromium(width: int = 1000, height: int = 700) -> Iterator[webdriver.Chrome]:
    """Chromium, its console kept (``console_errors``), closed at the end."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    for argument in (*_ARGUMENTS, f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = CHROMEDRIVER if CHROMEDRIVER.exists() else shutil.which("chromedriver")
    driver = webdriver.Chrome(service=Service(str(driver_path)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The console's errors since the last call (a script error, a blocked load, a CSP refusal)."""
    entries: list[dict[str, Any]] = driver.get_log("browser")  # type: ignore[no-untyped-call]
    return [entry for entry in entries if entry["level"] == "SEVERE"]
