/* tests/unit/proc_status.h — this process's memory, for the tests that
 * check what loading and packing hold resident. */
#ifndef AHA_TEST_PROC_STATUS_H
#define AHA_TEST_PROC_STATUS_H

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A /proc/self/status field in bytes: VmRSS (resident memory) or VmHWM
 * (its peak since proc_reset_peak). */
static inline double proc_status_bytes(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    cr_assert_not_null(f);
    char line[256];
    double kb = -1;
    const size_t n = strlen(field);
    while (kb < 0 && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') kb = atof(line + n + 1);
    fclose(f);
    cr_assert(kb >= 0, "no %s in /proc/self/status", field);
    return kb * 1024;
}

/* VmHWM := VmRSS (5 written to /proc/self/clear_refs). */
static inline void proc_reset_peak(void)
{
    FILE *clear = fopen("/proc/self/clear_refs", "w");
    cr_assert(clear && fputs("5", clear) >= 0 && fclose(clear) == 0,
              "cannot reset the peak resident memory");
}

#endif
