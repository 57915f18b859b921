/* engine/cli.h — the aha-engine subcommands, one function each; argv[0] is
 * the subcommand's name. Each returns the process exit code (0 ok, 1 runtime
 * error, 2 usage error) and prints its own errors on stderr. */
#ifndef AHA_CLI_H
#define AHA_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "kv_cache.h"

int cli_forward(int argc, char **argv);
int cli_pretrain(int argc, char **argv);
int cli_sample(int argc, char **argv);
int cli_bench(int argc, char **argv);
int cli_datagen(int argc, char **argv);
int cli_tokenize(int argc, char **argv);
int cli_detokenize(int argc, char **argv);
int cli_chat_template(int argc, char **argv);
int cli_score(int argc, char **argv);
int cli_train(int argc, char **argv);        /* engine/cli_train.c: pipelines */
int cli_generate(int argc, char **argv);     /* engine/cli_generate.c */
int cli_serve(int argc, char **argv);        /* engine/serve.c: NDJSON on stdin/stdout */
/* `bench generate`: prefill and decode throughput (engine/cli_bench_generate.c);
 * argv[0] is "generate". */
int cli_bench_generate(int argc, char **argv);
/* `bench grpo`: GRPO step-time split and rollout vs engine decode
 * tokens/s (engine/cli_bench_grpo.c); argv[0] is "grpo". */
int cli_bench_grpo(int argc, char **argv);
/* Shared by the benches (engine/cli_bench.c): sorts v[0..n) ascending in
 * place and returns its median v[n/2]; CPU seconds used by the process
 * (all threads), steadier than wall time on a shared machine. */
double bench_median(double *v, int n);
double bench_cpu_seconds(void);
/* GFLOP/s of the backend's matmul_forward on two large reference shapes
 * (the best median); print: one JSON line per shape. */
struct backend;
double bench_matmul_peak(const struct backend *be, bool print);

/* Option parsing shared by the subcommands: "--name value" pairs and bare
 * "--flag"s. cli_args_check rejects anything not in `opts` (options taking
 * a value) or `flags` (NULL-terminated lists), printing the usage error. */
int cli_args_check(int argc, char **argv, const char *const *opts,
                   const char *const *flags);
/* Value of --name, or NULL. */
const char *cli_arg(int argc, char **argv, const char *name);
bool cli_flag(int argc, char **argv, const char *name);
/* Parses --name as a number into *out when present; returns 0, or -1 after
 * printing "--name: expected ..." when malformed or outside [lo, hi]. */
int cli_arg_int(int argc, char **argv, const char *name, long lo, long hi, long *out);
int cli_arg_float(int argc, char **argv, const char *name, double lo, double hi, double *out);
/* --kv-dtype f16|f32|q8 into *out when present (the same 0 / -1). */
int cli_arg_kv_dtype(int argc, char **argv, enum kv_dtype *out);
struct model;
/* --dtype f32|bf16|q8 (the generation engine's weights) likewise; with a
 * model, auto too (w_dtype_parse). */
int cli_arg_dtype(int argc, char **argv, const struct model *m, enum w_dtype *out);
/* Parses "1,2,3" (non-negative ids) into a new array (caller frees);
 * returns the count, or -1 when empty or malformed. */
int cli_parse_ids(const char *s, int32_t **out);

#endif
