"""Configuration hygiene: an RMSync* directive given twice is an error at configtest that names
both places (before, the second silently won)."""
import re

import pytest

CASES = [
    ("RMSyncSyncCycle", "RMSyncSyncCycle 60", "RMSyncSyncCycle 120"),
    ("RMSyncGraphTenant", "RMSyncGraphTenant t1", "RMSyncGraphTenant t1"),       # even the same value
    ("RMSyncGraphTimeouts", "RMSyncGraphTimeouts 5 30", "RMSyncGraphTimeouts 5 60"),
    ("RMSyncTransferAttendees", "RMSyncTransferAttendees On", "RMSyncTransferAttendees Off"),
    ("RMSyncMasterCategory", 'RMSyncMasterCategory "A"', 'RMSyncMasterCategory "B" preset1'),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_directive_twice_names_both_lines(httpd, case):
    name, first, second = case
    h = httpd()
    h.write_conf(rmsync="\n".join([first, "RMSyncMaxBodySize 512K", "", second]))
    rc, out = h.configtest()
    assert rc != 0, out
    assert "Syntax OK" not in out
    with open(h.conf) as f:
        lines = f.read().splitlines()
    n1 = lines.index(first) + 1
    n2 = len(lines) - lines[::-1].index(second)
    assert n1 < n2
    m = re.search(rf"{name} is given twice: first on line (\d+) of (\S+), again on line (\d+)", out)
    assert m, out
    assert (int(m.group(1)), int(m.group(3))) == (n1, n2), out
    assert m.group(2) == h.conf, out
    assert f"line {n2}" in out   # Apache's own prefix points at the second one too


def test_directive_twice_across_included_files(httpd):
    h = httpd()
    inc = h.write_file("extra.conf", "# extra\nRMSyncLogLevel debug\n")
    h.write_conf(rmsync=f"RMSyncLogLevel info\nInclude {inc}")
    rc, out = h.configtest()
    assert rc != 0, out
    assert "RMSyncLogLevel is given twice" in out, out
    assert f"again on line 2 of {inc}" in out, out
    assert f"of {h.conf}" in out, out


def test_each_directive_once_is_fine(httpd):
    h = httpd()
    h.write_conf(rmsync="RMSyncSyncCycle 60\nRMSyncLogLevel debug\nRMSyncMaxBodySize 512K")
    rc, out = h.configtest()
    assert rc == 0 and "Syntax OK" in out, out


def test_list_directive_takes_several_values_on_one_line_but_not_two_lines(httpd):
    # RMSyncAdminOrigin is a list (AP_INIT_ITERATE: one call per value on the same line).
    h = httpd()
    h.write_conf(rmsync="RMSyncAdminOrigin https://crm.example https://crm2.example:8443")
    rc, out = h.configtest()
    assert rc == 0 and "Syntax OK" in out, out
    h.write_conf(rmsync="RMSyncAdminOrigin https://crm.example\nRMSyncAdminOrigin https://crm2.example")
    rc, out = h.configtest()
    assert rc != 0 and "RMSyncAdminOrigin is given twice" in out, out
