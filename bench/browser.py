"""Headless Chromium for the dashboard's browser test and screenshot.

Debian's ``chromium`` and ``chromium-driver`` packages (``.ci/run`` installs
them), driven by Selenium through ``/usr/bin/chromedriver``: nothing is
downloaded at run time. ``missing()`` says what is absent, for a test's skip
reason; ``headless_driver`` starts a browser with a fresh profile and none of
Chromium's background network traffic.
"""

from __future__ import annotations

import os
import shutil
import tempfile

__all__ = ["CHROMIUM", "CHROMEDRIVER", "missing", "headless_driver"]

CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = (os.environ.get("SWITCHBOARD_CHROMEDRIVER") or shutil.which("chromedriver")
                or "/usr/bin/chromedriver")


def missing() -> str | None:
    """Why a browser cannot be started here, or None."""
    absent = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if absent:
        return (f"not installed: {', '.join(absent)} (Debian: apt-get install -y chromium "
                f"chromium-driver; .ci/run does it)")
    return None


def headless_driver(width: int = 1400, height: int = 1000):
    """A Selenium Chrome driver on headless Chromium; ``quit()`` it after use
    (its temporary profile is removed then)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="switchboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-extensions",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    quit_driver = driver.quit

    def quit_and_clean() -> None:
        try:
            quit_driver()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    driver.quit = quit_and_clean
    return driver
