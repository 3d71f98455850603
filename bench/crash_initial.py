#!/usr/bin/python3
"""PostgreSQL crashed (immediate stop) in the middle of an initial sync: nothing lost, nothing
applied twice. Checks the asynchronous commit of mid-round delta pages (docs/engine.md): a
commit whose WAL was still in PostgreSQL's buffers is lost with the crash, and the round must
resume at the last durable cursor and end with every linked activity right.

  /usr/bin/python3 bench/crash_initial.py      (M=20 mailboxes, E=1000 events, AT=0.3: crash
                                               when that share of the links is applied)

Durable PostgreSQL (fsync and synchronous_commit on, as bench/run.sh), the Graph simulator and
Apache with the module, on loopback; prints RESULT ok / FAIL and exits 0 / 1. Not in CI.
"""
import os
import sys
import time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench as B

M, E = int(os.environ.get("M", "20")), int(os.environ.get("E", "1000"))
st = B.Stack("crash", M, events_per_rep=E, linked_every=10, cycle=300, max_reps=256, webhook=True, stats=True)
pg, sim = st.pg, st.sim
print("durability:", pg.val("SHOW synchronous_commit"), pg.val("SHOW fsync"))
pg.sql("VACUUM ANALYZE")
nl = len(st.links)
st.start_httpd()
t0 = time.time()
# mid-sync: some linked activities applied, not all
while True:
    n = int(pg.val("SELECT count(*) FROM rmsync.event_link WHERE applied_hash IS NOT NULL"))
    if n >= nl * float(os.environ.get("AT", "0.3")):
        break
    time.sleep(0.02)
done_links = int(pg.val("SELECT count(*) FROM rmsync.rep_state WHERE delta_link IS NOT NULL"))
print(f"at the crash: {n} of {nl} links applied, {done_links} of {M} rounds done, {time.time()-t0:.2f}s")
pg.stop("immediate")
time.sleep(2)
pg.start()
after = int(pg.val("SELECT count(*) FROM rmsync.event_link WHERE applied_hash IS NOT NULL"))
print(f"after restart (crash recovery): {after} applied (lost to the crash: {n - after} if positive)")
B.wait_sql(pg, f"SELECT (SELECT count(*) FROM rmsync.rep_state WHERE delta_link IS NOT NULL AND round_next_link IS NULL) >= {M} AND NOT EXISTS (SELECT 1 FROM rmsync.event_link WHERE applied_hash IS NULL)", timeout=180, what="sync after the crash")
print(f"complete {time.time()-t0:.1f}s after the start")
wrong = int(pg.val("""SELECT count(*) FROM rmsync.event_link l JOIN crm.business_activity a USING (activity_no)
                      WHERE a.description NOT LIKE 'ev ' || l.representative_id || ' %'"""))
dups = int(pg.val("""SELECT count(*) FROM (SELECT activity_no FROM rmsync.sync_log WHERE action = 'update'
                      GROUP BY activity_no HAVING count(*) > 1) x"""))
upd = int(pg.val("SELECT count(DISTINCT activity_no) FROM rmsync.sync_log WHERE action = 'update'"))
c = sim.counters()
print(f"links {nl}, wrong {wrong}, activities with an update log row {upd}, with more than one {dups}, "
      f"delta requests {c['requests_by_kind'].get('delta')} (pages of one pass: {M * (E // 50)})")
ok = wrong == 0 and upd == nl and dups == 0
print("RESULT", "ok" if ok else "FAIL")
B.cleanup()
sys.exit(0 if ok else 1)
