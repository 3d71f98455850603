"""calendarView/delta (GRAPH.md 4.6): rounds, pages, opaque tokens, @removed, knobs.

A token names server-side state (simstate.DeltaState): the window, the change sequence the round
was computed at and the set of items the client holds afterwards. Callers hold no lock; every
function here that touches state runs under State.lock.
"""
import simevents as E
from simcore import GraphError, parse_window
from simstate import DeltaState


def delta_page(app, req, user, cal):
    """GET .../calendarView/delta: first call with a window, then nextLink/deltaLink tokens.

    cal: the calendar id of the path (the default calendar, or /calendars/{id}/calendarView/delta)."""
    q = req.query
    bad = [k for k in q if k.lower() in ("$filter", "$orderby", "$search", "$expand", "$select", "$top",
                                         "$skip", "$count")]
    if bad:
        raise GraphError(400, "ErrorInvalidUrlQuery", "The following parameters are not supported with change "
                         "tracking over the 'CalendarView' resource: '%s'." % ", ".join(sorted(bad)))
    prefs = req.prefs()
    st = app.state
    cfg = st.config
    link = "https://%s%s" % (req.host, req.raw_path)
    with st.lock:
        skiptok, deltatok = q.get("$skiptoken"), q.get("$deltatoken")
        if skiptok is not None or deltatok is not None:
            ds = st.delta_load(skiptok if skiptok is not None else deltatok, user)
            if (skiptok is not None) != (ds.kind == "skip") or ds.cal != cal:
                raise GraphError(400, "InvalidDeltaToken", "The value of parameter '%s' is invalid."
                                 % ("$skipToken" if skiptok is not None else "$deltaToken"))
            if skiptok is not None and cfg["delta_skiptoken_single_use"]:
                st.delta_forget(skiptok)      # a followed nextLink dies (GRAPH.md 4.4, contrib#7975)
        else:
            ws, we = parse_window(q)
            ds = DeltaState()
            ds.user_key, ds.cal, ds.ws, ds.we, ds.kind = user.key, cal, ws, we, "delta"
            ds.base_seq, ds.prev_set = None, frozenset()
        if ds.kind == "delta":
            round_ = _delta_round(app, user, ds)
            entries, offset, next_seq, next_set, fresh = round_[0], 0, round_[1], round_[2], True
        else:
            entries, offset, next_seq, next_set, fresh = ds.entries, ds.offset, ds.next_seq, ds.next_set, False
        size = prefs.maxpagesize or int(cfg["delta_default_page_size"])
        size = max(1, min(size, int(cfg["delta_max_page_size"])))
        if fresh and cfg["delta_empty_first_page"]:
            chunk, new_offset = [], 0
        else:
            new_offset = _page_end(entries, offset, size, cfg["delta_series_together"])
            chunk = entries[offset:new_offset]
        nds = DeltaState()
        nds.user_key, nds.cal, nds.ws, nds.we = user.key, ds.cal, ds.ws, ds.we
        out = {"@odata.context": app._base(req) + "/$metadata#Collection(event)"}
        if new_offset < len(entries) or (fresh and cfg["delta_empty_first_page"]):
            nds.kind, nds.entries, nds.offset, nds.next_seq, nds.next_set = "skip", entries, new_offset, \
                next_seq, next_set
            out["@odata.nextLink"] = link + "?$skiptoken=" + st.delta_store(nds)
        else:
            nds.kind, nds.base_seq, nds.prev_set = "delta", next_seq, next_set
            out["@odata.deltaLink"] = link + "?$deltatoken=" + st.delta_store(nds)
        out["value"] = [_render_delta(app, user, k, kind, prefs, ds.ws, ds.we) for k, kind in chunk]
    applied = ["odata.track-changes"]
    if prefs.maxpagesize:
        applied.append("odata.maxpagesize=%d" % prefs.maxpagesize)
    applied += prefs.applied_for_event()
    return out, {"Preference-Applied": ", ".join(applied)}

def _delta_round(app, user, ds):
    """-> (entries [(key, 'full'|'removed')], snapshot seq, snapshot set). See GRAPH.md 4.6."""
    cfg = app.state.config
    cur = E.window_items(user, ds.ws, ds.we, ds.cal)
    if cfg["delta_series_together"]:
        # occurrences of one series stay together (ordered by the series' first start)
        first = {}
        for k, v in cur.items():
            g = ("o", k[1]) if k[0] == "o" else k
            first[g] = min(first.get(g, v[1]), v[1])
        order = lambda k: (first[("o", k[1]) if k[0] == "o" else k], k[1], cur[k][1])  # noqa: E731
    else:
        order = lambda k: (cur[k][1], k[1])  # noqa: E731
    vis = user.visible_seq(float(cfg["delta_visibility_delay_ms"]) / 1000.0)
    entries = []
    if ds.base_seq is None:
        # changes not yet visible: new items are not there yet
        hidden_new = {k for k in cur if cur[k][0] > vis and _created_seq(user, k) > vis}
        entries = [(k, "full") for k in sorted(cur, key=order) if k not in hidden_new]
        snapshot = set(cur) - hidden_new
    else:
        b = ds.base_seq
        snapshot = set()
        for k in sorted(cur, key=order):
            if cur[k][0] > vis:
                # a change processing has not caught up with: keep what the client has
                if k in ds.prev_set:
                    snapshot.add(k)
                continue
            snapshot.add(k)
            if cur[k][0] > b or k not in ds.prev_set:
                entries.append((k, "full"))
        for k in sorted(ds.prev_set - set(cur)):
            if _key_seq(user, k) > vis:
                snapshot.add(k)
                continue
            entries.append((k, "removed"))
        # quirk: changes to items outside the window come as @removed (GRAPH.md 4.3)
        for ev in user.events.values():
            k = ("s", ev.key)
            if b < ev.seq <= vis and not ev.is_master and k not in cur and k not in ds.prev_set \
                    and ev.calendar_id == ds.cal:
                entries.append((k, "removed"))
    dup = int(cfg["delta_duplicates"])
    if dup > 0 and entries:
        entries = entries + entries[:dup]       # the same item again later in the round
    return entries, vis, frozenset(snapshot)

def _key_seq(user, k):
    ev = user.events[k[1]]
    if k[0] == "o" and k[2] in ev.exceptions:
        return max(ev.seq, ev.exceptions[k[2]].seq)
    return ev.seq

def _created_seq(user, k):
    """Sequence at which the item appeared (approximated by the event's first change)."""
    ev = user.events[k[1]]
    return ev.created_seq

def _page_end(entries, offset, size, together):
    """End index of the page starting at offset; a series is not split across pages (GRAPH.md 9.3)."""
    end = min(len(entries), offset + size)
    if together and end < len(entries) and end > offset:
        last = entries[end - 1][0]
        while end < len(entries) and last[0] == "o" and entries[end][0][0] == "o" \
                and entries[end][0][1] == last[1] and entries[end][1] == "full":
            end += 1
    return end

def _render_delta(app, user, key, kind, prefs, ws, we):
    ev = user.events[key[1]]
    live = not ev.deleted
    if live and key[0] == "s":
        live = not ev.is_master and E.overlaps(ev.start, ev.end, ws, we)
    elif live:
        exc = ev.exceptions.get(key[2])
        live = ev.is_master and (exc is None or not exc.cancelled) and E.is_valid_occurrence_date(ev, key[2])
        if live:
            stt, en = E.occurrence_times(ev, key[2])
            live = E.overlaps(stt, en, ws, we)
    if kind == "full" and live:
        d = app._render_key(user, key, prefs, odata_type=True)
        if key[0] == "o" and app.state.config["delta_sparse_occurrences"]:
            d = {k: d[k] for k in ("@odata.type", "@odata.etag", "id", "seriesMasterId", "type", "start", "end")}
        return d
    if key[0] == "s":
        eid = ev.imm_id if prefs.immutable else ev.rest_id
    else:
        imm, rst = E.occ_ids(ev, key[2])
        eid = imm if prefs.immutable else rst
    return {"@odata.type": "#microsoft.graph.event", "id": eid, "@removed": {"reason": "deleted"}}
