"""Certificate credentials: verification of a client_assertion JWT (GRAPH.md 1.2) with the openssl CLI."""
import base64
import hashlib
import json
import os
import ssl
import subprocess
import tempfile
import time

from simcore import OAuthError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLOCK_SKEW_S = 300


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


class AppCert:
    """A certificate registered on an app: thumbprints and public key."""

    def __init__(self, pem):
        der = ssl.PEM_cert_to_DER_cert(pem)
        self.pem = pem
        self.x5t = b64url(hashlib.sha1(der).digest())
        self.x5t_s256 = b64url(hashlib.sha256(der).digest())
        r = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=pem, capture_output=True, text=True)
        if r.returncode != 0:
            raise ValueError("not a certificate: %s" % r.stderr.strip())
        self.pubkey_pem = r.stdout


def _der_int(b):
    b = b.lstrip(b"\x00") or b"\x00"
    if b[0] & 0x80:
        b = b"\x00" + b
    return b"\x02" + bytes([len(b)]) + b


def _ecdsa_raw_to_der(sig):
    half = len(sig) // 2
    body = _der_int(sig[:half]) + _der_int(sig[half:])
    return b"\x30" + bytes([len(body)]) + body


def _openssl_verify(pubkey_pem, alg, signing_input, sig):
    opts = []
    if alg == "PS256":
        opts = ["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]
    elif alg == "ES256":
        if len(sig) != 64:
            return False
        sig = _ecdsa_raw_to_der(sig)
    with tempfile.TemporaryDirectory(prefix="graphsim-jwt-") as d:
        paths = {}
        for name, data in (("pub.pem", pubkey_pem.encode()), ("sig.bin", sig), ("data.bin", signing_input)):
            paths[name] = os.path.join(d, name)
            with open(paths[name], "wb") as f:
                f.write(data)
        r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", paths["pub.pem"], "-signature",
                            paths["sig.bin"]] + opts + [paths["data.bin"]], capture_output=True)
        return r.returncode == 0


def _bad(code, msg, status=401, error="invalid_client"):
    return OAuthError(status, error, code, "AADSTS%d: %s" % (code, msg))


def verify_assertion(cert, client_id, assertion_type, assertion, audiences):
    """Raise OAuthError unless `assertion` is a valid client assertion for the app."""
    if assertion_type != ASSERTION_TYPE:
        raise _bad(50027, "Invalid client_assertion_type '%s'." % assertion_type, 400, "invalid_request")
    parts = (assertion or "").split(".")
    try:
        if len(parts) != 3:
            raise ValueError
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
    except ValueError:
        raise _bad(50027, "JWT token is invalid or malformed.", 400, "invalid_request")
    if cert is None:
        raise _bad(700027, "Client assertion failed signature validation. [Reason - The key was not found.] "
                   "(no certificate registered for app '%s')" % client_id)
    alg = header.get("alg")
    if alg not in ("RS256", "PS256", "ES256"):
        raise _bad(5002738, "Invalid JWT token. '%s' is not a supported signature algorithm." % alg)
    tp = header.get("x5t#S256") or header.get("x5t")
    if tp not in (cert.x5t_s256, cert.x5t):
        raise _bad(700027, "Client assertion contains an invalid signature. [Reason - The key was not found., "
                   "Thumbprint of key used by client: '%s']" % tp)
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise _bad(700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
    if claims.get("aud") not in audiences:
        raise _bad(700022, "The audience claim '%s' is not valid; expected the token endpoint." % claims.get("aud"))
    if not claims.get("jti"):
        raise _bad(50027, "JWT token is invalid or malformed (jti missing).", 400, "invalid_request")
    t = time.time()
    exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat"))
    if not isinstance(exp, (int, float)) or exp < t - CLOCK_SKEW_S or \
            (isinstance(nbf, (int, float)) and nbf > t + CLOCK_SKEW_S):
        raise _bad(700024, "Client assertion is not within its valid time range.")
    if not _openssl_verify(cert.pubkey_pem, alg, (parts[0] + "." + parts[1]).encode(), sig):
        raise _bad(700027, "Client assertion failed signature validation.")
