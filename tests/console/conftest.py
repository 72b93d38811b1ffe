"""Console fixtures: a real orgwarden server signing people in with the real test IdP, and a real
headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by Selenium.

- ``console_world`` (session scope: one per xdist worker, shared by the console files it runs, so
  tests must not assume a fresh organization): the IdP (``tests/idp``) and one ``orgwarden serve`` on
  SQLite with the simulator upstream; ``root@acme.test`` is the organization admin after ``init``; others are
  invited through the Admin API (``ConsoleWorld.invite``) and accept by signing in.
- ``browser``: one Chromium per xdist worker, reset before each test (no cookies, light scheme,
  desktop size, a blank page); ``new_browser()`` for a second, fresh one.
  Chromium is installed with apt-get when missing and we are root (once, under a file lock); when it
  cannot be had the tests are skipped loudly, but FAIL in CI (``CI=true``) or with
  ``ORGWARDEN_TEST_REQUIRE_BROWSER=1`` (set by ``.ci/run``).
- ``sign_in(driver, world, login)``: the browser flow through the IdP's own login form.
- ``shot(driver, name)``: a full-page PNG in ``$ORGWARDEN_TEST_ARTIFACTS/console/`` (default
  ``<repo>/test-artifacts/console/``, gitignored).
- ``axe(driver)``: axe-core (pinned in ``tests/console/package.json``, installed by ``npm ci`` into the
  shared cache) injected with ``execute_script`` (WebDriver evaluation is not subject to the page's CSP);
  ``assert_accessible`` fails on any ``serious`` or ``critical`` violation.
- ``http_session(world, login)``: an httpx client holding a session cookie (the httpx "browser" of
  tests/identity), for permission, CSRF and header checks.
"""

from __future__ import annotations

import base64
import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import Server, drop_database, free_port, make_database, stop_server
from tests.identity.conftest import IdP, csrf_of, oidc_settings, running_idp, serve_on
from tests.identity.conftest import browser as http_browser
from tests.identity.conftest import sign_in as http_sign_in
from tests.npm_cache import npm_ci

REPO = Path(__file__).resolve().parents[2]
REQUIRE_BROWSER = os.environ.get("CI") == "true" or os.environ.get("ORGWARDEN_TEST_REQUIRE_BROWSER") == "1"
CHROMIUM = Path(os.environ.get("ORGWARDEN_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("ORGWARDEN_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
ADMIN = "root@acme.test"
WAIT_SECONDS = 30


def _unavailable(message: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{message} (CI / ORGWARDEN_TEST_REQUIRE_BROWSER=1: the browser tests are required)")
    sys.stderr.write(f"\n\n*** {message}; console browser tests will be SKIPPED ***\n\n")
    pytest.skip(message)


def _install_chromium() -> None:
    """``apt-get install chromium chromium-driver`` once (file lock: xdist workers wait), as root only."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        _unavailable(f"{CHROMIUM} or {CHROMEDRIVER} is missing (install Debian's chromium and chromium-driver)")
    lock = Path(tempfile.gettempdir()) / "orgwarden-tests-chromium.lock"
    with lock.open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        if CHROMIUM.exists() and CHROMEDRIVER.exists():
            return
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "--no-install-recommends", "chromium", "chromium-driver"],
        ):
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
            if result.returncode != 0:
                _unavailable(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        _unavailable("apt-get installed chromium, but /usr/bin/chromium or /usr/bin/chromedriver is still missing")


def chrome_options(profile: Path, *, dark: bool = False) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    if dark:
        options.add_argument("--force-dark-mode")
    return options


@contextmanager
def new_browser(*, dark: bool = False) -> Iterator[WebDriver]:
    """A fresh headless Chromium with its own profile (no cookies), quit afterwards."""
    _install_chromium()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must download nothing
    with tempfile.TemporaryDirectory(prefix="orgwarden-chromium-") as profile:
        service = Service(executable_path=str(CHROMEDRIVER), log_output=str(Path(profile) / "chromedriver.log"))
        try:
            driver = webdriver.Chrome(options=chrome_options(Path(profile) / "profile", dark=dark), service=service)
        except WebDriverException as exc:
            _unavailable(f"Chromium did not start: {exc.msg}")
            raise
        driver.set_page_load_timeout(WAIT_SECONDS)
        try:
            if dark:
                color_scheme(driver, "dark")
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="session")
def _chromium() -> Iterator[WebDriver]:
    with new_browser() as driver:
        yield driver


@pytest.fixture
def browser(_chromium: WebDriver) -> WebDriver:
    """The worker's Chromium as if new: no cookies (every host), no emulation, desktop size, blank."""
    reset(_chromium)
    return _chromium


def reset(driver: WebDriver) -> None:
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})  # type: ignore[attr-defined]
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore[attr-defined]
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})  # type: ignore[attr-defined]
    driver.set_window_size(1280, 900)


def color_scheme(driver: WebDriver, scheme: str) -> None:
    """Emulate ``prefers-color-scheme: light|dark`` (CDP ``Emulation.setEmulatedMedia``)."""
    driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Emulation.setEmulatedMedia", {"features": [{"name": "prefers-color-scheme", "value": scheme}]}
    )


def phone(driver: WebDriver, width: int = 390, height: int = 844) -> None:
    """Emulate a phone's viewport (CDP ``Emulation.setDeviceMetricsOverride``)."""
    driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": True},
    )


def desktop(driver: WebDriver) -> None:
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})  # type: ignore[attr-defined]


# --- the world ---------------------------------------------------------------------------------------


@dataclass
class ConsoleWorld:
    idp: IdP
    server: Server
    tmp: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def admin(self) -> httpx.Client:
        """The Admin API with the organization's admin key."""
        return self.server.http()

    def invite(self, email: str, role: str) -> None:
        """Invite ``email`` with org ``role`` (accepted on their first sign-in) and register them at the IdP."""
        with self.admin() as api:
            response = api.post("/v1/organizations/invites", json={"email": email, "role": role})
            assert response.status_code == 200, response.text
        self.idp.account(email, name=email.split("@", 1)[0].title())


@pytest.fixture(scope="session")
def console_world() -> Iterator[ConsoleWorld]:
    """The worker's shared world (see the module docstring)."""
    with running_world() as world:
        yield world


@contextmanager
def running_world() -> Iterator[ConsoleWorld]:
    """The IdP and one orgwarden server (SQLite, simulator upstream) that signs people in with it."""
    with tempfile.TemporaryDirectory(prefix="orgwarden-console-") as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        with running_idp([f"http://127.0.0.1:{port}/auth/callback"], tmp) as idp:
            db = make_database("sqlite", tmp / "db")
            db.env.update(oidc_settings(idp))
            srv = serve_on(db, port, tmp)
            idp.account(ADMIN, name="Root Admin")
            try:
                yield ConsoleWorld(idp, srv, tmp)
            finally:
                stop_server(srv)
                drop_database(db)


# --- signing in --------------------------------------------------------------------------------------


def wait_for(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    try:
        return WebDriverWait(driver, WAIT_SECONDS).until(condition)
    except Exception as exc:
        page = driver.page_source[:3000]
        raise AssertionError(f"timed out waiting for {what}; at {driver.current_url}:\n{page}") from exc


def sign_in(driver: WebDriver, world: ConsoleWorld, login: str = ADMIN, next_path: str = "/console") -> None:
    """Sign in through the IdP's login form in the browser; ends on ``next_path``."""
    driver.get(f"{world.base_url}/auth/login?next={next_path}")

    def arrived(d: WebDriver) -> bool | str:
        if d.current_url.startswith(world.base_url):
            return "back"
        return "form" if d.find_elements(By.CSS_SELECTOR, "input[name=login]") else False

    if wait_for(driver, arrived, "the IdP's login form") == "form":
        driver.find_element(By.CSS_SELECTOR, "input[name=login]").send_keys(login)
        driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys("any-password")
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
    target = world.base_url + next_path
    wait_for(driver, lambda d: urlsplit(d.current_url).path == urlsplit(target).path, f"arriving at {next_path}")


def session_cookie(driver: WebDriver) -> dict[str, str]:
    """The browser's cookies for orgwarden (to reuse its session from httpx)."""
    return {c["name"]: c["value"] for c in driver.get_cookies()}


@contextmanager
def http_session(world: ConsoleWorld, login: str) -> Iterator[httpx.Client]:
    """An httpx client signed in as ``login`` (cookies kept; redirects not followed), closed afterwards."""
    client = http_browser()
    try:
        page = http_sign_in(client, world.base_url, login, next_path="/auth/session")
        assert page.status_code == 200, page.text
        yield client
    finally:
        client.close()


def csrf_token(client: httpx.Client, world: ConsoleWorld) -> str:
    return csrf_of(client, world.base_url)


# --- artifacts and accessibility ---------------------------------------------------------------------


def artifacts_dir() -> Path:
    root = Path(os.environ.get("ORGWARDEN_TEST_ARTIFACTS") or REPO / "test-artifacts")
    target = root / "console"
    target.mkdir(parents=True, exist_ok=True)
    return target


def shot(driver: WebDriver, name: str) -> Path:
    """A full-page PNG of what the browser shows (CDP ``Page.captureScreenshot`` beyond the viewport)."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})  # type: ignore[attr-defined]
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
    data = driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path = artifacts_dir() / f"{name}.png"
    path.write_bytes(base64.b64decode(data["data"]))
    return path


_AXE_SOURCE: list[str] = []


def _axe_source() -> str:
    if not _AXE_SOURCE:
        target = npm_ci(Path(__file__).parent, "axe", "axe-core (accessibility checks)", _unavailable, scripts=False)
        _AXE_SOURCE.append((target / "node_modules" / "axe-core" / "axe.min.js").read_text())
    return _AXE_SOURCE[0]


def axe(driver: WebDriver) -> list[dict[str, Any]]:
    """axe-core's violations on the current page (WCAG 2.x A/AA and best practices)."""
    if not driver.execute_script("return typeof window.axe !== 'undefined'"):
        driver.execute_script(_axe_source())
    driver.set_script_timeout(WAIT_SECONDS)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']})"
        ".then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)}))))"
        ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));"
    )
    return list(result)


def assert_accessible(driver: WebDriver, where: str) -> None:
    """No ``serious`` or ``critical`` axe violation on the current page."""
    bad = [v for v in axe(driver) if v.get("impact") in ("serious", "critical")]
    lines = [f"{v['impact']}: {v['id']}: {v['help']} at {v['nodes']}" for v in bad]
    assert not bad, f"accessibility violations on {where}:\n" + "\n".join(lines)


def wait_page(driver: WebDriver, path: str) -> None:
    """Open ``path`` on the server the browser is signed in to and wait for its ``<main>``."""
    driver.get(path)
    wait_for(driver, lambda d: d.find_elements(By.ID, "main"), f"the page {path}")


def pause(seconds: float) -> None:
    time.sleep(seconds)
