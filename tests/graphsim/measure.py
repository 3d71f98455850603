#!/usr/bin/python3
"""Measure how fast graphsim serves event GETs and delta pages on this machine.

    /usr/bin/python3 tests/graphsim/measure.py [--seconds 5] [--threads 4]

Uses keep-alive HTTPS connections (one per client thread) and lifts the simulator's throttling so
that the numbers show the simulator's own ceiling. Prints a small table.
"""
import argparse
import datetime as dt
import http.client
import json
import os
import ssl
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from simclient import GraphSim  # noqa: E402


def bench(sim, token, paths_fn, seconds, threads, follow=False):
    ctx = ssl.create_default_context(cafile=sim.ca_file)
    u = urllib.parse.urlsplit(sim.base_url)
    counts = [0] * threads
    errors = [0] * threads
    stop = time.monotonic() + seconds

    def worker(i):
        conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=30)
        n = 0
        path = None
        while time.monotonic() < stop:
            if path is None:
                path = paths_fn(i, n)
            conn.request("GET", path, headers={"Authorization": "Bearer " + token,
                                               "Prefer": 'IdType="ImmutableId", odata.maxpagesize=50'})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                errors[i] += 1
            counts[i] += 1
            n += 1
            path = None
            if follow and r.status == 200:
                nl = json.loads(data).get("@odata.nextLink")
                if nl:
                    p = urllib.parse.urlsplit(nl)
                    path = p.path + "?" + p.query
        conn.close()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    el = time.monotonic() - t0
    return sum(counts) / el, sum(errors)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--events", type=int, default=500)
    a = ap.parse_args()
    today = dt.datetime.now(dt.timezone.utc).replace(hour=9, minute=0, second=0, microsecond=0)
    events = []
    for i in range(a.events):
        st = today + dt.timedelta(days=i % 60, hours=i % 8)
        events.append({"user": "bench@sim.test", "subject": "bench %d" % i,
                       "start": {"dateTime": st.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                       "end": {"dateTime": (st + dt.timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S"),
                               "timeZone": "UTC"},
                       "attendees": [{"emailAddress": {"address": "x%d@example.com" % i}}]})
    seed = {"apps": [{"tenant": "t", "client_id": "c", "client_secret": "s"}],
            "users": [{"mail": "bench@sim.test"}], "events": events}
    with GraphSim(seed=seed, config={"throttle_max_concurrent": 1000, "throttle_budget": 10 ** 9}) as sim:
        tok = sim.token("t", "c", "s")
        ids = [e["immutableId"] for e in sim.user_events("bench@sim.test")]
        win = "startDateTime=%s&endDateTime=%s" % (
            (today - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            (today + dt.timedelta(days=61)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        rows = []
        for threads in sorted({1, a.threads}):
            rate, err = bench(sim, tok, lambda i, n: "/v1.0/users/bench@sim.test/events/%s"
                              % urllib.parse.quote(ids[(i * 7919 + n) % len(ids)], safe=""), a.seconds, threads)
            rows.append(("event GET", threads, rate, err))
            # initial delta round pages (50 items each) over a 500-event window; each call starts a round
            rate, err = bench(sim, tok, lambda i, n: "/v1.0/users/bench@sim.test/calendarView/delta?" + win,
                              a.seconds, threads)
            rows.append(("delta: first page of a new round (50 of 500 events)", threads, rate, err))
            # whole initial rounds: first page + nextLink pages (50 events each)
            rate, err = bench(sim, tok, lambda i, n: "/v1.0/users/bench@sim.test/calendarView/delta?" + win,
                              a.seconds, threads, follow=True)
            rows.append(("delta: pages of full initial rounds (50 events/page)", threads, rate, err))
            # an idle deltaLink (no changes): the cheap steady-state call of a sync loop
            st, _, b = sim.graph("GET", "/users/bench@sim.test/calendarView/delta?" + win, token=tok,
                                 headers={"Prefer": "odata.maxpagesize=1000"})
            dl = urllib.parse.urlsplit(b["@odata.deltaLink"])
            rate, err = bench(sim, tok, lambda i, n: dl.path + "?" + dl.query, a.seconds, threads)
            rows.append(("delta: idle deltaLink (no changes, 500-event window)", threads, rate, err))
        print("| request | client threads | req/s | errors |")
        print("|---|---|---|---|")
        for name, th, rate, err in rows:
            print("| %s | %d | %.0f | %d |" % (name, th, rate, err))
        print(json.dumps({"cpus": os.cpu_count(), "events": a.events}))


if __name__ == "__main__":
    main()
