"""Log message ids (issue 19): each RMSYNC_LOGNO(nnnnn) names one place in the source, and
docs/log-ids.md lists them all. No Apache needed."""
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(TESTS, "tools"))

import logids  # noqa: E402


def test_log_ids_found():
    # the scanner sees the module's ids (a broken regex would make the other tests vacuous)
    found = logids.uses()
    assert len(found) > 50
    assert {u[0] for u in found} >= {"00001", "00033"}


def test_each_log_id_used_once():
    dups = logids.duplicates()
    assert not dups, "log ids used at more than one place:\n" + "\n".join(
        f"RMS{k}: {', '.join(v)}" for k, v in dups.items())


def test_log_id_table_in_step():
    assert logids.doc_text() == logids.table(), (
        "docs/log-ids.md is out of step with the source: run python3 tests/tools/logids.py --write")
