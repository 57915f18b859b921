/* engine/schedule.h — learning-rate schedules shared by the trainers. */
#ifndef AHA_SCHEDULE_H
#define AHA_SCHEDULE_H

#include <math.h>

/* Linear warmup from lr/warmup to lr over `warmup` steps, then cosine decay
 * to lr * min_ratio at step steps-1 (0-based step). */
static inline float lr_warmup_cosine(int step, int steps, int warmup, float lr,
                                     float min_ratio)
{
    if (step < warmup) return lr * (float)(step + 1) / (float)warmup;
    int span = steps - warmup;
    double frac = span > 1 ? (double)(step - warmup) / (double)(span - 1) : 1.0;
    if (frac > 1) frac = 1;
    double c = 0.5 * (1.0 + cos(M_PI * frac));
    return (float)(lr * (min_ratio + (1.0 - min_ratio) * c));
}

#endif
