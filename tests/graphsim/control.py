"""Control API under /_sim/ (no auth, loopback only). JSON in and out. See README.md."""
import json

import simevents as E
import simsubs as S
from graphapi import Resp
from simcore import GraphError, now, parse_window
from simstate import DEFAULT_CONFIG, InspectPrefs


def _err(status, msg):
    return Resp(status, {"error": {"code": "BadRequest" if status == 400 else "NotFound", "message": msg}})


class ControlApp:
    def __init__(self, state, info):
        self.state = state
        self.info = info          # dict with base_url etc. (filled in by the server)

    def handle(self, req):
        try:
            return self._route(req)
        except GraphError as e:
            return Resp(e.status, {"error": {"code": e.code, "message": e.message}})

    def _body(self, req):
        if not req.body.strip():
            return {}
        try:
            return json.loads(req.body)
        except ValueError:
            raise GraphError(400, "BadRequest", "body is not valid JSON")

    def _route(self, req):
        st = self.state
        segs = req.segments[1:]
        if segs and segs[-1] == "":
            segs = segs[:-1]
        M = req.method
        if segs == ["health"] and M == "GET":
            return Resp(200, dict(self.info, ok=True))
        if segs == ["reset"] and M == "POST":
            st.reset()
            return Resp(200, {"ok": True})
        if segs == ["config"]:
            if M == "GET":
                with st.lock:
                    return Resp(200, dict(st.config))
            if M == "POST":
                return Resp(200, st.set_config(self._body(req)))
        if segs == ["config", "reset"] and M == "POST":
            with st.lock:
                st.config = dict(DEFAULT_CONFIG)
                st.cond.notify_all()
                return Resp(200, dict(st.config))
        if segs == ["seed"] and M == "POST":
            return Resp(200, st.seed(self._body(req)))
        if segs == ["counters"] and M == "GET":
            return Resp(200, st.counters_json())
        if segs == ["counters", "reset"] and M == "POST":
            st.reset_counters()
            return Resp(200, {"ok": True})
        if segs == ["notifications"]:
            if M == "GET":
                with st.lock:
                    return Resp(200, {"value": list(st.notif_log)})
            if M == "DELETE":
                with st.lock:
                    st.notif_log.clear()
                return Resp(204)
        if segs == ["requests"]:
            if M == "GET":
                q = req.query
                with st.lock:
                    out = [r for r in st.request_log
                           if (not q.get("user") or (r["user"] or "").lower() == q["user"].lower())
                           and (not q.get("kind") or r["kind"] == q["kind"])
                           and (not q.get("method") or r["method"] == q["method"].upper())]
                return Resp(200, {"value": out})
            if M == "DELETE":
                with st.lock:
                    st.request_log.clear()
                return Resp(204)
        if segs == ["faults"]:
            if M == "POST":
                return Resp(200, st.add_fault(self._body(req)))
            if M == "DELETE":
                st.clear_faults()
                return Resp(200, {"ok": True})
            if M == "GET":
                with st.lock:
                    return Resp(200, {"value": [f.to_json() for f in st.faults]})
        if segs == ["tokens", "revoke"] and M == "POST":
            st.revoke_tokens()
            return Resp(200, {"ok": True})
        if segs[:1] == ["apps"]:
            return self._apps(req, segs[1:])
        if segs[:1] == ["subscriptions"]:
            return self._subs(req, segs[1:])
        if segs[:1] == ["users"]:
            return self._users(req, segs[1:])
        return _err(404, "no control route %s /_sim/%s" % (M, "/".join(segs)))

    def _apps(self, req, segs):
        st = self.state
        with st.lock:
            if not segs and req.method == "GET":
                return Resp(200, {"value": [a.to_json() for a in st.apps.values()]})
            if len(segs) == 1 and req.method == "PATCH":
                app = st.apps.get(segs[0])
                if app is None:
                    return _err(404, "unknown app")
                b = self._body(req)
                if "permissions" in b:
                    app.permissions = list(b["permissions"])
                if "client_secret" in b:
                    app.secret = b["client_secret"]
                return Resp(200, app.to_json())
        return _err(404, "no such apps route")

    def _subs(self, req, segs):
        st = self.state
        if not segs and req.method == "GET":
            with st.lock:
                return Resp(200, {"value": [s.control_json() for s in st.subs.values()]})
        if len(segs) == 2 and segs[1] == "lifecycle" and req.method == "POST":
            return Resp(200, S.lifecycle(st, segs[0], self._body(req).get("event")))
        if len(segs) == 2 and segs[1] == "expire" and req.method == "POST":
            with st.cond:
                sub = st.subs.get(segs[0])
                if sub is None:
                    return _err(404, "unknown subscription")
                sub.expires = now()
                st.subs.touch(sub)
                st.cond.notify_all()
            return Resp(200, {"ok": True})
        return _err(404, "no such subscriptions route")

    def _users(self, req, segs):
        st = self.state
        M = req.method
        if not segs:
            if M == "GET":
                with st.lock:
                    return Resp(200, {"value": [u.to_json() for u in st.users.values()]})
            if M == "POST":
                with st.lock:
                    return Resp(201, st.add_user(self._body(req)).to_json())
        user = st.get_user(segs[0])
        rest = segs[1:]
        if rest == [] and M == "PATCH":
            b = self._body(req)
            with st.lock:
                if "accessDenied" in b:
                    user.access_denied = bool(b["accessDenied"])
                if "mailboxEnabled" in b:
                    user.mailbox_enabled = bool(b["mailboxEnabled"])
                if "displayName" in b:
                    user.display_name = b["displayName"]
                if "timeZone" in b:
                    st.set_time_zone(user, b["timeZone"])
                return Resp(200, user.to_json())
        if rest == ["mailboxSettings"] and M == "GET":
            with st.lock:
                return Resp(200, st.mailbox_settings(user))
        if rest == ["calendars"]:
            if M == "GET":
                with st.lock:
                    return Resp(200, {"value": [dict(c) for c in user.calendars.values()]})
            if M == "POST":
                return Resp(201, st.add_calendar(user, self._body(req)))
        if len(rest) == 3 and rest[0] == "calendars" and rest[2] == "events" and M == "POST":
            with st.lock:
                cal = user.find_calendar(rest[1])
                if cal is None:
                    return _err(404, "no calendar %s" % rest[1])
                ev = st.user_create_event(user, self._body(req), calendar=cal["id"])
                return Resp(201, st.event_summary(user, ev))
        if rest == ["calendarView"] and M == "GET":
            ws, we = parse_window(req.query)
            with st.lock:
                cal = None
                if req.query.get("calendar"):
                    c = user.find_calendar(req.query["calendar"])
                    if c is None:
                        return _err(404, "no calendar %s" % req.query["calendar"])
                    cal = c["id"]
                items = E.window_items(user, ws, we, cal)
                keys = sorted(items, key=lambda k: (items[k][1], k[1]))
                out = []
                for k in keys:
                    ev = user.events[k[1]]
                    d = E.render_event(ev, user, InspectPrefs(), k[2] if k[0] == "o" else None, set(ev.ext))
                    imm_rest = E.occ_ids(ev, k[2]) if k[0] == "o" else (ev.imm_id, ev.rest_id)
                    d["immutableId"], d["restId"] = imm_rest
                    d["calendarId"] = ev.calendar_id
                    out.append(d)
                return Resp(200, {"value": out})
        if rest == ["categories"] and M == "GET":
            return Resp(200, {"value": st.categories(user)})
        if rest == ["events"]:
            if M == "GET":
                inc_deleted = req.query.get("deleted", "1") not in ("0", "false")
                with st.lock:
                    return Resp(200, {"value": [st.event_summary(user, ev) for ev in
                                                sorted(user.events.values(), key=lambda e: e.key)
                                                if inc_deleted or not ev.deleted]})
            if M == "POST":
                with st.lock:
                    ev = st.user_create_event(user, self._body(req))
                    return Resp(201, st.event_summary(user, ev))
        if len(rest) >= 2 and rest[0] == "events":
            eid = rest[1]
            tail = rest[2:]
            if not tail:
                if M == "GET":
                    with st.lock:
                        ev, dk = st.find_event(user, eid)
                        return Resp(200, st.event_summary(user, ev))
                if M == "PATCH":
                    with st.lock:
                        ev, dk = st.update_event(user, eid, self._body(req), control=True)
                        return Resp(200, st.event_summary(user, ev))
                if M == "DELETE":
                    st.delete_event(user, eid)
                    return Resp(204)
            if tail == ["cancel"] and M == "POST":
                with st.lock:
                    r = st.user_cancel(user, eid)
                    return Resp(200, st.event_summary(user, r[0]) if r else {"deleted": True})
            if tail == ["restore"] and M == "POST":
                with st.lock:
                    ev = st.restore_event(user, eid)
                    return Resp(200, st.event_summary(user, ev))
            if tail == ["bump"] and M == "POST":
                with st.lock:
                    ev = st.bump_change_key(user, eid)
                    return Resp(200, st.event_summary(user, ev))
        return _err(404, "no such users route")

