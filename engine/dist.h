/* engine/dist.h — data parallelism across processes (DESIGN.md "Scaling
 * past one machine"): `mpirun -np P aha-engine train ...` (or Slurm's srun)
 * runs P copies of the same pipeline. The pretrain, sft and distill stages
 * split each step's batch across the ranks (rank r takes rows r, r+P, ...)
 * and sum their gradients with MPI_Allreduce before the optimizer step, so
 * every rank holds the same weights and the run computes what one process
 * would with the whole batch (up to the order of the gradient sums). The
 * other stages run on rank 0 while the others wait. Rank 0 alone writes
 * events, models, checkpoints and datasets (the ranks share a file system).
 * Without a launcher nothing of MPI is initialised: one rank of one. */
#ifndef AHA_DIST_H
#define AHA_DIST_H

#include <stdbool.h>
#include <stddef.h>

/* Joins the MPI job when a launcher started this process (its environment
 * says so: OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK); otherwise does
 * nothing. Returns 0, or -1 with err when MPI_Init failed. */
int dist_init(char *err, size_t errlen);
void dist_finalize(void);
int dist_rank(void);
int dist_size(void);
static inline bool dist_leader(void) { return dist_rank() == 0; }

/* Collective operations over every rank (no-ops on one): each rank must
 * make the same calls in the same order. */
void dist_sum_floats(float *buf, size_t n);    /* in place, element-wise sum */
double dist_sum(double x);
bool dist_any(bool x);                          /* true when any rank's x is */
int dist_bcast_int(int x);                      /* rank 0's x */
void dist_barrier(void);

#endif
