/* mod_rmsync: common definitions for the glue and the core. */
#ifndef RMSYNC_H
#define RMSYNC_H

#define RMSYNC_VERSION "0.1.0"

/* Stable message ids, like httpd's AH numbers: "RMS00042: ...". Tests and admins grep them. */
#define RMSYNC_LOGNO(n) "RMS" #n ": "

#endif /* RMSYNC_H */
