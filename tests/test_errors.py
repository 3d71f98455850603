"""The error table: every error class the code can emit (mod_rmsync/core/rmsync_errors.c, the
one C table the pages use) has its row in docs/admin.md ("Errors and their fix") with the same
reason and fix, every row of the docs is a class of the code, and every RMSync directive a fix
names exists (README's directive table). tests/unit/test_health.c checks that every Graph and
transport status the engine reports lands in a class other than "unknown"."""
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "tools"))
import errtable  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def doc_rows():
    doc = open(os.path.join(ROOT, "docs", "admin.md"), encoding="utf-8").read()
    part = doc[doc.index(errtable.BEGIN):doc.index(errtable.END)]
    return {m.group(1): line for line in part.splitlines()
            for m in [re.match(r"\| `([a-z0-9_]+)` \|", line)] if m}


def test_every_class_documented():
    classes = errtable.classes()
    assert len(classes) > 20
    codes = [c[0] for c in classes]
    assert len(codes) == len(set(codes)), "duplicate error class codes"
    assert codes[-1] == "unknown", "the last class is the catch-all"
    rows = doc_rows()
    missing = [c for c in codes if c not in rows]
    assert not missing, f"error classes without a row in docs/admin.md: {missing} " \
                        "(run tests/tools/errtable.py --write)"
    stale = [c for c in rows if c not in codes]
    assert not stale, f"docs/admin.md lists classes the code does not have: {stale}"
    for code, match, reason, fix in classes:
        assert reason and fix, code
        assert reason in rows[code] and fix in rows[code], \
            f"{code}: docs differ from the C table (run tests/tools/errtable.py --write)"


def test_generated_table_is_current():
    doc = open(os.path.join(ROOT, "docs", "admin.md"), encoding="utf-8").read()
    assert errtable.table() in doc


def test_directives_in_fixes_exist():
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    known = set(re.findall(r"^\| `(RMSync[A-Za-z]+)", readme, flags=re.M))
    for code, _m, reason, fix in errtable.classes():
        for d in re.findall(r"RMSync[A-Za-z]+", reason + " " + fix):
            assert d in known, f"{code}: names {d}, which is no directive"


def test_health_codes_documented():
    src = open(os.path.join(ROOT, "mod_rmsync", "core", "rmsync_health.c")).read()
    block = src[src.index("rmsync_health_codes[] = {"):]
    block = block[:block.index("};")]
    codes = re.findall(r'"([a-z_]+)"', block)
    doc = open(os.path.join(ROOT, "docs", "admin.md"), encoding="utf-8").read()
    for c in codes:
        assert f"`{c}`" in doc, f"health reason {c} not in docs/admin.md"
