/* shm_size: bytes of the shared-memory segment (rmsync_shm_size) for each RMSyncMaxRepresentatives
 * value given on the command line; bench/run.sh tabulates it. Prints one JSON object
 * {"<max_reps>": bytes, ...}; out-of-range values give 0.
 *
 *   shm_size 1 256 1000 10000
 */
#include <stdio.h>
#include <stdlib.h>
#include "rmsync_shm.h"

int main(int argc, char **argv)
{
    int i;

    printf("{");
    for (i = 1; i < argc; i++) {
        int n = atoi(argv[i]);
        printf("%s\"%d\": %lu", i > 1 ? ", " : "", n, (unsigned long)rmsync_shm_size(n));
    }
    printf("}\n");
    return 0;
}
