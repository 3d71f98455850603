"""Admin POSTs through a real load balancer (issue 17): two Apache nodes with the module on one
PostgreSQL behind a third Apache running mod_proxy_balancer (lbmethod=byrequests, no sticky
sessions), RMSyncAdminOrigin = the balancer's origin. A page's token works whichever node served
the page and whichever takes the POST, also after a graceful restart of either node; a forged
token is refused; Stop/Start taken by one node acts on both runners. Each node tags its answers
with an X-RMSync-Node header (mod_headers), so the test knows which node answered."""
import re

import pytest
import requests

from lib.httpd import Httpd, MODDIR, wait_for
from test_admin import OTHERS, admin_conf

REP = "BOB"
ALLOW = OTHERS | {"RMS00712"}      # refused token (the forged-token test); origin refusals fail


@pytest.fixture(scope="module")
def stack(pg):
    lb = Httpd(name="rmsync-balancer")
    nodes = {}
    for name in ("a", "b"):
        h = Httpd(name=f"rmsync-lbnode-{name}")
        h.allow = set(ALLOW)
        h.write_conf(rmsync=admin_conf(pg, h, extra=f"RMSyncAdminOrigin {lb.base_url}"),
                     extra="\n".join([
                         f"LoadModule headers_module {MODDIR}/mod_headers.so",
                         f"Header always set X-RMSync-Node {name}"]))
        nodes[name] = h
    mods = "\n".join(f"LoadModule {m}_module {MODDIR}/mod_{m}.so" for m in
                     ("proxy", "proxy_http", "proxy_balancer", "slotmem_shm",
                      "lbmethod_byrequests"))
    lb.write_conf(rmsync="", locations=False, extra="\n".join([
        mods, "<Proxy balancer://rmsync>",
        *(f"  BalancerMember http://127.0.0.1:{h.port}" for h in nodes.values()),
        "  ProxySet lbmethod=byrequests", "</Proxy>",
        "ProxyPreserveHost On",
        "ProxyPass /rmsync/ balancer://rmsync/rmsync/",
        "ProxyPassReverse /rmsync/ balancer://rmsync/rmsync/"]))
    was_active = pg.val("SELECT sync_active FROM rmsync.rep_state WHERE representative_id = $1",
                        REP)
    made = [lb]
    try:
        for h in nodes.values():
            h.start()
            made.append(h)
        lb.start()
        for h in nodes.values():
            h.wait_for(lambda s: s["runner"]["pid"] is not None, what="runner started")
        yield lb, nodes
    finally:
        bad = []
        for h in made:
            try:
                h.stop()
                bad += h.bad_log_lines(h.allow)
            except Exception as e:
                bad.append(f"stop failed: {e}")
            finally:
                h.destroy()
        pg.sql("UPDATE rmsync.service_state SET running = true WHERE id = 1")
        pg.sql("UPDATE rmsync.rep_state SET sync_active = $2 WHERE representative_id = $1",
               REP, was_active or "f")
    assert not bad, "unexpected error log lines:\n" + "\n".join(bad)


def page_token(lb):
    """The configuration page through the balancer, its form token and the node that served it."""
    r = requests.get(lb.url("/rmsync/config"), timeout=10)
    assert r.status_code == 200, r.text
    m = re.search(r'name="token" value="([^"]+)"', r.text)
    assert m, "no token on the configuration page"
    return m.group(1), r.headers["X-RMSync-Node"]


def post(lb, data, token):
    return requests.post(lb.url("/rmsync/config"), data=dict(data, token=token),
                         headers={"Origin": lb.base_url}, allow_redirects=False, timeout=10)


def active(pg):
    return pg.val("SELECT sync_active FROM rmsync.rep_state WHERE representative_id = $1", REP)


def toggle(lb, pg, token, n):
    """n Sync Active toggles through the balancer, each 303 and in the database at once;
    returns the nodes that took them."""
    took = []
    for _ in range(n):
        want = "f" if active(pg) == "t" else "t"
        r = post(lb, {"action": "set_active", "rep": REP, "active": "1" if want == "t" else "0"},
                 token)
        assert r.status_code == 303, r.text
        assert r.headers["Location"].endswith("/rmsync/config?done=set_active")
        assert active(pg) == want
        took.append(r.headers["X-RMSync-Node"])
    return took


def test_token_works_on_either_node(stack, pg):
    """Every (node that served the page, node that took the POST) pair, the crossed ones too."""
    lb, _ = stack
    pairs = set()
    for _ in range(8):
        t, served = page_token(lb)
        pairs |= {(served, took) for took in toggle(lb, pg, t, 2)}
        if len(pairs) == 4:
            break
    assert pairs == {("a", "a"), ("a", "b"), ("b", "a"), ("b", "b")}, pairs


@pytest.mark.parametrize("name", ["a", "b"])
def test_old_token_after_graceful(stack, pg, name):
    """A page opened before a graceful restart of node <name> still posts, on both nodes."""
    lb, nodes = stack
    h = nodes[name]
    t, _ = page_token(lb)
    gen = h.status()["generation"]
    h.graceful()
    h.wait_for(lambda s: s["generation"] != gen and s["runner"]["pid"] is not None,
               what=f"node {name}: new generation")
    took = toggle(lb, pg, t, 4)
    assert set(took) == {"a", "b"}, f"the POSTs were not spread: {took}"


def test_forged_token_refused(stack, pg):
    lb, _ = stack
    t, _ = page_token(lb)
    before = active(pg)
    forged = [("0" * len(t)), t[:-1] + ("0" if t[-1] != "0" else "1"), ""]
    seen = set()
    for f in forged + forged:
        r = post(lb, {"action": "set_active", "rep": REP, "active": "0" if before == "t" else "1"},
                 f)
        assert r.status_code == 403 and "form token" in r.text, r.text
        seen.add(r.headers["X-RMSync-Node"])
    assert seen == {"a", "b"}
    assert active(pg) == before


def test_stop_start_through_balancer(stack, pg):
    lb, nodes = stack
    t, _ = page_token(lb)
    try:
        r = post(lb, {"action": "stop", "confirm": "1"}, t)
        assert r.status_code == 303, r.text
        assert pg.val("SELECT running FROM rmsync.service_state WHERE id = 1") == "f"
        for name, h in nodes.items():
            h.wait_for(lambda s: "stopped" in (s["runner"]["activity"] or ""),
                       what=f"node {name}'s runner stopped")
        r = post(lb, {"action": "start"}, t)
        assert r.status_code == 303, r.text
        assert pg.val("SELECT running FROM rmsync.service_state WHERE id = 1") == "t"
        for name, h in nodes.items():
            h.wait_for(lambda s: s["runner"]["alive"]
                       and "stopped" not in (s["runner"]["activity"] or ""),
                       what=f"node {name}'s runner running again")
    finally:
        pg.sql("UPDATE rmsync.service_state SET running = true WHERE id = 1")
