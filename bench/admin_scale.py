#!/usr/bin/python3
"""Admin pages at 10,000 representatives (issue 18, item 3): render times, printed, never
asserted.

    env PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/python3 bench/admin_scale.py [--reps N] [--runs R]

Starts PostgreSQL, the Graph simulator and Apache (tests/engine_stack.py) with
RMSyncMaxRepresentatives N, seeds N CRM representatives holding the permission set (bench.py
add_reps; Sync Active off, so the runner publishes their slots but sends no Graph traffic; 1% held
by the mass-delete breaker, which the health banner counts), waits until the runner has put all
of them into shared memory, then times each page R times through Apache (median ms of the whole
HTTP round trip) and reads X-RMSync-Shm-Bytes, the bytes the request copied from shm.

bench/run.sh imports run() (a dict); alone it prints a table.
"""
import argparse
import os
import statistics
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

# like bench.py add_reps (users holding the permission set, representatives, rep_state), with
# five-digit ids; Sync Active off; every 100th held by the breaker
SEED = """
INSERT INTO crm.fnd_user (identity, description)
     SELECT 'S' || lpad(i::text, 5, '0'), 'bench user ' || i FROM generate_series(1, {n}) i;
INSERT INTO crm.permission_set_grant (identity, permission_set)
     SELECT 'S' || lpad(i::text, 5, '0'), 'EXCHANGE_SYNC_USER' FROM generate_series(1, {n}) i;
INSERT INTO crm.business_representative (representative_id, user_id, name, email)
     SELECT 'S' || lpad(i::text, 5, '0'), 'S' || lpad(i::text, 5, '0'), 'Bench Rep ' || i,
            's' || lpad(i::text, 5, '0') || '@bench.rmsync.test' FROM generate_series(1, {n}) i;
INSERT INTO rmsync.rep_state (representative_id, sync_active, held_by_breaker, held_reason)
     SELECT 'S' || lpad(i::text, 5, '0'), false, i % 100 = 0,
            CASE WHEN i % 100 = 0 THEN 'bench: would delete 9 of 10' END
       FROM generate_series(1, {n}) i;
ANALYZE;
"""

PAGES = [
    ("config", "/rmsync/config"),
    ("config_json", "/rmsync/config.json"),
    ("config_page_50", "/rmsync/config?page=50"),
    ("config_search", "/rmsync/config?q=Bench+Rep+9999"),
    ("status", "/rmsync/status"),
    ("status_json", "/rmsync/status.json"),
    ("metrics", "/rmsync/metrics"),
    ("style_css", "/rmsync/style.css"),
    ("log", "/rmsync/log"),
]


def _get(url):
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        body = r.read()
        shm = r.headers.get("X-RMSync-Shm-Bytes")
        status = r.status
    return (time.perf_counter() - t) * 1000, status, len(body), int(shm) if shm else None


def _slots(base):
    import json
    with urllib.request.urlopen(base + "/rmsync/status.json", timeout=120) as r:
        st = json.loads(r.read())
    return len(st["representatives"]), st["representative_slots"]


def run(reps=10000, runs=7, log=print):
    """Seed reps representatives, start the stack, time the pages; returns
    {"reps": n, "slots": capacity, "pages": {name: {"ms": median, "bytes": n,
    "shm_bytes": n}}, "segment_bytes": the whole segment}."""
    from engine_stack import EngineStack

    st = EngineStack(cycle=2, active=(), extra=f"RMSyncMaxRepresentatives {reps}")
    try:
        t = time.perf_counter()
        st.pg.sql(SEED.format(n=reps), timeout=600)
        log(f"seeded {reps} representatives in {time.perf_counter() - t:.1f} s")
        base = st.url
        t = time.perf_counter()
        end = t + 600
        n = cap = 0
        while time.perf_counter() < end:
            n, cap = _slots(base)
            if n >= reps:
                break
            time.sleep(1)
        log(f"runner published {n} of {cap} slots in {time.perf_counter() - t:.1f} s")
        out = {"reps": n, "slots": cap, "pages": {}}
        for name, path in PAGES:
            _get(base + path)                      # warm: this process's statements, caches
            ms, size, shm = [], 0, None
            for _ in range(runs):
                m, status, size, shm = _get(base + path)
                assert status == 200, (path, status)
                ms.append(m)
            out["pages"][name] = {"path": path, "ms": round(statistics.median(ms), 1),
                                  "max_ms": round(max(ms), 1), "bytes": size,
                                  "shm_bytes": shm}
        return out
    finally:
        st.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    res = run(a.reps, a.runs)
    print(f"{res['reps']} representatives in shm ({res['slots']} slots); status copies every "
          "slot in use, the other pages only what they show")
    print(f"{'page':16s} {'median ms':>10s} {'max ms':>8s} {'bytes':>10s} {'shm bytes':>10s}  path")
    for name, p in res["pages"].items():
        print(f"{name:16s} {p['ms']:10.1f} {p['max_ms']:8.1f} {p['bytes']:10d} "
              f"{p['shm_bytes'] if p['shm_bytes'] is not None else '-':>10}  {p['path']}")


if __name__ == "__main__":
    main()
