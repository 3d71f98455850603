"""The source layout rules of issue 19, checked on the tree (no Apache needed):
each file under mod_rmsync/ says in its first comment which process runs it; no core file
includes an httpd header; no file mixes worker-process and runner-process code by its own word;
every header an httpd-facing glue file exports is named mod_rmsync_*.h."""
import os
import re

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(TOP, "mod_rmsync")
PROCESS_WORDS = ("parent", "worker process", "sync runner", "every process", "both")
HTTPD_HEADER = re.compile(r'#\s*include\s*[<"](httpd|http_[a-z_]+|ap_[a-z_]+|util_[a-z_]+|mpm_[a-z_]+|mod_[a-z_]+)\.h[>"]')


def c_files():
    for d in (SRC, os.path.join(SRC, "core")):
        for name in sorted(os.listdir(d)):
            if name.endswith(".c"):
                yield os.path.join(d, name)


def first_comment(path):
    text = open(path, encoding="utf-8").read()
    m = re.match(r"\s*/\*(.*?)\*/", text, re.S)
    return " ".join(m.group(1).split()) if m else ""


def test_every_file_names_its_process():
    missing = [os.path.relpath(p, TOP) for p in c_files()
               if not any(w in first_comment(p).lower() for w in PROCESS_WORDS)]
    assert not missing, "first comment names no process: %s" % missing


def test_core_has_no_httpd_headers():
    bad = []
    for p in c_files():
        if os.sep + "core" + os.sep not in p:
            continue
        for n, line in enumerate(open(p, encoding="utf-8"), 1):
            if HTTPD_HEADER.search(line):
                bad.append("%s:%d %s" % (os.path.relpath(p, TOP), n, line.strip()))
    inc = os.path.join(TOP, "include")
    for name in os.listdir(inc):
        if name.startswith("rmsync") and name.endswith(".h"):
            for n, line in enumerate(open(os.path.join(inc, name), encoding="utf-8"), 1):
                if HTTPD_HEADER.search(line):
                    bad.append("include/%s:%d %s" % (name, n, line.strip()))
    assert not bad, "core code includes httpd headers: %s" % bad


def test_no_core_file_claims_both_worker_and_runner_work():
    # A core file used by both processes says "both"/"every process" (shared infrastructure:
    # DB, JSON, logging, shm layout); any other core file names exactly one of them.
    mixed = []
    for p in c_files():
        c = first_comment(p).lower()
        if "both" in c or "every process" in c:
            continue
        if "worker process" in c and "sync runner" in c and os.sep + "core" + os.sep in p:
            # "the intake (worker processes) stored" style cross-references are allowed when the
            # file says who runs it first: "run by X".
            m = re.search(r"run by (the sync runner|apache worker processes)", c)
            if not m:
                mixed.append(os.path.relpath(p, TOP))
    assert not mixed, "core files that name two processes: %s" % mixed
