"""Certificate credentials (client_assertion JWT, GRAPH.md 1.2)."""
import base64
import hashlib
import json
import os
import ssl
import subprocess
import time
import urllib.parse
import uuid

import pytest

from simtestlib import ALICE, TENANT

APP = "cert-client"


def b64u(b):
    return base64.urlsafe_b64encode(b).decode().rstrip("=")


def make_cert(d, kind):
    key, crt = os.path.join(d, kind + ".key"), os.path.join(d, kind + ".pem")
    newkey = ["-newkey", "rsa:2048"] if kind == "rsa" else ["-newkey", "ec", "-pkeyopt",
                                                             "ec_paramgen_curve:prime256v1"]
    subprocess.run(["openssl", "req", "-x509"] + newkey + ["-nodes", "-keyout", key, "-out", crt, "-days", "2",
                                                          "-subj", "/CN=" + kind], check=True, capture_output=True)
    return key, crt


def der_to_raw(der):
    # SEQUENCE { INTEGER r, INTEGER s } -> r||s (32 bytes each)
    i = 2
    out = b""
    for _ in range(2):
        assert der[i] == 2
        n = der[i + 1]
        out += der[i + 2:i + 2 + n].lstrip(b"\x00").rjust(32, b"\x00")
        i += 2 + n
    return out


def assertion(key, crt, alg="RS256", aud=None, iss=APP, exp_in=300, d=None):
    der = ssl.PEM_cert_to_DER_cert(open(crt).read())
    header = {"alg": alg, "typ": "JWT", "x5t#S256": b64u(hashlib.sha256(der).digest())}
    now = int(time.time())
    claims = {"aud": aud, "iss": iss, "sub": iss, "jti": str(uuid.uuid4()), "nbf": now, "iat": now,
              "exp": now + exp_in}
    si = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    data = os.path.join(d, "si.bin")
    with open(data, "w") as f:
        f.write(si)
    opts = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"] if alg == "PS256" else []
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key] + opts + [data], check=True,
                         capture_output=True).stdout
    if alg == "ES256":
        sig = der_to_raw(sig)
    return si + "." + b64u(sig)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("certs"))
    return {"rsa": make_cert(d, "rsa"), "ec": make_cert(d, "ec"), "dir": d}


@pytest.fixture
def certs(env, keys):
    rsa, ec = keys["rsa"], keys["ec"]
    env.sim.seed({"apps": [{"tenant": TENANT, "client_id": APP, "certificate": open(rsa[1]).read(),
                            "permissions": ["Calendars.ReadWrite"]},
                           {"tenant": TENANT, "client_id": APP + "-ec", "certificate": open(ec[1]).read()}]})
    return keys


def post(env, client_id, jwt, atype="urn:ietf:params:oauth:client-assertion-type:jwt-bearer"):
    form = urllib.parse.urlencode({"client_id": client_id, "scope": "https://graph.microsoft.com/.default",
                                   "grant_type": "client_credentials", "client_assertion_type": atype,
                                   "client_assertion": jwt})
    return env.sim.request("POST", "/%s/oauth2/v2.0/token" % TENANT, form,
                           {"Content-Type": "application/x-www-form-urlencoded"})


def aud(env):
    return "%s/%s/oauth2/v2.0/token" % (env.sim.authority_url, TENANT)


@pytest.mark.parametrize("alg,kind,client", [("RS256", "rsa", APP), ("PS256", "rsa", APP),
                                             ("ES256", "ec", APP + "-ec")])
def test_assertion_accepted(env, certs, alg, kind, client):
    key, crt = certs[kind]
    st, _, b = post(env, client, assertion(key, crt, alg, aud(env), iss=client, d=certs["dir"]))
    assert st == 200, b
    assert env.g("GET", "/users/%s/events" % ALICE, token=b["access_token"])[0] == 200


def test_login_microsoftonline_audience_accepted(env, certs):
    key, crt = certs["rsa"]
    jwt = assertion(key, crt, "RS256", "https://login.microsoftonline.com/%s/oauth2/v2.0/token" % TENANT,
                    d=certs["dir"])
    assert post(env, APP, jwt)[0] == 200


def test_assertion_rejections(env, certs):
    key, crt = certs["rsa"]
    ekey, ecrt = certs["ec"]
    d = certs["dir"]
    # signed by another key (EC key, but claims the RSA cert's thumbprint via the RSA app)
    st, _, b = post(env, APP, assertion(ekey, crt, "ES256", aud(env), d=d))
    assert st == 401 and b["error"] == "invalid_client" and 700027 in b["error_codes"]
    # certificate not registered on the app
    st, _, b = post(env, APP, assertion(ekey, ecrt, "ES256", aud(env), d=d))
    assert st == 401 and 700027 in b["error_codes"]
    # expired
    st, _, b = post(env, APP, assertion(key, crt, "RS256", aud(env), exp_in=-600, d=d))
    assert st == 401 and 700024 in b["error_codes"]
    # wrong audience / issuer
    st, _, b = post(env, APP, assertion(key, crt, "RS256", "https://example.com/token", d=d))
    assert st == 401
    st, _, b = post(env, APP, assertion(key, crt, "RS256", aud(env), iss="someone-else", d=d))
    assert st == 401
    # garbage and wrong assertion type
    st, _, b = post(env, APP, "not.a.jwt")
    assert st == 400 and b["error"] == "invalid_request"
    st, _, b = post(env, APP, assertion(key, crt, "RS256", aud(env), d=d), atype="bearer")
    assert st == 400
    # the cert app has no secret
    st, _, b = env.sim.token_response(TENANT, APP, "anything")
    assert st == 401 and b["error"] == "invalid_client"
