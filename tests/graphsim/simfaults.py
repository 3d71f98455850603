"""Throttling per (app, mailbox) and fault injection (GRAPH.md 7, README "Faults").

A mixin of simstate.State: everything runs under State.lock.
"""
import re
import time

from simcore import GraphError, rand_float


class Fault:
    def __init__(self, spec, fid):
        self.id = fid
        self.kind = spec["kind"]
        self.spec = spec
        self.count = spec.get("count")
        m = spec.get("match") or {}
        self.method = (m.get("method") or "").upper() or None
        self.path_re = re.compile(m["path_regex"]) if m.get("path_regex") else None
        self.user = (m.get("user") or "").lower() or None
        self.include_control = False

    def to_json(self):
        return dict(self.spec, id=self.id, remaining=self.count)


class ThrottleFaultsMixin:
    # ------------------------------------------------------------ throttling

    def throttle_enter(self, client_id, user):
        """Count a request against (app, mailbox); raise 429 when over a limit."""
        with self.lock:
            c = self.counters
            c["requests_by_mailbox"][user.mail] += 1
            k = (client_id, user.key)
            t = time.time()
            st = self.throttle.get(k)
            win = float(self.config["throttle_window_s"])
            if st is None or t - st[1] >= win:
                st = [st[0] if st else 0, t, 0]
                self.throttle[k] = st
            # what the client asks for, refused or not (a refused request is not in flight)
            want = c["inflight_by_mailbox"][user.mail] + 1
            if want > c["peak_requested_by_mailbox"][user.mail]:
                c["peak_requested_by_mailbox"][user.mail] = want
            if st[0] >= int(self.config["throttle_max_concurrent"]):
                c["throttled_429"] += 1
                c["throttled_by_mailbox"][user.mail] += 1
                c["over_concurrency_by_mailbox"][user.mail] += 1
                ra = self.config["throttle_concurrency_retry_after_s"]
                raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.",
                                 {"Retry-After": _ra(ra)}, inner={"code": "MailboxConcurrency"})
            app_cap = int(self.config["throttle_app_max_concurrent"])
            if app_cap > 0 and self.app_inflight.get(client_id, 0) >= app_cap:
                c["throttled_429"] += 1
                c["throttled_by_mailbox"][user.mail] += 1
                ra = self.config["throttle_concurrency_retry_after_s"]
                raise GraphError(429, "ApplicationThrottled", "Application is over its Concurrency limit.",
                                 {"Retry-After": _ra(ra)}, inner={"code": "ApplicationConcurrency"})
            st[2] += 1
            if st[2] > int(self.config["throttle_budget"]):
                c["throttled_429"] += 1
                c["throttled_by_mailbox"][user.mail] += 1
                ra = max(1, int(st[1] + win - t + 0.999))
                raise GraphError(429, "ApplicationThrottled", "Application is over its MailboxRequests limit.",
                                 {"Retry-After": str(ra)}, inner={"code": "MailboxRequestLimit"})
            st[0] += 1
            self.app_inflight[client_id] = self.app_inflight.get(client_id, 0) + 1
            c["inflight_by_mailbox"][user.mail] += 1
            cur = c["inflight_by_mailbox"][user.mail]
            if cur > c["peak_concurrency_by_mailbox"][user.mail]:
                c["peak_concurrency_by_mailbox"][user.mail] = cur
            return k

    def throttle_exit(self, k, user):
        with self.lock:
            st = self.throttle.get(k)
            if st is not None and st[0] > 0:
                st[0] -= 1
            if self.app_inflight.get(k[0], 0) > 0:
                self.app_inflight[k[0]] -= 1
            if self.counters["inflight_by_mailbox"][user.mail] > 0:
                self.counters["inflight_by_mailbox"][user.mail] -= 1

    # ------------------------------------------------------------ faults

    def add_fault(self, spec):
        kinds = ("status", "latency", "drop_response", "drop_notifications", "malformed",
                 "evict_delta_tokens", "bump_changekey", "revoke_tokens")
        if not isinstance(spec, dict) or spec.get("kind") not in kinds:
            raise GraphError(400, "BadRequest", "fault kind must be one of %s" % ", ".join(kinds))
        with self.lock:
            k = spec["kind"]
            if k == "evict_delta_tokens":
                u = self.get_user(spec["user"]) if spec.get("user") else None
                return {"evicted": self.evict_delta_tokens(u)}
            if k == "revoke_tokens":
                self.revoke_tokens()
                return {"revoked": True}
            if k == "bump_changekey":
                u = self.get_user(spec.get("user"))
                ev = self.bump_change_key(u, spec.get("event"))
                return {"changeKey": ev.change_key}
            if k == "status":
                st = spec.get("status")
                if not isinstance(st, int) or not 400 <= st <= 599:
                    raise GraphError(400, "BadRequest", "status fault needs an HTTP error status")
            if k == "latency" and not isinstance(spec.get("ms"), (int, float)):
                raise GraphError(400, "BadRequest", "latency fault needs ms")
            f = Fault(spec, self.next_fault_id)
            self.next_fault_id += 1
            self.faults.append(f)
            return f.to_json()

    def clear_faults(self):
        with self.lock:
            self.faults = []

    def take_faults(self, method, path, user, kinds, token_endpoint=False):
        """Consume and return the matching faults of the given kinds (one per kind).

        Faults without a path_regex apply to Graph paths only, never to the token endpoint.
        """
        out = {}
        with self.lock:
            for f in list(self.faults):
                if f.kind not in kinds or f.kind in out:
                    continue
                if f.method and f.method != method:
                    continue
                if f.path_re and not f.path_re.search(path):
                    continue
                if token_endpoint and not f.path_re:
                    continue
                p = f.spec.get("probability")
                if p is not None and rand_float() >= float(p):
                    continue
                if f.user and (user is None or f.user not in (user.mail.lower(), user.key.lower(),
                                                              user.upn.lower())):
                    continue
                out[f.kind] = f
                self.counters["faults_injected"][f.kind] += 1
                if f.count is not None:
                    f.count -= 1
                    if f.count <= 0:
                        self.faults.remove(f)
            return out

    def take_notification_drop(self, user_key):
        with self.lock:
            for f in list(self.faults):
                if f.kind != "drop_notifications":
                    continue
                if f.user:
                    u = self.users.get(user_key)
                    if u is None or f.user not in (u.mail.lower(), u.key.lower()):
                        continue
                if f.count is not None:
                    f.count -= 1
                    if f.count <= 0:
                        self.faults.remove(f)
                return True
            return False


def _ra(v):
    if isinstance(v, float) and not v.is_integer():
        return "%.3f" % v
    return str(int(v))
