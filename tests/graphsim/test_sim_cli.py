import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request

from simclient import PYTHON, GraphSim

HERE = os.path.dirname(os.path.abspath(__file__))


def test_cli_demo_seed_ready_file_tls_and_sigterm(tmp_path):
    d = tmp_path / "state"
    ready = tmp_path / "ready.json"
    p = subprocess.Popen([PYTHON, os.path.join(HERE, "graphsim.py"), "--host", "127.0.0.1", "--port", "0",
                          "--state-dir", str(d), "--seed", os.path.join(HERE, "demo-seed.json"),
                          "--ready-file", str(ready)], stderr=subprocess.PIPE)
    try:
        for _ in range(200):
            if ready.exists() or p.poll() is not None:
                break
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert set(info) >= {"port", "base_url", "graph_url", "authority_url", "ca_file", "pid"}
        assert info["pid"] == p.pid and info["port"] > 0
        assert info["graph_url"] == info["base_url"] + "/v1.0"
        assert info["ca_file"] == str(d / "ca.pem")
        # the certificate verifies for 127.0.0.1 and localhost against ca.pem
        ctx = ssl.create_default_context(cafile=info["ca_file"])
        for host in ("127.0.0.1", "localhost"):
            with urllib.request.urlopen("https://%s:%d/_sim/health" % (host, info["port"]), context=ctx) as r:
                assert json.load(r)["ok"] is True
        sim = GraphSim.attach(str(ready))
        tok = sim.token("rmsync-demo-tenant", "rmsync-demo-client", "demo-secret-change-me")
        for who in ("alice", "bob", "carol"):
            st, _, b = sim.graph("GET", "/users/%s@demo.rmsync.test/events" % who, token=tok)
            assert st == 200 and b["value"], who
        st, _, b = sim.graph("GET", "/users/alice@demo.rmsync.test/outlook/masterCategories", token=tok)
        assert st == 200
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        assert not ready.exists(), "ready file removed on clean shutdown"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stderr.close()


def test_restart_reuses_ca_and_random_seed_reproduces_ids(tmp_path):
    ids, cas = [], []
    for i in range(2):
        with GraphSim(state_dir=str(tmp_path), extra_args=["--random-seed", "7"]) as s:
            cas.append(open(s.ca_file).read())
            u = s.user_add("x@sim.test")
            e = s.user_create("x@sim.test", {"subject": "s", "start": {"dateTime": "2030-01-01T10:00:00"},
                                             "end": {"dateTime": "2030-01-01T11:00:00"}})
            ids.append((u["id"], e["immutableId"], e["restId"], e["changeKey"]))
    assert ids[0] == ids[1]
    assert cas[0] == cas[1], "a restart in the same state dir keeps the CA"
