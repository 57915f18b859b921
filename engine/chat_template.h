/* engine/chat_template.h — renders chat messages into a model's prompt text
 * for the chat formats aha supports (ChatML/Qwen, Llama 3, DeepSeek-R1/V3,
 * the R1-Zero plain template), chosen from a model directory or by name.
 * Not a Jinja engine: each format is written out in C and checked against
 * the Hugging Face templates' output. */
#ifndef AHA_CHAT_TEMPLATE_H
#define AHA_CHAT_TEMPLATE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

enum chat_template_kind {
    CHAT_TEMPLATE_CHATML,       /* "chatml": <|im_start|>role\n...<|im_end|>\n */
    CHAT_TEMPLATE_QWEN2_5,      /* "qwen2.5": ChatML + Qwen2.5's default system prompt */
    CHAT_TEMPLATE_QWEN3,        /* "qwen3": ChatML + Qwen3's <think> handling */
    CHAT_TEMPLATE_LLAMA3,       /* "llama3": <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_TEMPLATE_DEEPSEEK_R1,  /* "deepseek-r1": <｜User｜>...<｜Assistant｜><think>\n */
    CHAT_TEMPLATE_DEEPSEEK_V3,  /* "deepseek-v3": as R1 without <think> prefill or stripping */
    CHAT_TEMPLATE_R1_ZERO,      /* "r1-zero": the plain template of the DeepSeek-R1 paper */
    CHAT_TEMPLATE_PLAIN,        /* "plain": "User: ...\nAssistant: ...", the format of aha's
                                 * synthetic pretraining text (datagen --format text) */
};

struct chat_msg {
    const char *role;           /* "system", "user", "assistant" (ChatML: any; qwen3: "tool") */
    const char *content;
    const char *reasoning;      /* reasoning_content, or NULL (qwen3 only) */
    const json_t *tool_calls;   /* an assistant's calls (borrowed array of OpenAI's
                                 * {"function": {"name", "arguments"}}), or NULL (qwen3 only) */
};

struct chat_opts {
    bool add_generation_prompt; /* end with the assistant's turn header */
    int prefill_think;          /* after it: -1 the template's default (deepseek-r1:
                                 * "<think>\n", others nothing), 0 nothing, 1 "<think>\n" */
    bool disable_thinking;      /* after it: an empty "<think>\n\n</think>\n\n" (Qwen3's
                                 * enable_thinking=False); overrides prefill_think */
    const json_t *tools;        /* OpenAI's tool definitions (borrowed array), or NULL:
                                 * the qwen3 template lists them in its system turn */
};

/* Name <-> kind ("chatml", "qwen2.5", "qwen3", "llama3", "deepseek-r1",
 * "deepseek-v3", "r1-zero", "plain"). from_name returns 0 or -1. */
int chat_template_from_name(const char *name, enum chat_template_kind *kind);
const char *chat_template_name(enum chat_template_kind kind);

/* Recognizes a Hugging Face Jinja chat template by its content; returns 0
 * or -1 when it is none aha implements. */
int chat_template_recognize(const char *jinja, enum chat_template_kind *kind);

/* Chooses the template of a model directory, first found of:
 * chat_template.name (a file holding one of the names above),
 * chat_template.jinja, tokenizer_config.json's "chat_template",
 * chat_template.json; with none of them, r1-zero (plain text, for base
 * models). Returns 0, or -1 with err naming the file and problem. */
int chat_template_detect(const char *model_dir, enum chat_template_kind *kind, char *err,
                         size_t errlen);

/* The template named `name`, or when name is NULL the one model_dir
 * declares (chat_template_detect). Returns 0, or -1 with err naming the
 * unknown name (and the known ones) or the model file at fault. */
int chat_template_select(const char *name, const char *model_dir, enum chat_template_kind *kind,
                         char *err, size_t errlen);

/* Renders messages; returns a new NUL-terminated string (caller frees) or
 * NULL with err filled (an unsupported role names the message index). */
char *chat_template_render(enum chat_template_kind kind, const struct chat_msg *msgs, size_t n,
                           const struct chat_opts *opts, char *err, size_t errlen);
/* Same from a JSON array of {"role","content"[,"reasoning_content"]
 * [,"tool_calls"]} objects (borrowed; content may be null beside
 * tool_calls); errors name the JSON path, e.g. messages[2].content. */
char *chat_template_render_json(enum chat_template_kind kind, const json_t *messages,
                                const struct chat_opts *opts, char *err, size_t errlen);

#endif
