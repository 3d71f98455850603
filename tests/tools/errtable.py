#!/usr/bin/env python3
"""The error classes of mod_rmsync/core/rmsync_errors.c as a Markdown table (docs/admin.md,
"Errors and their fix"). `errtable.py` prints it; `errtable.py --write` replaces the table in
docs/admin.md between the <!-- errors:begin --> / <!-- errors:end --> markers;
tests/test_errors.py checks that the docs and the C table agree."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "mod_rmsync", "core", "rmsync_errors.c")
DOC = os.path.join(ROOT, "docs", "admin.md")
BEGIN, END = "<!-- errors:begin -->", "<!-- errors:end -->"


def classes():
    """[(code, match, reason, fix)] in table order, from the C source."""
    src = open(SRC, encoding="utf-8").read()
    body = src[src.index("classes[] = {"):src.index("};", src.index("classes[] = {"))]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    out = []
    for entry in re.findall(r"\{(.*?)\},", body, flags=re.S):
        lits = re.findall(r'"((?:[^"\\]|\\.)*)"|(,)', entry)
        fields, cur = [], ""
        for lit, comma in lits:
            if comma:
                fields.append(cur)
                cur = ""
            else:
                cur += lit.replace('\\"', '"')
        fields.append(cur)
        if len(fields) == 4:
            out.append(tuple(fields))
    return out


def table():
    rows = ["| Class | Matches (in the message) | What it means | What to do |",
            "|---|---|---|---|"]
    for code, match, reason, fix in classes():
        m = ", ".join(f"`{x}`" for x in match.split("|") if x) or "(anything else)"
        rows.append(f"| `{code}` | {m} | {reason} | {fix} |".replace("\\|", "|"))
    return "\n".join(rows)


def main():
    t = table()
    if "--write" in sys.argv:
        doc = open(DOC, encoding="utf-8").read()
        a, b = doc.index(BEGIN) + len(BEGIN), doc.index(END)
        open(DOC, "w", encoding="utf-8").write(doc[:a] + "\n" + t + "\n" + doc[b:])
    else:
        print(t)


if __name__ == "__main__":
    main()
