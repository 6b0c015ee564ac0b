"""A real browser for the tests and benchmark of ``report.html``: Debian's headless Chromium through selenium,
with a fresh profile, no network services, no GPU. ``missing()`` says in one line why none can start."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1800")
INSTALL = "apt-get install -y chromium chromium-driver; pip install selenium (the test extra)"


def _binaries() -> tuple[str | None, str | None]:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    return browser, shutil.which("chromedriver")


def missing() -> str | None:
    """None when a headless Chromium can be driven; otherwise what is absent and how to install it."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"no selenium ({INSTALL})"
    browser, driver = _binaries()
    if not browser or not driver:
        return f"no {'chromium' if not browser else 'chromedriver'} on PATH ({INSTALL})"
    return None


@contextlib.contextmanager
def chromium():
    """A headless Chromium driven by selenium, its profile in a temporary folder removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _binaries()
    with tempfile.TemporaryDirectory(prefix="alignkit-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        session = webdriver.Chrome(options=options, service=Service(driver))
        try:
            yield session
        finally:
            session.quit()


def open_report(session, path: Path) -> dict:
    """Load ``path`` from disk and wait until the page has drawn everything; returns its timings in ms:
    ``load`` (navigation start to the load event's end) and ``drawn`` (to the page's own mark once it has
    drawn everything)."""
    from selenium.webdriver.support.ui import WebDriverWait

    session.get(Path(path).resolve().as_uri())
    WebDriverWait(session, 60).until(lambda s: s.execute_script(
        "return document.body.dataset.drawn === 'yes' && performance.timing.loadEventEnd > 0"))
    return session.execute_script(
        "const t = performance.timing, mark = performance.getEntriesByName('report-drawn')[0];"
        "return {load: t.loadEventEnd - t.navigationStart, drawn: mark.startTime};")
