#!/usr/bin/env python3
"""The module's log message ids: every RMSYNC_LOGNO(nnnnn) under mod_rmsync/ and docs/log-ids.md.

    python3 tests/tools/logids.py            # print the table
    python3 tests/tools/logids.py --write    # regenerate docs/log-ids.md
    python3 tests/tools/logids.py --check    # exit 1 when an id is used twice or the doc is stale

An id names one place in the source (like httpd's AHnnnnn), so an admin can grep for it and
tests can allow a line by its id. tests/test_logids.py runs the checks.
"""
import os
import re
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(TOP, "mod_rmsync")
DOC = os.path.join(TOP, "docs", "log-ids.md")

LOGNO_RE = re.compile(r"RMSYNC_LOGNO\((\d{5})\)")
LEVEL_RE = re.compile(r"\b(?:APLOG|RMSYNC_LOG)_([A-Z]+)\b")
STR_RE = re.compile(r'\s*"((?:[^"\\]|\\.)*)"')
FMT_RE = re.compile(r"\s*(APR_\w+_FMT|PRI\w+)\b")   # "%" APR_INT64_T_FMT: shown as %d
LEVELS = {"EMERG": "emerg", "ALERT": "alert", "CRIT": "crit", "ERR": "error",
          "WARNING": "warn", "NOTICE": "notice", "INFO": "info", "DEBUG": "debug"}
MSG_LEN = 70


def _strip_comments(text):
    """Comments blanked out (same length, so offsets and line numbers stay), strings kept."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def uses(src=SRC):
    """[(id, level, file relative to mod_rmsync/, line, message start)] in source order."""
    found = []
    for d, _, files in sorted(os.walk(src)):
        for fn in sorted(files):
            if not fn.endswith((".c", ".h")):
                continue
            path = os.path.join(d, fn)
            with open(path, errors="replace") as f:
                text = _strip_comments(f.read())
            for m in LOGNO_RE.finditer(text):
                # the level: the last APLOG_x / RMSYNC_LOG_x of the statement before the id
                stmt_start = max(text.rfind(ch, 0, m.start()) for ch in ";{}") + 1
                levels = LEVEL_RE.findall(text, stmt_start, m.start())
                level = LEVELS.get(levels[-1], levels[-1].lower()) if levels else "varies"
                # the message: the string literals right after the id, joined as C joins them
                pos, parts = m.end(), []
                while True:
                    s = STR_RE.match(text, pos)
                    if s:
                        parts.append(s.group(1))
                    elif parts and FMT_RE.match(text, pos):
                        s = FMT_RE.match(text, pos)
                        parts.append("d")
                    else:
                        break
                    pos = s.end()
                msg = "".join(parts).replace('\\"', '"').replace("\\n", " ").strip()
                if len(msg) > MSG_LEN:
                    msg = msg[:MSG_LEN].rstrip() + "..."
                line = text.count("\n", 0, m.start()) + 1
                found.append((m.group(1), level, os.path.relpath(path, src), line, msg))
    return found


def duplicates(found=None):
    """{id: ["file:line", ...]} for ids used at more than one place."""
    where = {}
    for id_, _, fn, line, _ in (found if found is not None else uses()):
        where.setdefault(id_, []).append(f"mod_rmsync/{fn}:{line}")
    return {k: v for k, v in sorted(where.items()) if len(v) > 1}


def table(found=None):
    found = uses() if found is None else found
    rows = sorted(found, key=lambda u: (u[0], u[2], u[3]))
    out = [
        "# Log message ids",
        "",
        "Every line the module writes to Apache's ErrorLog at warning level or above (and many",
        "below) starts with an id `RMSnnnnn:` that names one place in the source, like httpd's",
        "`AHnnnnn`. Tests allow expected lines by id; an admin can grep for one.",
        "",
        "Generated from the source by `python3 tests/tools/logids.py --write`; `tests/test_logids.py`",
        "fails when an id is used at two places or when this table is out of step with the source.",
        "Ranges: 000xx module, configuration, shm and runner; 002xx database; 003xx Graph client;",
        "004xx engine (apply, delta, sync log); 006xx webhook, queue and subscriptions; 007xx admin",
        "pages; 008xx transfer, categories and linking API. Level `varies`: the message is handed",
        "to a helper (e.g. the engine's per-representative error report) that picks the level.",
        "",
        "| id | level | file | message start |",
        "|----|-------|------|---------------|",
    ]
    for id_, level, fn, _, msg in rows:
        msg = msg.replace("|", "\\|").replace("`", "'")
        out.append(f"| RMS{id_} | {level} | {fn} | {msg} |")
    return "\n".join(out) + "\n"


def doc_text():
    try:
        with open(DOC) as f:
            return f.read()
    except OSError:
        return None


def main(argv):
    found = uses()
    if "--write" in argv:
        with open(DOC, "w") as f:
            f.write(table(found))
        print(f"logids: wrote {os.path.relpath(DOC, TOP)} ({len(found)} ids)")
    elif "--check" in argv:
        rc = 0
        for id_, where in duplicates(found).items():
            print(f"logids: RMS{id_} used at {len(where)} places: {', '.join(where)}")
            rc = 1
        if doc_text() != table(found):
            print("logids: docs/log-ids.md is out of step with the source"
                  " (python3 tests/tools/logids.py --write)")
            rc = 1
        return rc
    else:
        sys.stdout.write(table(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
