/* engine/progress.h — a one-line terminal progress bar on stderr
 * ("step 120/300 [=====>    ] loss 2.31 | 45.2k tok/s | ETA 1m20s"),
 * drawn only when stderr is a terminal. */
#ifndef AHA_PROGRESS_H
#define AHA_PROGRESS_H

#include <stdbool.h>

struct progress {
    bool tty;
    long total;
    double t0;
};

void progress_init(struct progress *p, long total);
/* Redraws the bar for `done` steps; `extra` is text shown after the bar
 * (e.g. "loss 2.31 | 45.2k tok/s"). */
void progress_update(struct progress *p, long done, const char *extra);
/* Ends the line. */
void progress_finish(struct progress *p);
/* Monotonic seconds. */
double progress_now(void);

#endif
