/* mod_rmsync: RMSync* directives -> rmsync_settings_t (httpd glue, mod_rmsync/rmsync_config.c;
 * parsed in the httpd parent, read by every process). */
#ifndef MOD_RMSYNC_CONFIG_H
#define MOD_RMSYNC_CONFIG_H

#include "httpd.h"
#include "http_config.h"
#include "rmsync_settings.h"

extern const command_rec rmsync_cmds[];

void *rmsync_config_create_srv(apr_pool_t *p, server_rec *s);
void *rmsync_config_merge_srv(apr_pool_t *p, void *base, void *add);

/* The effective settings (the directives are global: every server shares the main server's). */
const rmsync_settings_t *rmsync_config_get(const server_rec *s);

/* check_config hook: cross-field checks, so `apache2 -t` reports them too. */
int rmsync_config_check(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);
/* Log the cross-field warnings (real post_config pass, so they reach the error log once). */
void rmsync_config_log_warnings(apr_pool_t *ptemp, server_rec *s);

#endif /* MOD_RMSYNC_CONFIG_H */
