"""The admin pages' origin and CSRF secret (issues 12 and 17): POSTs are checked against the
configured admin origin (RMSyncAdminOrigin, default ServerName's and loopback's), not against the
client's Host header, so a DNS-rebinding request is refused; a proxy's public origin works; the
CSRF secret lives in the database, so two Apache instances on one database accept each other's
tokens."""
import requests

from test_admin import OTHERS, admin_conf

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def tok(h):
    r = requests.get(h.url("/rmsync/config?format=json"), timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["csrf_token"]


def post(h, t, headers):
    hd = dict(FORM)
    hd.update(headers)
    return requests.post(h.url("/rmsync/config"),
                         data={"action": "set_active", "rep": "BOB", "active": "0", "token": t},
                         headers=hd, allow_redirects=False, timeout=10)


def test_dns_rebinding_refused(httpd, pg):
    h = httpd(name="rmsync-origin-default")
    h.allow |= OTHERS | {"RMS00711"}
    h.write_conf(rmsync=admin_conf(pg, h))
    h.start()
    t = tok(h)
    evil = f"evil.example:{h.port}"
    r = post(h, t, {"Host": evil, "Origin": f"http://{evil}"})
    assert r.status_code == 403, r.text
    assert "admin origin" in r.text
    # a foreign Origin with our Host, and our Origin with a foreign Host: refused too
    assert post(h, t, {"Origin": f"http://{evil}"}).status_code == 403
    assert post(h, t, {"Host": evil, "Origin": h.base_url}).status_code == 403
    # the normal request, and the loopback name forms
    assert post(h, t, {"Origin": h.base_url}).status_code == 303
    lh = f"localhost:{h.port}"
    assert post(h, t, {"Host": lh, "Origin": f"http://{lh}"}).status_code == 303


def test_proxy_origin(httpd, pg):
    """Behind a TLS-terminating proxy: RMSyncAdminOrigin https://crm.example."""
    h = httpd(name="rmsync-origin-proxy")
    h.allow |= OTHERS | {"RMS00711", "RMS00712"}
    h.write_conf(rmsync=admin_conf(pg, h, extra="RMSyncAdminOrigin https://crm.example"))
    h.start()
    t = tok(h)
    # ProxyPreserveHost On and Off
    assert post(h, t, {"Host": "crm.example", "Origin": "https://crm.example"}).status_code == 303
    assert post(h, t, {"Origin": "https://crm.example"}).status_code == 303
    assert post(h, t, {"Origin": None, "Referer": "https://crm.example/rmsync/config"}
                ).status_code == 303
    # the direct origin is no longer an admin origin; nor is plain http
    assert post(h, t, {"Origin": h.base_url}).status_code == 403
    assert post(h, t, {"Host": "crm.example", "Origin": "http://crm.example"}).status_code == 403


def test_two_nodes_share_the_token(httpd, pg):
    """Two instances on one database behind a (simulated) load balancer: the token of a page
    served by one is accepted by the other, also after a graceful restart of either."""
    nodes = []
    for i in range(2):
        h = httpd(name=f"rmsync-node{i}")
        h.allow |= OTHERS | {"RMS00712"}
        h.write_conf(rmsync=admin_conf(pg, h, extra="RMSyncAdminOrigin http://lb.example"))
        h.start()
        nodes.append(h)
    a, b = nodes
    lb = {"Host": "lb.example", "Origin": "http://lb.example"}
    t = tok(a)
    assert tok(b) == t
    assert post(b, t, lb).status_code == 303
    assert post(a, tok(b), lb).status_code == 303
    gen = b.status()["generation"]
    b.graceful()
    b.wait_for(lambda s: s["generation"] != gen, what="new generation")
    assert post(b, t, lb).status_code == 303
    assert post(b, "0" * 40, lb).status_code == 403
