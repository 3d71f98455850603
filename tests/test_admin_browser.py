"""The admin pages in a real browser (Debian's chromium + chromium-driver, python3-selenium):
open the configuration page, toggle Sync Active, click Initial Sync for one representative, then
open the log page and see the resulting entries. The forms work under the strict CSP (no script),
the stylesheet loads from the handler, and screenshots go to build/screenshots/ for a human look
(build output, not committed; docs/admin.md lists them)."""
import os
import re
import shutil
import tempfile
import time

import pytest

from lib.pg import PgCluster
from test_admin import OTHERS, SEED, XSS, admin_conf

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "build",
                   "screenshots")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.common.exceptions import (NoSuchElementException,  # noqa: E402
                                        StaleElementReferenceException,
                                        WebDriverException)
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# what a wait may meet while the page navigates: the old document's nodes (Chromium also
# answers "Node with given id does not belong to the document", a plain WebDriverException);
# the wait still fails with a TimeoutException when the condition never holds
NAV = (StaleElementReferenceException, NoSuchElementException, WebDriverException)


@pytest.fixture(scope="module")
def pg():
    c = PgCluster(demo=True).start()
    c.sql(SEED, XSS)
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def server(pg):
    from lib.httpd import Httpd
    h = Httpd(name="rmsync-admin-browser")
    h.write_conf(rmsync=admin_conf(pg, h))
    h.start()
    yield h
    h.stop()
    bad = h.bad_log_lines(OTHERS)
    h.destroy()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.fail("chromium and chromium-driver are needed (apt-get install chromium "
                    "chromium-driver python3-selenium)")
    profile = tempfile.mkdtemp(prefix="rmsync-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1500,1000"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    d.set_page_load_timeout(20)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def shot(d, name):
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    # full page height so the whole table is in the picture (from the default size: the
    # document is never shorter than the window, a larger window would stay)
    d.set_window_size(1500, 1000)
    for _ in range(2):   # the height changes with the width: measure again after resizing
        h = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(1500, max(1000, min(int(h) + 140, 4000)))
    d.save_screenshot(path)
    return path


def rep_row(d, rep):
    return d.find_element(By.CSS_SELECTOR, f'tr[data-rep="{rep}"]')


def click_and_wait(d, el, flash_text):
    el.click()
    WebDriverWait(d, 10, ignored_exceptions=NAV).until(
        lambda drv: flash_text in drv.find_element(By.TAG_NAME, "main").text)


def test_browser_config_toggle_initial_sync_and_log(server, pg, browser):
    d = browser
    d.get(server.url("/rmsync/config"))
    assert d.title == "Calendar Sync Configuration - mod_rmsync"
    # the stylesheet from /rmsync/style.css applied under the CSP (header colour)
    bg = d.find_element(By.CSS_SELECTOR, "header.top").value_of_css_property("background-color")
    assert bg in ("rgba(23, 50, 77, 1)", "rgb(23, 50, 77)"), bg
    # hostile strings show as text, no script ran
    assert XSS in rep_row(d, "EVE").text

    # toggle Sync Active for BOB (off -> on)
    assert pg.val("SELECT coalesce((SELECT sync_active FROM rmsync.rep_state"
                  " WHERE representative_id = 'BOB'), false)") == "f"
    btn = rep_row(d, "BOB").find_element(By.CSS_SELECTOR, 'button[data-action="set_active"]')
    assert btn.text == "Activate"
    click_and_wait(d, btn, "Sync Active changed.")
    assert d.current_url.endswith("/rmsync/config?done=set_active")
    assert pg.val("SELECT sync_active FROM rmsync.rep_state WHERE representative_id = 'BOB'") \
        == "t"
    row = rep_row(d, "BOB")
    assert "Yes" in row.find_element(By.CSS_SELECTOR, "td.sync-active").text
    assert row.find_element(By.CSS_SELECTOR, 'button[data-action="set_active"]').text \
        == "Deactivate"

    # Initial Sync for BOB
    btn = rep_row(d, "BOB").find_element(By.CSS_SELECTOR, 'button[data-action="initial_sync"]')
    click_and_wait(d, btn, "Initial Sync requested")
    assert pg.val("SELECT count(*) FROM rmsync.request WHERE kind = 'initial_sync'"
                  " AND representative_id = 'BOB'") == "1"
    row_text = rep_row(d, "BOB").text
    # pending until the runner picks it up (then the button is back)
    assert "pending" in row_text or "Initial Sync" in row_text
    cfg_png = shot(d, "admin_config.png")

    # the log page shows both actions, newest first, naming the admin user
    d.get(server.url("/rmsync/log"))
    assert d.title == "Calendar Sync Log - mod_rmsync"
    rows = d.find_elements(By.CSS_SELECTOR, "table#log tbody tr")
    texts = [r.text for r in rows]
    i_init = next(i for i, t in enumerate(texts) if "initial_sync" in t and "Bob Brown" in t)
    i_act = next(i for i, t in enumerate(texts) if "set_active" in t and "Bob Brown" in t)
    assert i_init < i_act
    assert "Initial Sync requested (admin -)" in texts[i_init]
    assert "Sync Active set to Yes (admin -)" in texts[i_act]
    assert any(XSS in t for t in texts)

    # filter by representative through the form (GET)
    sel = d.find_element(By.CSS_SELECTOR, 'select[name="rep"]')
    sel.find_element(By.CSS_SELECTOR, 'option[value="BOB"]').click()
    d.find_element(By.CSS_SELECTOR, "form.filter button[type=submit]").click()
    WebDriverWait(d, 10, ignored_exceptions=NAV).until(lambda drv: "rep=BOB" in drv.current_url)
    texts = [r.text for r in d.find_elements(By.CSS_SELECTOR, "table#log tbody tr")]
    assert texts and all("Bob Brown" in t for t in texts)
    log_png = shot(d, "admin_log.png")

    # Retry from the log page keeps the filter
    btn = d.find_element(By.CSS_SELECTOR, 'table#log button[data-action="retry"]')
    click_and_wait(d, btn, "Retry requested")
    assert "rep=BOB" in d.current_url and "done=retry" in d.current_url

    d.get(server.url("/rmsync/status"))
    assert "Calendar Sync status" in d.title
    shot(d, "admin_status.png")

    # no CSP violation or script error in the console on any page
    logs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not logs, logs
    assert os.path.getsize(cfg_png) > 10000 and os.path.getsize(log_png) > 10000


def test_browser_log_level_search_and_time_zone(server, pg, browser):
    """Issue 15: warning-and-above, text search and a time zone chosen on the page, remembered
    in the cookie; the event id is shortened with the full id one click away; no script."""
    d = browser
    pg.sql("INSERT INTO rmsync.sync_log (at, level, representative_id, action, message,"
           " event_id) VALUES ('2026-01-15 23:30:00+00', 'warning', 'ALICE', 'br_tz',"
           " 'browser 100%_check', 'AAMkAGI2TG93AAA-a-very-long-outlook-event-id-0123456789=')")
    d.get(server.url("/rmsync/log"))
    sel = d.find_element(By.CSS_SELECTOR, 'select[name="min_level"]')
    sel.find_element(By.CSS_SELECTOR, 'option[value="warning"]').click()
    q = d.find_element(By.CSS_SELECTOR, 'input[name="q"]')
    q.clear()
    q.send_keys("100%_check")
    tz = d.find_element(By.CSS_SELECTOR, 'input[name="tz"]')
    tz.clear()
    tz.send_keys("Asia/Tokyo")
    d.find_element(By.CSS_SELECTOR, "form.filter button[type=submit]").click()
    WebDriverWait(d, 10, ignored_exceptions=NAV).until(lambda drv: "tz=Asia" in drv.current_url)
    rows = d.find_elements(By.CSS_SELECTOR, "table#log tbody tr")
    assert len(rows) == 1 and "browser 100%_check" in rows[0].text
    t = rows[0].find_element(By.TAG_NAME, "time")
    assert t.text == "2026-01-16 08:30:00" and t.get_attribute("title") == "UTC: 2026-01-15 23:30:00Z"
    summary = rows[0].find_element(By.CSS_SELECTOR, "details.evid summary")
    assert summary.get_attribute("title").endswith("0123456789=") and "…" in summary.text
    summary.click()
    assert rows[0].find_element(By.CSS_SELECTOR, "details.evid code").text.endswith("0123456789=")
    shot(d, "admin_log_tz.png")
    # remembered: a plain visit shows Tokyo time
    d.get(server.url("/rmsync/log?min_level=warning&action=br_tz"))
    assert d.find_element(By.CSS_SELECTOR, "table#log time").text == "2026-01-16 08:30:00"
    logs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not logs, logs
    d.delete_all_cookies()
