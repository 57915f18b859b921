/* engine/progress.c — see progress.h. */
#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void progress_init(struct progress *p, long total)
{
    p->tty = isatty(2);
    p->total = total > 0 ? total : 1;
    p->t0 = progress_now();
}

static void fmt_secs(char *buf, size_t n, double s)
{
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

void progress_update(struct progress *p, long done, const char *extra)
{
    if (!p->tty) return;
    enum { WIDTH = 24 };
    char bar[WIDTH + 1], eta[32];
    long fill = done * WIDTH / p->total;
    for (int i = 0; i < WIDTH; i++) bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[WIDTH] = 0;
    double el = progress_now() - p->t0;
    fmt_secs(eta, sizeof eta, done > 0 ? el / (double)done * (double)(p->total - done) : 0);
    fprintf(stderr, "\r\033[Kstep %ld/%ld [%s] %s | ETA %s", done, p->total, bar,
            extra ? extra : "", eta);
    fflush(stderr);
}

void progress_finish(struct progress *p)
{
    if (p->tty) fputc('\n', stderr);
}
