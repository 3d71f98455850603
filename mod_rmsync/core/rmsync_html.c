/* mod_rmsync, run by Apache worker processes (admin pages): the HTML page frame (head,
 * navigation, footer) and the embedded stylesheet (rmsync_html.h). */
#include <string.h>
#include <apr_strings.h>
#include "rmsync_escape.h"
#include "rmsync_html.h"

const char *rmsync_html_page_begin(apr_pool_t *p, const char *base, const char *title,
                                   const char *current)
{
    return rmsync_html_page_begin_refresh(p, base, title, current, 0);
}

const char *rmsync_html_page_begin_refresh(apr_pool_t *p, const char *base, const char *title,
                                           const char *current, int refresh_s)
{
    static const char *const pages[][2] = {
        { "config", "Configuration" }, { "log", "Sync Log" },
        { "status", "Status" }, { "metrics", "Metrics" },
    };
    const char *b = rmsync_html_escape(p, base);
    const char *nav = "";
    apr_size_t i;

    for (i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        int cur = current && !strcmp(current, pages[i][0]);
        nav = apr_pstrcat(p, nav, "<a href=\"", b, "/", pages[i][0], "\"",
                          cur ? " class=\"current\" aria-current=\"page\"" : "", ">",
                          pages[i][1], "</a>", NULL);
    }
    return apr_pstrcat(p,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        refresh_s > 0 ? apr_psprintf(p, "<meta http-equiv=\"refresh\" content=\"%d\">",
                                     refresh_s) : "",
        "<title>", rmsync_html_escape(p, title), " - mod_rmsync</title>"
        "<link rel=\"stylesheet\" href=\"", b, "/style.css\"></head>\n<body>"
        "<header class=\"top\"><span class=\"brand\">Outlook Calendar Sync</span><nav>", nav,
        "</nav></header>\n<main>\n<h1>", rmsync_html_escape(p, title), "</h1>\n", NULL);
}

const char *rmsync_html_page_end(apr_pool_t *p)
{
    (void)p;
    return "</main>\n<footer>mod_rmsync</footer>\n</body></html>\n";
}

const char rmsync_html_css[] =
    ":root{--fg:#1d2430;--muted:#5b6675;--line:#d8dee6;--bg:#f5f7fa;--card:#fff;"
    "--accent:#0f5fa8;--ok:#1d7a3a;--warn:#a85f00;--err:#b42318;}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;"
    "color:var(--fg);background:var(--bg)}\n"
    "header.top{display:flex;align-items:center;gap:24px;padding:10px 24px;background:#17324d;"
    "color:#fff}\n"
    "header.top .brand{font-weight:600;font-size:15px}\n"
    "header.top nav a{color:#c9d8e8;text-decoration:none;margin-right:18px;padding:4px 0}\n"
    "header.top nav a.current{color:#fff;border-bottom:2px solid #fff}\n"
    "main{padding:16px 24px;max-width:1500px}\n"
    "h1{font-size:20px;margin:4px 0 14px}\n"
    "h2{font-size:16px;margin:22px 0 8px}\n"
    "section.card h2{margin-top:0}\n"
    "section.card{background:var(--card);border:1px solid var(--line);border-radius:6px;"
    "padding:12px 16px;margin-bottom:14px}\n"
    "dl.settings{display:grid;grid-template-columns:max-content 1fr max-content 1fr;"
    "gap:4px 16px;margin:0}\n"
    "dl.settings dt{color:var(--muted)}\n"
    "dl.settings dd{margin:0;font-family:ui-monospace,Menlo,Consolas,monospace;"
    "overflow-wrap:anywhere}\n"
    "dl.counters{grid-template-columns:repeat(3,max-content 1fr)}\n"
    "dl.counters dd{text-align:right;padding-right:24px}\n"
    "table{border-collapse:collapse;width:100%;background:var(--card);"
    "border:1px solid var(--line)}\n"
    "th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);"
    "vertical-align:top}\n"
    "th{background:#eef2f6;font-weight:600;white-space:nowrap}\n"
    "tr:hover td{background:#f9fbfd}\n"
    "td.num{text-align:right;font-variant-numeric:tabular-nums}\n"
    "td.msg{max-width:520px;word-break:break-word}\n"
    "td.mono,span.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}\n"
    ".badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;"
    "font-weight:600;background:#e6e9ee;color:var(--muted)}\n"
    ".badge.ok{background:#e3f4e8;color:var(--ok)}\n"
    ".badge.warn{background:#fdf0dc;color:var(--warn)}\n"
    ".badge.err{background:#fde8e6;color:var(--err)}\n"
    ".hint{color:var(--muted);margin:6px 0 0}\n"
    /* log page: a shortened event id; the full one selects with one click (copy, no script) */
    "details.evid summary{cursor:pointer;font-size:12px;color:var(--muted)}\n"
    "details.evid code{display:block;word-break:break-all;user-select:all;font-size:12px}\n"
    ".flash{padding:8px 12px;border-radius:6px;margin-bottom:12px;background:#e8f1fb;"
    "border:1px solid #bcd5ef}\n"
    ".flash.err{background:#fde8e6;border-color:#f3b8b2}\n"
    /* the health banner (rmsync_admin_health.c) and an error's reason + fix */
    ".health{padding:8px 12px;border-radius:6px;margin-bottom:12px;border:1px solid}\n"
    ".health.ok{background:#e3f4e8;border-color:#a9d8b8;color:var(--ok)}\n"
    ".health.warning{background:#fdf0dc;border-color:#f0c98a}\n"
    ".health.error{background:#fde8e6;border-color:#f3b8b2}\n"
    ".health ul{margin:4px 0 0;padding-left:20px}.health li.error{color:var(--err)}\n"
    ".health .fixhint,.fix{color:var(--fg)}\n"
    ".fix{font-size:12px;margin-top:3px;color:var(--muted)}\n"
    ".badge.repeat{background:#eef1f5;color:var(--muted)}\n"
    "form.inline{display:inline;margin:0}\n"
    ".actions{display:flex;gap:8px;flex-wrap:wrap;align-items:center;margin-top:8px}\n"
    "button{font:inherit;font-size:13px;padding:3px 10px;border:1px solid #9fb3c8;"
    "border-radius:4px;background:#fff;color:var(--accent);cursor:pointer;white-space:nowrap}\n"
    "button:hover{background:#eef5fc}\n"
    "button:disabled{opacity:.45;cursor:not-allowed;background:#fff}\n"
    "button.primary{background:var(--accent);border-color:var(--accent);color:#fff}\n"
    "button.danger{color:var(--err);border-color:#e3a59f}\n"
    "form.filter{display:flex;gap:10px;flex-wrap:wrap;align-items:flex-end;margin-bottom:12px}\n"
    "form.filter label{display:flex;flex-direction:column;font-size:12px;color:var(--muted)}\n"
    "input,select{font:inherit;font-size:13px;padding:3px 6px;border:1px solid #b8c4d0;"
    "border-radius:4px}\n"
    "select{max-width:240px}\n"
    "td.when{white-space:nowrap}\n"
    ".pager{margin:10px 0;display:flex;gap:14px;align-items:center}\n"
    ".pager a{color:var(--accent)}\n"
    "a{color:var(--accent)}\n"
    "footer{padding:12px 24px;color:var(--muted);font-size:12px}\n";
