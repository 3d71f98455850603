/* mod_rmsync, used by both processes (the admin pages of the Apache worker processes and the
 * sync runner): the error classes with their reason and fix (rmsync_errors.h). Pure table +
 * matching, APR only.
 *
 * Order matters: the first class whose substring occurs wins, so the specific ones (an AADSTS
 * code, a Graph error code) come before the generic ones (HTTP 403, "authentication failed").
 * Every code here has a row in docs/admin.md ("Errors and their fix"; tests/test_errors.py). */
#include <string.h>
#include <apr_strings.h>
#include <apr_lib.h>
#include "rmsync_errors.h"

static const rmsync_error_class_t classes[] = {
    /* ---- the token (Microsoft Entra ID) ---- */
    { "aadsts7000215", "AADSTS7000215|invalid client secret",
      "The client secret is wrong (AADSTS7000215: invalid client secret provided).",
      "Put the secret's current VALUE (not its id) of the app registration into the file named "
      "by RMSyncGraphClientSecretFile, or create a new secret in Entra ID (App registrations > "
      "Certificates & secrets), then reload Apache." },
    { "aadsts7000222", "AADSTS7000222|client secret expired",
      "The client secret has expired (AADSTS7000222).",
      "Create a new client secret in Entra ID (App registrations > Certificates & secrets), "
      "write it to the file named by RMSyncGraphClientSecretFile and reload Apache." },
    { "aadsts700016", "AADSTS700016",
      "The application was not found in the tenant (AADSTS700016).",
      "Check RMSyncGraphClientId (the app registration's Application (client) ID) and that "
      "the app is registered in the tenant of RMSyncGraphTenant." },
    { "aadsts90002", "AADSTS90002|AADSTS900023|AADSTS90072",
      "The tenant was not found (AADSTS90002 / AADSTS900023).",
      "Check RMSyncGraphTenant (the Directory (tenant) ID or the tenant's domain name)." },
    { "aadsts700027", "AADSTS700027|AADSTS700023|certificate not accepted",
      "The client certificate was not accepted (AADSTS700027: signature or key not valid).",
      "Check RMSyncGraphClientCertificate: upload the certificate (its SHA-1 thumbprint is in "
      "the ErrorLog) to the app registration and use the matching private key." },
    { "aadsts7000112", "AADSTS7000112",
      "The application is disabled in the tenant (AADSTS7000112).",
      "Enable the app's enterprise application in Entra ID (Enterprise applications > "
      "Properties > Enabled for users to sign-in)." },
    { "token_unreachable", "graph token request to",
      "The token endpoint (login.microsoftonline.com) could not be reached.",
      "Check the server's network, DNS and proxy (the https_proxy environment of Apache) for "
      "the authority (RMSyncGraphAuthorityURL); the runner retries by itself." },
    { "token_failed", "authentication failed|invalid_client|unauthorized_client|HTTP 401",
      "Microsoft Entra ID refused the token request or Graph refused the token.",
      "Check RMSyncGraphTenant, RMSyncGraphClientId and RMSyncGraphClientSecretFile (or "
      "RMSyncGraphClientCertificate); the ErrorLog line RMS00301/RMS00302 has the AADSTS "
      "code." },
    /* ---- the mailbox ---- */
    { "mailbox_not_licensed", "MailboxNotEnabledForRESTAPI|MailboxNotHostedInExchangeOnline",
      "The user exists but has no Exchange Online mailbox (not licensed, or on-premises).",
      "Assign an Exchange Online licence to the representative's user, or correct the "
      "representative's mailbox / e-mail in the CRM." },
    { "mailbox_not_found", "ErrorInvalidUser|ResourceNotFound|MailboxNotFound|UserNotFound",
      "The representative's mailbox does not exist (Graph: user or mailbox not found).",
      "Check the representative's e-mail (mailbox) in the CRM, and that the mailbox exists in "
      "Exchange Online and is licensed; then run Initial Sync." },
    { "access_denied", "ErrorAccessDenied|access denied|Authorization_RequestDenied|HTTP 403",
      "Graph refused access to this mailbox (HTTP 403).",
      "Grant the app Calendars.ReadWrite (application) with admin consent, and check the "
      "Exchange access policy (RBAC for Applications / ApplicationAccessPolicy): the "
      "representative's mailbox must be in the app's scope." },
    { "categories_forbidden", "masterCategories|MailboxSettings",
      "The app may not read or create the mailbox's categories (master categories forbidden).",
      "Grant the app MailboxSettings.ReadWrite (application) with admin consent; syncing works "
      "without it, only the category is not created." },
    /* ---- Graph, transient ---- */
    { "throttled", "throttled|HTTP 429|HTTP 503|HTTP 504",
      "Microsoft Graph throttled the requests or was briefly unavailable.",
      "Nothing: the runner backs off and catches up by itself. If it stays, lower "
      "RMSyncGraphConcurrency." },
    { "graph_server_error", "server error|HTTP 500|HTTP 502",
      "Microsoft Graph answered with a server error after the retries.",
      "Nothing: the next cycle tries again. If it stays for hours, check the Microsoft 365 "
      "service health." },
    { "graph_unreachable", "could not connect|timed out|connection failed or dropped|"
                           "TLS handshake|URL is not https|could not initialise the HTTP",
      "graph.microsoft.com could not be reached (network, DNS, proxy or TLS).",
      "Check the server's network, DNS and proxy (the https_proxy environment of Apache) and "
      "RMSyncCAFile / RMSyncGraphURL; the runner retries by itself." },
    { "item_not_found", "ErrorItemNotFound|not found",
      "The Outlook appointment no longer exists (deleted meanwhile).",
      "Nothing: the next delta pass handles the deletion." },
    { "conflict", "conflict (changed meanwhile)|ErrorIrresolvableConflict|HTTP 409|HTTP 412",
      "The appointment changed while it was being written.",
      "Nothing: it is read again and applied on the next pass." },
    { "delta_paging_loop", "paging loop",
      "Graph sent the same delta page again (or endless paging); the round was abandoned.",
      "Nothing at first: the round starts over next cycle. If it repeats, run Initial Sync "
      "for the representative." },
    { "graph_bad_response", "malformed or unexpected response|response too large",
      "Graph's answer could not be understood.",
      "Usually nothing (retried next cycle); if it repeats, report it with the Graph request "
      "id of the row." },
    { "graph_bad_request", "request rejected|invalid arguments|HTTP 400",
      "Graph rejected the request (HTTP 400).",
      "See the message: often an appointment Outlook cannot store (e.g. an invalid time zone "
      "or a too long field). Fix the activity, then Retry." },
    { "subscription_failed", "subscription",
      "The change notification subscription could not be created or renewed.",
      "Check that RMSyncNotificationURL is an https URL reachable from the internet "
      "(Microsoft answers the validation handshake) and that the app may read the mailbox; "
      "the delta pass still syncs every cycle meanwhile." },
    /* ---- the CRM side ---- */
    { "database_unavailable", "database|PostgreSQL|connection to server",
      "The sync database (PostgreSQL) could not be reached or refused a statement.",
      "Check that PostgreSQL runs and RMSyncDatabase (host, database, user, password) is "
      "right; the runner reconnects by itself." },
    { "master_not_ready", "the sync user|SYNC_MASTER",
      "The CRM user the sync writes as (RMSyncMasterUser, SYNC_MASTER) is missing, locked or "
      "inactive.",
      "Run sql/manualdeploy/UpdateSyncMasterUser.sql and activate the user in the CRM." },
    { "service_stopped", "service is stopped",
      "An admin stopped the sync service.",
      "Calendar Sync Configuration: Start." },
    { "breaker_hold", "held by the|mass-delete|breaker",
      "Many deletions at once: the mass-delete breaker holds them until an admin decides.",
      "Calendar Sync Configuration: Approve (delete) or Reject (keep and unlink)." },
    { "activity_rejected", "activity|business activity|crm",
      "The CRM refused to store the change of this activity.",
      "See the message; fix the activity in the CRM, then Retry." },
    /* ---- last resort ---- */
    { "unknown", "",
      "An error without a known class.",
      "See the message and the Apache ErrorLog (same time, same request id)." },
};

#define N_CLASSES ((int)(sizeof(classes) / sizeof(classes[0])))

/* case-insensitive strstr for ASCII */
static int contains(const char *hay, const char *needle, apr_size_t nlen)
{
    apr_size_t i;
    if (nlen == 0) return 0;
    for (; *hay; hay++) {
        for (i = 0; i < nlen && hay[i]
             && apr_tolower((unsigned char)hay[i]) == apr_tolower((unsigned char)needle[i]);
             i++)
            ;
        if (i == nlen) return 1;
    }
    return 0;
}

static int matches(const char *msg, const char *alts)
{
    const char *s = alts, *bar;
    while (s && *s) {
        bar = strchr(s, '|');
        if (contains(msg, s, bar ? (apr_size_t)(bar - s) : strlen(s))) {
            return 1;
        }
        s = bar ? bar + 1 : NULL;
    }
    return 0;
}

const rmsync_error_class_t *rmsync_error_classify(const char *msg)
{
    int i;
    if (msg && *msg) {
        for (i = 0; i < N_CLASSES - 1; i++) {
            if (matches(msg, classes[i].match)) {
                return &classes[i];
            }
        }
    }
    return &classes[N_CLASSES - 1];
}

const rmsync_error_class_t *rmsync_error_by_code(const char *code)
{
    int i;
    for (i = 0; code && i < N_CLASSES; i++) {
        if (!strcmp(classes[i].code, code)) {
            return &classes[i];
        }
    }
    return NULL;
}

const rmsync_error_class_t *rmsync_error_table(int *n)
{
    *n = N_CLASSES;
    return classes;
}

const char *rmsync_error_aadsts(apr_pool_t *p, const char *msg)
{
    const char *s = msg ? strstr(msg, "AADSTS") : NULL;
    apr_size_t n = 6;
    if (!s) return NULL;
    while (n < 16 && s[n] >= '0' && s[n] <= '9') n++;
    return n > 6 ? apr_pstrmemdup(p, s, n) : NULL;
}
