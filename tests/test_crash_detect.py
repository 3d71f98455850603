"""Issue 17: the harness sees a crash. httpd logs a worker killed by a signal at notice level
(AH00052 "exit signal"), which the [warn]-and-worse filter used to let through; crash lines and
AddressSanitizer report files now fail the test during which they appear."""
import os
import signal

from lib.httpd import Httpd, wait_for


def test_worker_segfault_is_reported(httpd):
    h = httpd()
    h.write_conf()
    h.start()
    assert h.get("/rmsync/status.json").status_code == 200
    workers = [p for p, (_, comm) in h.children().items() if comm == "apache2"]
    assert workers, h.children()
    os.kill(workers[0], signal.SIGSEGV)
    line = h.wait_log(r"exit signal Segmentation fault")
    # both checks report it: the per-test one (conftest's no_crash) and the end-of-test one
    assert line in h.crash_lines()
    assert line in h.bad_log_lines()
    # allowing the id on purpose is possible (a test that crashes a child deliberately)
    assert line not in h.bad_log_lines(allow={"AH00052"})
    # and Apache serves on (a new child): the crash was provoked here, not a failure
    wait_for(lambda: h.get("/rmsync/status.json").status_code == 200, what="status after the crash")
    h.mark_checked()


def test_asan_report_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("ASAN_OPTIONS", f"detect_leaks=0:log_path={tmp_path}/asan")
    old = tmp_path / "asan.111"
    old.write_text("==111==ERROR: AddressSanitizer: from an earlier test\n")
    h = Httpd(name="rmsync-asan-check")   # not started: only the report check is exercised
    try:
        assert h.bad_log_lines() == []    # reports from before the instance are not its own
        (tmp_path / "asan.222").write_text(
            "=================================================================\n"
            "==222==ERROR: AddressSanitizer: heap-use-after-free on address 0x6020\n")
        bad = h.crash_lines()
        assert len(bad) == 1 and "asan.222" in bad[0] and "heap-use-after-free" in bad[0], bad
        assert h.bad_log_lines() == []    # reported once
    finally:
        h.destroy()


def test_ubsan_report_is_reported(tmp_path, monkeypatch):
    """UBSan reports count too: a report file under UBSAN_OPTIONS log_path (clang; GCC's UBSan
    alone), or a "runtime error:" line in the error log (GCC's ASan+UBSan writes to stderr)."""
    monkeypatch.setenv("UBSAN_OPTIONS", f"print_stacktrace=1:log_path={tmp_path}/ubsan")
    h = Httpd(name="rmsync-ubsan-check")   # not started: only the checks are exercised
    try:
        assert h.crash_lines() == []
        (tmp_path / "ubsan.333").write_text(
            "mod_rmsync/core/x.c:12:5: runtime error: signed integer overflow\n")
        bad = h.crash_lines()
        assert len(bad) == 1 and "ubsan.333" in bad[0] and "signed integer overflow" in bad[0], bad
        os.makedirs(os.path.dirname(h.error_log), exist_ok=True)
        with open(h.error_log, "a") as f:
            f.write("mod_rmsync/core/y.c:7:3: runtime error: load of misaligned address\n")
        bad = h.crash_lines()
        assert len(bad) == 1 and "misaligned" in bad[0], bad
    finally:
        h.destroy()
