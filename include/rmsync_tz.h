/* mod_rmsync: time zone names. Outlook mailboxes name their zone the Windows way ("W. Europe
 * Standard Time"); PostgreSQL wants IANA names ("Europe/Berlin"). The table follows CLDR's
 * windowsZones mapping (territory "001", the zone's main city). */
#ifndef RMSYNC_TZ_H
#define RMSYNC_TZ_H

/* A Windows zone id or an IANA name from the table (case-insensitive), or UTC/GMT/Etc/UTC ->
 * the IANA name (static storage); NULL when the name is not known. */
const char *rmsync_tz_to_iana(const char *name);

/* How many Windows zone ids the table maps (for tests). */
int rmsync_tz_count(void);

#endif /* RMSYNC_TZ_H */
