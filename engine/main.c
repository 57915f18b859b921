/* engine/main.c — aha-engine: the compute process. Dispatches to the
 * subcommands in engine/cli_*.c; the only place that exits. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "cli.h"
#include "dist.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    bool uses_backend;
    const char *help;
} commands[] = {
    {"pretrain", cli_pretrain, true, "pretrain a model from scratch on JSONL {\"text\"}"},
    {"train", cli_train, true, "run a pipeline definition (stages: pretrain, sft, grpo, eval, generate, "
                               "rejection_sample, distill; data-parallel under mpirun)"},
    {"sample", cli_sample, true, "sample a completion from a model"},
    {"forward", cli_forward, true, "logits (and gradients) of a token sequence"},
    {"bench", cli_bench, true, "benchmarks: matmul, train, generate, grpo"},
    {"datagen", cli_datagen, false, "synthetic task data: arithmetic, countdown"},
    {"tokenize", cli_tokenize, false, "text on stdin -> JSON array of token ids"},
    {"detokenize", cli_detokenize, false, "JSON array of ids on stdin -> text"},
    {"chat-template", cli_chat_template, false, "render a JSON messages array with a model's template"},
    {"score", cli_score, false, "score JSONL completions on stdin with a reward spec"},
    {"generate", cli_generate, true, "generate from a prompt with the KV-cache engine"},
    {"serve", cli_serve, true, "serve models over NDJSON on stdin/stdout (api/engine-protocol.md)"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: aha-engine COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "train") == 0) {
        /* before any thread exists, so all inherit it: train takes its stop
         * signals on one thread with sigwait (cli_train.c) */
        sigset_t stop;
        sigemptyset(&stop);
        sigaddset(&stop, SIGTERM);
        sigaddset(&stop, SIGINT);
        pthread_sigmask(SIG_BLOCK, &stop, NULL);
    }
    if (strcmp(argv[1], "train") == 0 || strcmp(argv[1], "pretrain") == 0) {
        /* under mpirun: one rank of a data-parallel job (engine/dist.h);
         * the others' events go nowhere, rank 0 speaks for the job */
        char err[256];
        if (dist_init(err, sizeof err)) {
            fprintf(stderr, "aha-engine: %s\n", err);
            return 1;
        }
        if (!dist_leader() && !freopen("/dev/null", "w", stdout)) return 1;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        if (commands[i].uses_backend && dist_leader())
            fprintf(stderr, "aha-engine: backend %s: %s%s\n", backend_cpu()->name,
                    backend_cpu()->describe(), dist_size() > 1 ? " (rank 0 of a data-parallel job)" : "");
        const int rc = commands[i].run(argc - 1, argv + 1);
        dist_finalize();
        return rc;
    }
    fprintf(stderr, "aha-engine: unknown command \"%s\"\n", argv[1]);
    usage(stderr);
    return 2;
}
