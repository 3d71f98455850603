"""The health banner in a real browser (headless Chromium, like tests/test_admin_browser.py) with
the real runner and the Graph simulator: all green, then the client secret rotated in Entra
(simulator). Screenshots tests/out/admin_health_{green,token}_{config,status}.png; no console
error (CSP)."""
import re
import time

import pytest

from engine_stack import CLIENT, SECRET, EngineStack
from test_admin import OTHERS
from test_admin_browser import browser, shot  # noqa: F401  (the fixture)

By = pytest.importorskip("selenium.webdriver.common.by").By


@pytest.fixture(scope="module")
def st():
    s = EngineStack(cycle=1, active=("ALICE",))
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


def no_console_errors(d):
    errs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert not errs, errs


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
