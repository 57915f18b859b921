/* engine/rollout.c — see rollout.h. */
#include "rollout.h"
#include "errmsg.h"
#include "jsonl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *rl_row_prompt(const json_t *row)
{
    const json_t *p = json_object_get(row, "prompt");
    if (json_is_string(p)) return json_string_value(p);
    const json_t *msgs = json_object_get(row, "messages");
    for (size_t i = json_array_size(msgs); i-- > 0;) {
        const json_t *m = json_array_get(msgs, i);
        if (json_is_string(json_object_get(m, "role")) &&
            strcmp(json_string_value(json_object_get(m, "role")), "user") == 0 &&
            json_is_string(json_object_get(m, "content")))
            return json_string_value(json_object_get(m, "content"));
    }
    return "";
}

struct rl_reader {
    json_t *rows;
    const struct reward_spec *spec;
};

static int rl_read_row(void *ctx, json_t *row, char *err, size_t errlen)
{
    struct rl_reader *rd = ctx;
    if (!json_is_object(row)) { errmsg_set(err, errlen, "row is not a JSON object"); return -1; }
    if (!json_is_string(json_object_get(row, "prompt")) &&
        !json_is_array(json_object_get(row, "messages"))) {
        errmsg_set(err, errlen, "field \"prompt\" (a string) or \"messages\" (an array) is missing");
        return -1;
    }
    if (rd->spec && reward_check_fields(rd->spec, row, err, errlen)) return -1;
    json_array_append(rd->rows, row);
    return 0;
}

int rl_dataset_load(struct rl_dataset *d, const char *path, const struct reward_spec *spec,
                    char *err, size_t errlen)
{
    struct rl_reader rd = {.rows = json_array(), .spec = spec};
    d->rows = rd.rows;
    long n = jsonl_read(path, rl_read_row, &rd, err, errlen);
    d->n = (int)json_array_size(d->rows);
    if (n == 0) errmsg_set(err, errlen, "%s: no rows", path);
    if (n <= 0) {
        rl_dataset_free(d);
        return -1;
    }
    return 0;
}

int rl_prompting_open(struct rl_prompting *pr, const char *model_dir, const char *chat_template,
                      const char *plain, bool prefill_think, int max_prompt_tokens,
                      char *err, size_t errlen)
{
    char path[4096];
    memset(pr, 0, sizeof *pr);
    pr->plain = plain;
    pr->prefill_think = prefill_think;
    pr->max_prompt_tokens = max_prompt_tokens;
    snprintf(path, sizeof path, "%s/tokenizer.json", model_dir);
    struct tokenizer *tok = tok_load(path, err, errlen);
    if (!tok) return -1;
    pr->tok = tok;
    if (!plain && chat_template_select(chat_template, model_dir, &pr->kind, err, errlen)) {
        rl_prompting_close(pr);
        return -1;
    }
    return 0;
}

void rl_prompting_close(struct rl_prompting *pr)
{
    tok_free((struct tokenizer *)pr->tok);
    pr->tok = NULL;
}

void rl_reward_items(const struct rl_dataset *d, const struct rollout *out, int n,
                     struct reward_item *items)
{
    for (int i = 0; i < n; i++) {
        const json_t *row = json_array_get(d->rows, (size_t)out[i].row);
        items[i] = (struct reward_item){.prompt = rl_row_prompt(row), .completion = out[i].text,
                                        .completion_len = out[i].text_len,
                                        .completion_tokens = out[i].n_tokens, .fields = row};
    }
}

void rl_dataset_free(struct rl_dataset *d)
{
    json_decref(d->rows);
    memset(d, 0, sizeof *d);
}

void rollout_free(struct rollout *r)
{
    free(r->prompt);
    free(r->tokens);
    free(r->logprobs);
    free(r->text);
    memset(r, 0, sizeof *r);
}

/* The text a template prefills after the generation prompt when
 * prefill_think is set (e.g. "<think>\n"), so that rewards see the whole
 * reasoning; "" for plain templates. Returns a new string or NULL. */
static char *prefill_text(const json_t *row, const struct rl_prompting *pr)
{
    if (pr->plain || !pr->prefill_think) return strdup("");
    json_t *msgs = json_object_get(row, "messages");
    json_t *own = NULL;
    if (!msgs) msgs = own = json_pack("[{s:s,s:O}]", "role", "user", "content", json_object_get(row, "prompt"));
    char e[256];
    struct chat_opts with = {.add_generation_prompt = true, .prefill_think = 1};
    struct chat_opts without = {.add_generation_prompt = true, .prefill_think = 0};
    char *a = chat_template_render_json(pr->kind, msgs, &with, e, sizeof e);
    char *b = chat_template_render_json(pr->kind, msgs, &without, e, sizeof e);
    json_decref(own);
    char *r = NULL;
    if (a && b && strncmp(a, b, strlen(b)) == 0) r = strdup(a + strlen(b));
    free(a);
    free(b);
    return r ? r : strdup("");
}

/* Renders and tokenizes a row's prompt; returns the count or -1. */
static int prompt_ids(const json_t *row, const struct rl_prompting *pr, int32_t **ids,
                      char *err, size_t errlen)
{
    char *text = NULL;
    if (pr->plain) {
        const char *p = rl_row_prompt(row), *at = strstr(pr->plain, "{prompt}");
        size_t pl = strlen(p), tl = strlen(pr->plain);
        text = malloc(tl + pl + 1);
        if (!text) { errmsg_set(err, errlen, "out of memory"); return -1; }
        if (at) {
            size_t head = (size_t)(at - pr->plain);
            memcpy(text, pr->plain, head);
            memcpy(text + head, p, pl);
            strcpy(text + head + pl, at + 8);
        } else {
            strcpy(text, pr->plain);
        }
    } else {
        json_t *msgs = json_object_get(row, "messages");
        json_t *own = NULL;
        if (!msgs) {
            own = json_pack("[{s:s,s:O}]", "role", "user", "content", json_object_get(row, "prompt"));
            msgs = own;
        }
        struct chat_opts co = {.add_generation_prompt = true, .prefill_think = pr->prefill_think ? 1 : 0};
        text = chat_template_render_json(pr->kind, msgs, &co, err, errlen);
        json_decref(own);
        if (!text) return -1;
    }
    int n = tok_encode(pr->tok, text, strlen(text), ids);
    free(text);
    if (n <= 0) {
        free(*ids);
        errmsg_set(err, errlen, "the prompt tokenizes to nothing");
        return -1;
    }
    if (pr->max_prompt_tokens > 0 && n > pr->max_prompt_tokens) {
        int drop = n - pr->max_prompt_tokens;
        memmove(*ids, *ids + drop, (size_t)pr->max_prompt_tokens * sizeof **ids);
        n = pr->max_prompt_tokens;
    }
    return n;
}

void rollout_on_event(void *ctx, const struct gen_event *ev)
{
    (void)ctx;
    if (ev->kind != GEN_EVENT_DONE) return;
    struct rollout *r = (struct rollout *)ev->user + ev->index;
    r->n_tokens = ev->completion_tokens;
    r->tokens = malloc((size_t)(ev->completion_tokens > 0 ? ev->completion_tokens : 1) * sizeof *r->tokens);
    r->logprobs = malloc((size_t)(ev->completion_tokens > 0 ? ev->completion_tokens : 1) * sizeof *r->logprobs);
    if (r->tokens && r->logprobs && ev->completion_tokens > 0) {
        memcpy(r->tokens, ev->tokens, (size_t)ev->completion_tokens * sizeof *r->tokens);
        memcpy(r->logprobs, ev->token_logprobs, (size_t)ev->completion_tokens * sizeof *r->logprobs);
    }
    r->text = malloc(ev->full_len + 1);
    if (r->text) {
        memcpy(r->text, ev->full_text, ev->full_len);
        r->text[ev->full_len] = 0;
        r->text_len = ev->full_len;
    }
    r->truncated = ev->finish == GEN_FINISH_LENGTH;
}

int rollout_generate(struct gen_engine *ge, const struct rl_dataset *d,
                     const struct rl_prompting *pr, const int *rows, int n_rows,
                     int n_per_row, const struct sampler_params *sp, int max_tokens,
                     uint64_t seed, struct rollout *out, char *err, size_t errlen)
{
    memset(out, 0, (size_t)n_rows * n_per_row * sizeof *out);
    for (int i = 0; i < n_rows; i++) {
        const json_t *row = json_array_get(d->rows, (size_t)rows[i]);
        int32_t *ids = NULL;
        int n = prompt_ids(row, pr, &ids, err, errlen);
        if (n < 0) return -1;
        for (int j = 0; j < n_per_row; j++) {
            struct rollout *r = &out[i * n_per_row + j];
            r->row = rows[i];
            r->n_prompt = n;
            r->prompt = malloc((size_t)n * sizeof *ids);
            if (!r->prompt) { free(ids); errmsg_set(err, errlen, "out of memory"); return -1; }
            memcpy(r->prompt, ids, (size_t)n * sizeof *ids);
        }
        char id[32];
        snprintf(id, sizeof id, "rollout-%d", i);
        struct gen_request rq;
        gen_request_default(&rq);
        rq.id = id;
        rq.prompt = ids;
        rq.n_prompt = n;
        rq.n = n_per_row;
        rq.max_tokens = max_tokens;
        rq.sampling = *sp;
        rq.has_seed = true;
        /* splitmix-style mixing keeps (seed, row slot) streams apart */
        rq.seed = seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i * 0xbf58476d1ce4e5b9ULL + 1;
        rq.user = &out[i * n_per_row];
        int rc = gen_submit(ge, &rq, err, errlen);
        free(ids);
        if (rc) return -1;
    }
    for (;;) {
        int pending = gen_step(ge, err, errlen);
        if (pending < 0) return -1;
        if (pending == 0) break;
    }
    for (int i = 0; i < n_rows * n_per_row; i++)
        if (!out[i].tokens || !out[i].logprobs || !out[i].text) {
            errmsg_set(err, errlen, "generation lost a completion (out of memory?)");
            return -1;
        }
    /* A prefilled "<think>" belongs to the completion the rewards score. */
    for (int i = 0; pr->prefill_think && !pr->plain && i < n_rows; i++) {
        char *pre = prefill_text(json_array_get(d->rows, (size_t)rows[i]), pr);
        size_t pl = pre ? strlen(pre) : 0;
        for (int j = 0; pl && j < n_per_row; j++) {
            struct rollout *r = &out[i * n_per_row + j];
            char *t = malloc(pl + r->text_len + 1);
            if (!t) break;
            memcpy(t, pre, pl);
            memcpy(t + pl, r->text, r->text_len + 1);
            free(r->text);
            r->text = t;
            r->text_len += pl;
        }
        free(pre);
    }
    return 0;
}

