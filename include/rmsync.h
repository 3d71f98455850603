/* mod_rmsync: common definitions for the glue and the core. */
#ifndef RMSYNC_H
#define RMSYNC_H

#define RMSYNC_VERSION "0.1.0"

/* Stable message ids, like httpd's AH numbers: "RMS00042: ...". Tests and admins grep them. */
#define RMSYNC_LOGNO(n) "RMS" #n ": "

/* APR_ARRAY_IDX with the cast through void *: an array's elts is a char * that apr_palloc
 * aligned for any type, which clang's -Wcast-align cannot know (gcc does not warn). */
#define RMSYNC_ARRAY_IDX(ary, i, type) (((type *)(void *)(ary)->elts)[i])

#endif /* RMSYNC_H */
