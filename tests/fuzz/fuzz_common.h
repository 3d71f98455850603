/* mod_rmsync fuzz targets (libFuzzer): shared set-up. One APR pool per process, cleared after
 * every input, so a leak or use-after-free across inputs shows up under ASan. */
#ifndef RMSYNC_FUZZ_COMMON_H
#define RMSYNC_FUZZ_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static apr_pool_t *fuzz_pool;

static inline void fuzz_init(void)
{
    if (!fuzz_pool) {
        apr_initialize();
        apr_pool_create(&fuzz_pool, NULL);
    }
}

/* A NUL-terminated copy of the input in the pool (an embedded NUL ends the string early, as a
 * C API taking const char * would see it). */
static inline char *fuzz_str(const uint8_t *data, size_t size)
{
    return apr_pstrmemdup(fuzz_pool, (const char *)data, size);
}

/* An invariant of the code under test broke: abort so libFuzzer records the input. */
#define FUZZ_ASSERT(c) do { if (!(c)) { fprintf(stderr, "fuzz assertion failed: %s (%s:%d)\n", \
                                                #c, __FILE__, __LINE__); abort(); } } while (0)

#endif
