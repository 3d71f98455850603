"""Issue 16: rebuilding while Apache runs leaves it serving. apxs-build.sh replaces
build/mod_rmsync.so by rename, so the running httpd keeps the inode it mapped; a copy over the
file in place (cp -f) rewrote the mapped pages and crashed the children (AH00052 exit signal).

The rebuild runs in a copy of the tree (objects included, so it is a relink of the glue, not a
full build): the tree's own build/ is left alone while other tests use it."""
import os
import subprocess
import tarfile
import tempfile

import pytest

from lib.httpd import TOP, wait_for


def _build_flags(tree):
    """apxs-build.sh flags that match the build already in the tree (no full rebuild)."""
    try:
        with open(os.path.join(tree, "build", ".flags")) as f:
            sig = f.read()
    except OSError:
        return [], {}
    flags = [f for f, mark in (("--werror", "-Werror"), ("--asan", "-fsanitize=address"))
             if mark in sig]
    return flags, {"CC": sig.split()[0]} if sig.split() else {}


@pytest.fixture
def tree():
    d = tempfile.mkdtemp(prefix="rmsync-rebuild-")
    # the work tree with its build products (not .git): tar keeps mtimes, so nothing is stale
    with tarfile.open(os.path.join(d, "t.tar"), "w") as t:
        t.add(TOP, arcname="src", filter=lambda i: None if i.name.endswith("/.git")
              or "/.git/" in i.name or i.name.startswith("src/tests/out") else i)
    with tarfile.open(os.path.join(d, "t.tar")) as t:
        t.extractall(d)
    os.unlink(os.path.join(d, "t.tar"))
    os.chmod(d, 0o755)
    yield os.path.join(d, "src")
    subprocess.run(["rm", "-rf", d], check=False)


def test_rebuild_while_running_keeps_serving(tree, httpd):   # tree outlives httpd
    so = os.path.join(tree, "build", "mod_rmsync.so")
    assert os.path.exists(so), "build the tree first (./apxs-build.sh)"
    h = httpd(module=so)
    h.write_conf()
    h.start()
    assert h.get("/rmsync/status.json").status_code == 200
    before = os.stat(so).st_ino

    # a glue source newer than its objects: apxs recompiles it and relinks the module
    os.utime(os.path.join(tree, "mod_rmsync", "mod_rmsync.c"))
    flags, env = _build_flags(tree)
    r = subprocess.run([os.path.join(tree, "apxs-build.sh")] + flags, cwd=tree,
                       env={**os.environ, **env}, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600)
    assert r.returncode == 0, r.stdout
    assert os.stat(so).st_ino != before, "the module file was rewritten in place, not renamed"

    # the running children (and every new one the parent forks) still serve: status page and
    # the webhook's validation handshake, many times over so several children answer
    for i in range(40):
        assert h.get("/rmsync/status.json").status_code == 200
        tok = f"rebuild-{i}"
        p = h.post(f"/rmsync/notify?validationToken={tok}")
        assert p.status_code == 200 and p.text == tok
    assert not h.crash_lines(), "Apache crashed after the rebuild"
    # and a graceful restart picks up the new file
    h.graceful()
    wait_for(lambda: h.get("/rmsync/status.json").status_code == 200, timeout=30,
             what="status after graceful")
    assert not h.crash_lines()
