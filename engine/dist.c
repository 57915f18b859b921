/* engine/dist.c — see dist.h. */
#include "dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

#include "errmsg.h"

static int g_rank, g_size = 1;
static bool g_mpi;

int dist_init(char *err, size_t errlen)
{
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK")) return 0;
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
        errmsg_set(err, errlen, "MPI_Init failed (launched by mpirun or srun?)");
        return -1;
    }
    g_mpi = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    return 0;
}

void dist_finalize(void)
{
    if (g_mpi) MPI_Finalize();
    g_mpi = false;
}

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }

void dist_sum_floats(float *buf, size_t n)
{
    if (g_size == 1) return;
    for (size_t i = 0; i < n; i += INT_MAX) {
        const int k = n - i < INT_MAX ? (int)(n - i) : INT_MAX;
        MPI_Allreduce(MPI_IN_PLACE, buf + i, k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
}

double dist_sum(double x)
{
    if (g_size > 1) MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return x;
}

bool dist_any(bool x)
{
    int v = x;
    if (g_size > 1) MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return v != 0;
}

int dist_bcast_int(int x)
{
    if (g_size > 1) MPI_Bcast(&x, 1, MPI_INT, 0, MPI_COMM_WORLD);
    return x;
}

void dist_barrier(void)
{
    if (g_size > 1) MPI_Barrier(MPI_COMM_WORLD);
}
