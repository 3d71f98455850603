/* mod_rmsync: the "rmsync-admin" handler (mod_rmsync/rmsync_admin.c): admin pages, JSON, status. */
#ifndef RMSYNC_ADMIN_H
#define RMSYNC_ADMIN_H

#include "httpd.h"

#define RMSYNC_ADMIN_HANDLER "rmsync-admin"

int rmsync_admin_handler(request_rec *r);

#endif /* RMSYNC_ADMIN_H */
