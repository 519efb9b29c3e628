"""Browser tests: Debian's headless chromium, driven by its own chromedriver through
Selenium, against pytest-django's live server (issue 15).

Nothing is downloaded at test time: the browser and driver paths are given, so
Selenium Manager never runs (SE_OFFLINE=true as well). One chromium serves the whole
session; every test starts with no cookies. With CI=true a missing chromium or
chromedriver is a failure, not a skip, as for named (tests/conftest.py).

Pages change under other hands, so the helpers find elements the way a person does:
by form field names, button labels, link text and headings, never by CSS paths.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

# Debian's packages chromium and chromium-driver; another build of the same pair can be named instead.
CHROMIUM = os.environ.get("CHANGEGATE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHANGEGATE_CHROMEDRIVER", "/usr/bin/chromedriver")
# Relative paths are taken from the repository root, wherever pytest was started.
ARTIFACTS_DEFAULT = "test-artifacts"
REPO = Path(__file__).resolve().parents[2]
# A page that has not loaded (or a wait that never ends) fails the test after this long.
PAGE_TIMEOUT = 20
# Taller full-page screenshots are cut here: a runaway page must not make a 100 MB PNG.
MAX_SHOT_HEIGHT = 12000


def require_browser() -> None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; required under CI=true")
        pytest.skip(message)


def artifacts_dir() -> Path:
    return REPO / os.environ.get("CHANGEGATE_TEST_ARTIFACTS", ARTIFACTS_DEFAULT)


@pytest.fixture(scope="session")
def chromium() -> Iterator:
    """One headless chromium for the session (starting one costs about a second)."""
    require_browser()
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: Selenium Manager must not fetch a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000",
                     # No first-run, sync, translate or update traffic from the test browser.
                     "--no-first-run", "--disable-background-networking", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(PAGE_TIMEOUT)
    yield driver
    driver.quit()


class Browser:
    """The session's chromium pointed at the live server, with person-level finders."""

    def __init__(self, driver, base_url: str, shots: Path, test_name: str) -> None:
        self.driver = driver
        self.base_url = base_url
        self.shots = shots
        self.test_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)

    # -- navigation ---------------------------------------------------------------

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    @property
    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base_url)

    def _leaves_page(self, act) -> None:
        """Do `act` (a click that submits or follows a link) and wait for the next page."""
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        old = self.driver.find_element("tag name", "html")
        act()
        WebDriverWait(self.driver, PAGE_TIMEOUT).until(expected_conditions.staleness_of(old))
        WebDriverWait(self.driver, PAGE_TIMEOUT).until(
            lambda driver: driver.execute_script("return document.readyState") == "complete")

    def click_link(self, text: str) -> None:
        """Follow the link a person would read as `text` (its visible text contains it)."""
        links = self.driver.find_elements("xpath", f"//a[contains(normalize-space(.), {_xpath_literal(text)})]")
        shown = [link for link in links if link.is_displayed()]  # not a collapsed sidebar's copy
        assert shown, f"no visible link reading {text!r} on {self.path}"
        self._leaves_page(shown[0].click)

    def press(self, button) -> None:
        self._leaves_page(button.click)

    # -- finders ------------------------------------------------------------------

    def choose(self, name: str, label: str | None = None, *, value: str | None = None) -> None:
        """Pick the option shown as `label` (or with `value`) in the <select> named `name`."""
        from selenium.webdriver.support.ui import Select

        select = Select(self.field(name))
        if value is not None:
            select.select_by_value(value)
        else:
            select.select_by_visible_text(label)

    def field(self, name: str):
        """The form control (input, select, textarea) named `name`."""
        return self.driver.find_element("name", name)

    def fields(self, name: str) -> list:
        return self.driver.find_elements("name", name)

    def button(self, label: str):
        """The submit button whose label is `label` (an <input type=submit value=...> or a <button>)."""
        literal = _xpath_literal(label)
        return self.driver.find_element(
            "xpath", f"//input[@type='submit' and normalize-space(@value)={literal}]"
                     f" | //button[normalize-space(.)={literal}]")

    def buttons_labelled(self, label: str) -> list:
        literal = _xpath_literal(label)
        return self.driver.find_elements(
            "xpath", f"//input[@type='submit' and normalize-space(@value)={literal}]"
                     f" | //button[normalize-space(.)={literal}]")

    def submit_of(self, control):
        """The submit button of the form `control` belongs to, whatever its label."""
        return control.find_element("xpath", "./ancestor::form[1]//*[(self::input or self::button) and @type='submit']")

    def heading(self, text: str):
        """The first heading (h1-h3) whose text contains `text`."""
        return self.driver.find_element(
            "xpath", f"//*[self::h1 or self::h2 or self::h3][contains(normalize-space(.), {_xpath_literal(text)})]")

    def headings(self) -> list[str]:
        return [element.text for element in self.driver.find_elements("xpath", "//h1 | //h2 | //h3")]

    def fact(self, label: str) -> str:
        """The value beside the header cell that reads `label` (a facts table: <tr><th>label</th><td>value)."""
        return self.driver.find_element(
            "xpath", f"//tr[th[normalize-space(.)={_xpath_literal(label)}]]/td").text

    def text(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def table_after(self, heading: str):
        """The first table after the heading that contains `heading`: the one it titles."""
        return self.heading(heading).find_element("xpath", "./following::table[1]")

    def messages(self) -> list[str]:
        """The admin's flash messages ("Change #3 approved."), as Django's messagelist shows them
        (a plan's warnings use the same list style: callers look for the message they expect)."""
        items = self.driver.find_elements("xpath", "//ul[contains(concat(' ', @class, ' '), ' messagelist ')]/li")
        return [element.text for element in items]

    # -- sign-in --------------------------------------------------------------------

    def login(self, username: str, password: str = "pw") -> None:
        """Sign in through the admin's own login form, as a person would (django-axes checks it)."""
        self.open("/admin/login/?next=/admin/")
        self.field("username").send_keys(username)
        password_field = self.field("password")
        password_field.send_keys(password)
        self.press(self.submit_of(password_field))

    def force_login(self, user) -> None:
        """Put a session for `user` into the browser without the login form (Client.force_login's cookie)."""
        from django.conf import settings
        from django.test import Client

        client = Client()
        client.force_login(user)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        # A cookie can be set only for the page's own host: open a cheap page of the live server first.
        self.open("/admin/login/")
        self.driver.add_cookie({"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "path": "/"})

    # -- evidence ---------------------------------------------------------------------

    def screenshot(self, name: str) -> Path:
        """The whole page (not just the window) as <artifacts>/screenshots/<test>-<name>.png."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{self.test_name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], MAX_SHOT_HEIGHT),
                     "scale": 1},
        })
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


def _xpath_literal(text: str) -> str:
    """`text` as an XPath 1.0 string literal (which has no escapes: concat around quotes)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ", \"'\", ".join(f"'{part}'" for part in text.split("'")) + ")"


@pytest.fixture
def browser(chromium, live_server, transactional_db, request, monkeypatch) -> Iterator[Browser]:
    """The session's chromium for one test: no cookies from an earlier test, pointed at
    the live server (whose thread sees only committed rows: hence transactional_db)."""
    from django.db import connections

    # Chromium keeps its sockets open between pages, and the live server serves each
    # socket in a thread of its own: with persistent database connections (PostgreSQL's
    # CONN_MAX_AGE) those threads would still hold theirs when pytest-django drops the
    # test database ("is being accessed by other users"). One connection per request.
    monkeypatch.setitem(connections["default"].settings_dict, "CONN_MAX_AGE", 0)
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.get("about:blank")
    yield Browser(chromium, live_server.url, artifacts_dir() / "screenshots", request.node.name)
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})


@pytest.fixture
def screenshot(browser: Browser):
    """`screenshot(name)`: save the current page under the artifacts folder."""
    return browser.screenshot
