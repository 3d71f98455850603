"""The health banner and the per-representative fixes in a real browser (headless Chromium, like
tests/test_admin_browser.py) with the real runner and the Graph simulator: all green; the client
secret rotated in Entra (simulator); the Test connection / Test mailbox buttons passing and
failing; a mailbox that does not exist; a representative held by the deletion breaker; the
database stopped. Each asserts the visible text and saves a screenshot build/screenshots/
admin_health_*.png (docs/admin.md lists them); no console error (CSP)."""
import re
import time

import pytest

from engine_stack import CLIENT, SECRET, EngineStack
from test_admin import OTHERS
from test_admin_browser import NAV, browser, shot  # noqa: F401  (the fixture)

By = pytest.importorskip("selenium.webdriver.common.by").By
WebDriverWait = pytest.importorskip("selenium.webdriver.support.ui").WebDriverWait

GHOST = "ghost@demo.rmsync.test"


@pytest.fixture(scope="module")
def st():
    # notify: the Test connection's subscription handshake needs a notification URL
    s = EngineStack(cycle=1, active=("ALICE",), notify=True,
                    sim_config={"allow_http_notification_urls": True})
    s.httpd.allow = set(OTHERS)
    yield s
    bad = s.close()
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def wait_status(st, want, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if st.httpd.status()["health"]["status"] == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"health never {want}: {st.httpd.status()['health']}")


def wait_code(st, code, present=True, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        h = st.httpd.status()["health"]
        if (code in {r["code"] for r in h["reasons"]}) == present:
            return h
        time.sleep(0.3)
    raise AssertionError(f"health reason {code} never {'set' if present else 'cleared'}: {h}")


def no_console_errors(d):
    errs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errs, errs


def banner(d):
    return d.find_element(By.ID, "health")


def reason(d, code):
    """The banner's visible line for one reason code."""
    return banner(d).find_element(By.CSS_SELECTOR, f'[data-code="{code}"]').text


def rep_row(d, rep):
    """A representative's row: the configuration page's (data-rep) or the status page's live
    table (the id in the first cell)."""
    rows = d.find_elements(By.CSS_SELECTOR, f'tr[data-rep="{rep}"]')
    return rows[0] if rows else d.find_element(
        By.XPATH, f"//table[@id='live']/tbody/tr[td[1]='{rep}']")


def test_green_and_token_failing(st, browser):  # noqa: F811
    d = browser
    st.wait_pass("ALICE")
    wait_status(st, "ok")
    for page in ("config", "status"):
        d.get(st.httpd.url(f"/rmsync/{page}"))
        b = d.find_element(By.ID, "health")
        assert b.get_attribute("data-health") == "ok" and "Healthy" in b.text
        shot(d, f"admin_health_green_{page}.png")
        no_console_errors(d)

    st.sim.app_set(CLIENT, client_secret="rotated-" + SECRET)
    st.sim.ctl("POST", "tokens/revoke")
    try:
        wait_status(st, "error", timeout=20)
        for page in ("config", "status"):
            d.get(st.httpd.url(f"/rmsync/{page}"))
            b = d.find_element(By.ID, "health")
            assert b.get_attribute("data-health") == "error"
            assert "AADSTS7000215" in b.text and "RMSyncGraphClientSecretFile" in b.text, b.text
            # the banner is styled (the stylesheet loaded under the CSP): a coloured box
            bg = b.value_of_css_property("background-color")
            assert re.match(r"rgba?\(253, 232, 230", bg), bg
            shot(d, f"admin_health_token_{page}.png")
            no_console_errors(d)
    finally:
        st.sim.app_set(CLIENT, client_secret=SECRET)
    wait_code(st, "token_failing", present=False)


def click_test(d, button):
    """Click a Test button on the configuration page; the result page reloads itself (no
    script) until the runner has carried the test out. Returns the result section's text."""
    button.click()
    WebDriverWait(d, 10, ignored_exceptions=NAV).until(
        lambda drv: re.search(r"/rmsync/test\?id=\d+$", drv.current_url))
    WebDriverWait(d, 40, ignored_exceptions=NAV).until(
        lambda drv: re.search(r"\b(passed|failed)\b",
                              drv.find_element(By.CSS_SELECTOR, "#test p").text))
    return d.find_element(By.ID, "test").text


def checks(d):
    """{check name: (result, details, fix)} from the result page's table, as shown."""
    out = {}
    for tr in d.find_elements(By.CSS_SELECTOR, "table#checks tbody tr"):
        td = [c.text for c in tr.find_elements(By.TAG_NAME, "td")]
        out[tr.get_attribute("data-check")] = (td[1], td[2], td[3])
    return out


def test_buttons_pass_and_fail(st, browser):  # noqa: F811
    """Test connection and Test mailbox from the page: passing, then failing with the fix."""
    d = browser
    st.wait_for(lambda: st.pg.val("SELECT count(*) FROM rmsync.subscription"
                                  " WHERE representative_id = 'ALICE'") in (1, "1"),
                timeout=30, what="ALICE's subscription")
    d.get(st.httpd.url("/rmsync/config"))
    text = click_test(d, d.find_element(By.CSS_SELECTOR,
                                        'button[data-action="test_connection"]'))
    assert "Test connection" in text and "passed" in text, text
    c = checks(d)
    assert set(c) == {"token", "mailbox call", "subscription handshake"}, c
    assert all(v[0] == "ok" and not v[2] for v in c.values()), c
    shot(d, "admin_health_test_connection_passed.png")
    no_console_errors(d)

    d.get(st.httpd.url("/rmsync/config"))
    text = click_test(d, rep_row(d, "ALICE").find_element(
        By.CSS_SELECTOR, 'button[data-action="test_mailbox"]'))
    assert "ALICE" in text and "passed" in text, text
    c = checks(d)
    assert set(c) == {"calendar read", "subscription", "category permission",
                      "mailbox time zone"}, c
    assert all(v[0] == "ok" for v in c.values()), c
    shot(d, "admin_health_test_mailbox_passed.png")

    # BOB's mailbox does not exist: the failing check and what to do
    st.pg.sql("INSERT INTO rmsync.rep_state (representative_id, mailbox) VALUES ('BOB', $1)"
              " ON CONFLICT (representative_id) DO UPDATE SET mailbox = EXCLUDED.mailbox", GHOST)
    d.get(st.httpd.url("/rmsync/config"))
    text = click_test(d, rep_row(d, "BOB").find_element(
        By.CSS_SELECTOR, 'button[data-action="test_mailbox"]'))
    assert "BOB" in text and "failed" in text, text
    res, detail, fix = checks(d)["calendar read"]
    assert res == "failed" and "404" in detail and "e-mail address" in fix, (res, detail, fix)
    shot(d, "admin_health_test_mailbox_failed.png")

    # the secret rotated in Entra: the token check fails and names the directive
    st.sim.app_set(CLIENT, client_secret="rotated-in-entra")
    try:
        d.get(st.httpd.url("/rmsync/config"))
        text = click_test(d, d.find_element(By.CSS_SELECTOR,
                                            'button[data-action="test_connection"]'))
        assert "failed" in text, text
        c = checks(d)
        assert c["token"][0] == "failed" and "AADSTS" in c["token"][1], c
        assert "RMSyncGraphClientSecretFile" in c["token"][2], c
        assert c["mailbox call"][0] == "failed" and "skipped" in c["mailbox call"][1], c
        shot(d, "admin_health_test_connection_failed.png")
        no_console_errors(d)
    finally:
        st.sim.app_set(CLIENT, client_secret=SECRET)
    wait_code(st, "token_failing", present=False)


def test_mailbox_not_found(st, browser):  # noqa: F811
    d = browser
    st.pg.sql("INSERT INTO rmsync.rep_state (representative_id, sync_active, mailbox)"
              " VALUES ('CAROL', true, $1) ON CONFLICT (representative_id) DO UPDATE"
              " SET sync_active = true, mailbox = $1", GHOST)
    try:
        st.wait_for(lambda: (st.rep_status("CAROL") or {}).get("error_class")
                    == "mailbox_not_found", timeout=30, what="CAROL's mailbox error")
        wait_code(st, "representative_errors")
        for page in ("config", "status"):
            d.get(st.httpd.url(f"/rmsync/{page}"))
            assert banner(d).get_attribute("data-health") == "warning"
            line = reason(d, "representative_errors")
            assert "in error" in line and "fix shown next to each" in line, line
            row = rep_row(d, "CAROL").text
            assert "Check the representative's e-mail" in row and "licensed" in row, row
            shot(d, f"admin_health_mailbox_{page}.png")
            no_console_errors(d)
    finally:
        st.pg.sql("UPDATE rmsync.rep_state SET sync_active = false"
                  " WHERE representative_id = 'CAROL'")


def test_breaker_hold(st, browser):  # noqa: F811
    d = browser
    st.pg.sql("UPDATE rmsync.rep_state SET held_by_breaker = true,"
              " held_reason = '42 Outlook deletions in one pass' WHERE representative_id = 'ALICE'")
    try:
        wait_code(st, "breaker_hold")
        d.get(st.httpd.url("/rmsync/config"))
        line = reason(d, "breaker_hold")
        assert "1 representative is held by the mass-delete breaker" in line, line
        assert "Approve" in line and "Reject" in line, line
        row = rep_row(d, "ALICE")
        assert "held" in row.text and "42 Outlook deletions in one pass" in row.text, row.text
        assert row.find_element(By.CSS_SELECTOR, 'button[data-action="approve"]').text \
            == "Approve"
        shot(d, "admin_health_breaker_config.png")
        no_console_errors(d)
    finally:
        st.pg.sql("UPDATE rmsync.rep_state SET held_by_breaker = false, held_reason = NULL"
                  " WHERE representative_id = 'ALICE'")
    wait_code(st, "breaker_hold", present=False)


def test_database_stopped(st, browser):  # noqa: F811
    d = browser
    st.wait_for(lambda: (st.rep_status("ALICE") or {}).get("state") == "ok", timeout=30,
                what="ALICE ok")
    st.pg.stop()
    try:
        wait_code(st, "db_unreachable")
        d.get(st.httpd.url("/rmsync/status"))
        assert banner(d).get_attribute("data-health") == "error"
        line = reason(d, "db_unreachable")
        assert "not reachable" in line and "unknown" in line, line
        live = d.find_element(By.ID, "live")
        cells = [td.text for td in live.find_elements(By.CSS_SELECTOR, "tbody td")]
        assert "unknown" in cells and "ok" not in cells, cells
        shot(d, "admin_health_db_status.png")
        no_console_errors(d)
        # the configuration page cannot be rendered (503), but still shows the banner
        d.get(st.httpd.url("/rmsync/config"))
        assert "not reachable" in reason(d, "db_unreachable")
        shot(d, "admin_health_db_config.png")
        errs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        assert all("status of 503" in e["message"] for e in errs), errs
    finally:
        st.pg.start()
    wait_code(st, "db_unreachable", present=False, timeout=40)
