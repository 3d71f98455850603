/* mod_rmsync: the linking JSON API (mod_rmsync/rmsync_api.c), what the CRM's Outlook panel calls.
 *
 * Mounted under the admin handler (<base>/api/..., same Apache access control as the admin
 * pages; the admin handler dispatches here with one call):
 *
 *   POST <base>/api/link             {"activity_no": 1042, "representative_id": "ALICE",
 *                                     "event_id": "<Graph immutable id>"}
 *   POST <base>/api/create-activity  {"representative_id": "ALICE", "event_id": "..."}
 *   GET  <base>/api/request/<id>     state of a queued request
 *   GET  <base>/api/csrf             {"csrf_token": "...", "header": "X-RMSync-CSRF", ...}
 *
 * No Graph call ever runs in a worker process: the POST validates what the database can tell
 * (representative holds the permission set and syncs, activity exists and is unlinked, event
 * not linked yet) and stores a durable rmsync.request row (kind 'link' / 'create_activity'); its
 * NOTIFY wakes the sync runner, which GETs the event from that mailbox, re-checks and links in
 * one transaction. Answers: 202 + Location: <base>/api/request/<id>; refusals right away with
 * 404 (unknown representative / activity), 409 (not syncing, already linked), 422 (malformed
 * fields), 400 (not JSON), 415 (not application/json), 413 (body > 8 KiB), 503 (DB down).
 * Polling the request gives 202 while pending, 200 when done (result.activity_no), or the
 * refusal's status when the runner refused it (404 unknown_event, 409 event_already_linked /
 * activity_already_linked, 422 invalid_event_id, 502 graph_error); the body always says which.
 *
 * Cross-site safety: POSTs need the admin pages' CSRF token (HMAC of the per-generation shm
 * secret, the user and the hour; from GET <base>/api/csrf or status.json's csrf_token) in the
 * X-RMSync-CSRF header, else 403 csrf_token_missing / csrf_token_invalid (RMS00836); they must
 * be application/json (a cross-site form cannot send that, or a custom header, without a CORS
 * preflight, which is never granted); a browser's Origin / Sec-Fetch-Site must be same-origin;
 * RMSyncAdminRequireUser On demands an authenticated user.
 */
#ifndef MOD_RMSYNC_API_H
#define MOD_RMSYNC_API_H

#include "httpd.h"

#define RMSYNC_API_MAX_BODY 8192
#define RMSYNC_API_CSRF_HEADER "X-RMSync-CSRF"

/* base: the admin mount ("/rmsync"); path: what follows "<base>/api/". Returns OK after
 * answering, or an HTTP status for the core to answer. */
int rmsync_api_handler(request_rec *r, const char *base, const char *path);

#endif /* MOD_RMSYNC_API_H */
