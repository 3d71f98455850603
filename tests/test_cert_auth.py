"""Certificate credentials (RMSyncGraphClientCertificate): the token request carries a client
assertion JWT signed with the configured key; the Graph simulator verifies it (simauth.py).
Configtest rules (one credential, key file permissions, key belongs to the certificate), the
startup warning for an expired certificate, a wrong key refused with a clear log line, and a
real sync with a certificate."""
import os
import subprocess

import pytest

from engine_stack import ALICE, CLIENT, TENANT, EngineStack


def make_cert(d, name, days=365, start=None, end=None):
    """A self-signed RSA certificate and its key (0600) in d; start/end (YYYYMMDDHHMMSSZ) make
    one with fixed dates, e.g. already expired."""
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".pem")
    if start is None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", crt, "-days", str(days), "-subj", "/CN=rmsync-" + name],
                       check=True, capture_output=True)
    else:
        ca = os.path.join(d, name + "-ca")
        os.makedirs(ca)
        open(os.path.join(ca, "index.txt"), "w").close()
        with open(os.path.join(ca, "serial"), "w") as f:
            f.write("01\n")
        cnf = os.path.join(ca, "ca.cnf")
        with open(cnf, "w") as f:
            f.write(f"[ca]\ndefault_ca=d\n[d]\ndatabase={ca}/index.txt\nnew_certs_dir={ca}\n"
                    f"serial={ca}/serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n")
        csr = os.path.join(ca, "req.csr")
        subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                        "-out", csr, "-subj", "/CN=rmsync-" + name], check=True, capture_output=True)
        subprocess.run(["openssl", "ca", "-batch", "-config", cnf, "-selfsign", "-keyfile", key,
                        "-in", csr, "-out", crt, "-notext", "-startdate", start, "-enddate", end],
                       check=True, capture_output=True)
    os.chmod(key, 0o600)
    os.chmod(crt, 0o644)
    return crt, key


# ---------------------------------------------------------------------------- configtest

def graph_lines(cred):
    return "\n".join(["RMSyncGraphTenant rmsync-demo-tenant", "RMSyncGraphClientId rmsync-demo-client",
                      cred])


def test_configtest_accepts_certificate(httpd):
    h = httpd()
    crt, key = make_cert(h.dir, "good")
    h.write_conf(rmsync=graph_lines(f"RMSyncGraphClientCertificate {crt} {key}"))
    rc, out = h.configtest()
    assert rc == 0, out
    assert "Syntax OK" in out
    assert "PRIVATE KEY" not in out


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_configtest_refuses_key_readable_by_others(httpd, mode):
    h = httpd()
    crt, key = make_cert(h.dir, "open")
    os.chmod(key, mode)
    h.write_conf(rmsync=graph_lines(f"RMSyncGraphClientCertificate {crt} {key}"))
    rc, out = h.configtest()
    assert rc != 0, out
    assert "RMSyncGraphClientCertificate" in out and "too open" in out, out
    assert "%04o" % mode in out, out
    assert "Syntax OK" not in out


def test_configtest_refuses_secret_and_certificate(httpd):
    h = httpd()
    crt, key = make_cert(h.dir, "both")
    secret = h.write_file("secret.txt", "demo-secret-change-me\n", 0o600)
    h.write_conf(rmsync=graph_lines(f"RMSyncGraphClientCertificate {crt} {key}\n"
                                    f"RMSyncGraphClientSecretFile {secret}"))
    rc, out = h.configtest()
    assert rc != 0, out
    assert "RMSyncGraphClientSecretFile and RMSyncGraphClientCertificate are both set" in out, out
    assert "demo-secret-change-me" not in out


def test_configtest_refuses_key_of_another_certificate(httpd):
    h = httpd()
    crt, _ = make_cert(h.dir, "one")
    _, key2 = make_cert(h.dir, "two")
    h.write_conf(rmsync=graph_lines(f"RMSyncGraphClientCertificate {crt} {key2}"))
    rc, out = h.configtest()
    assert rc != 0, out
    assert "RMSyncGraphClientCertificate" in out and "does not belong" in out, out


def test_configtest_refuses_missing_files_and_non_pem(httpd):
    h = httpd()
    crt, key = make_cert(h.dir, "x")
    junk = h.write_file("junk.pem", "not a certificate\n")
    for line, text in [(f"RMSyncGraphClientCertificate {h.dir}/none.pem {key}", "none.pem"),
                       (f"RMSyncGraphClientCertificate {junk} {key}", "not a PEM file"),
                       (f"RMSyncGraphClientCertificate {crt}", "two arguments")]:
        h.write_conf(rmsync=graph_lines(line))
        rc, out = h.configtest()
        assert rc != 0, out
        assert "RMSyncGraphClientCertificate" in out and text in out, out


def test_expired_certificate_warned_at_startup(httpd):
    h = httpd()
    crt, key = make_cert(h.dir, "old", start="20200101000000Z", end="20200201000000Z")
    h.allow = {"RMS00006", "RMS00003"}
    h.write_conf(rmsync=graph_lines(f"RMSyncGraphClientCertificate {crt} {key}"))
    h.start()
    line = h.wait_log(r"RMS00006")
    assert "RMSyncGraphClientCertificate" in line and "expired" in line and "2020" in line, line


def test_certificate_expiring_soon_warned(httpd):
    h = httpd()
    crt, key = make_cert(h.dir, "soon", days=10)
    h.allow = {"RMS00007", "RMS00003"}
    h.write_conf(rmsync=graph_lines(f"RMSyncGraphClientCertificate {crt} {key}"))
    h.start()
    line = h.wait_log(r"RMS00007")
    assert "expires on" in line and "RMSyncGraphClientCertificate" in line, line


# ---------------------------------------------------------------------------- against the simulator

class CertStack(EngineStack):
    """The engine stack with certificate credentials: Apache gets cert/key, the simulator's app
    has only `registered` (a certificate, no secret)."""

    def __init__(self, d, cert, key, registered):
        self.cert, self.key = cert, key
        super().__init__(active=())
        with open(registered) as f:
            self.sim.seed({"apps": [{"tenant": TENANT, "client_id": CLIENT, "certificate": f.read(),
                                     "permissions": ["Calendars.ReadWrite",
                                                     "MailboxSettings.ReadWrite"]}]})
        self.httpd.allow = {"RMS00003"}     # no notification URL: delta passes only
        self.set_active("ALICE")

    def conf(self, extra=None):
        return super().conf(extra).replace(
            f"RMSyncGraphClientSecretFile {self.secret_file}",
            f"RMSyncGraphClientCertificate {self.cert} {self.key}")


@pytest.fixture
def certdir(tmp_path):
    os.chmod(tmp_path, 0o755)
    return str(tmp_path)


def test_token_by_certificate_and_a_real_sync(certdir):
    crt, key = make_cert(certdir, "app")
    st = CertStack(certdir, crt, key, crt)
    try:
        assert "RMSyncGraphClientCertificate" in st.conf()
        st.wait_pass("ALICE", timeout=60)
        # the simulator's app has a certificate and no secret: tokens came from assertions
        apps = st.sim.request("GET", "/_sim/apps")[2]
        apps = apps.get("value", apps) if isinstance(apps, dict) else apps
        app = [a for a in apps if a.get("client_id") == CLIENT][0]
        assert app.get("certificate_x5t#S256") and not app.get("client_secret"), app
        # an appointment linked in the CRM, then changed in Outlook, reaches the activity
        no, ev = st.new_linked(ALICE, "Cert sync", day=2)
        st.sim.user_patch(ALICE, ev["id"], {"subject": "Cert sync, moved"})
        st.wait_for(lambda: "Cert sync, moved" in (st.activity(no)["description"] or ""),
                    timeout=60, what="the Outlook change in the activity")
    finally:
        bad = st.close()
    assert not bad, "\n".join(bad)


def test_wrong_key_is_refused_with_a_clear_log_line(certdir):
    registered, _ = make_cert(certdir, "registered")
    crt, key = make_cert(certdir, "other")
    st = CertStack(certdir, crt, key, registered)
    try:
        st.httpd.allow |= {"RMS00306"}
        line = st.httpd.wait_log(r"RMS00306", timeout=60)
        assert "RMSyncGraphClientCertificate" in line, line
        assert "certificate not accepted" in line and "AADSTS700027" in line, line
        assert "HTTP 401" in line, line
        thumb = subprocess.run(["openssl", "x509", "-in", crt, "-noout", "-fingerprint", "-sha1"],
                               capture_output=True, text=True, check=True).stdout
        assert thumb.split("=", 1)[1].strip().replace(":", "") in line, line
    finally:
        bad = st.close()
    assert not bad, "\n".join(bad)
