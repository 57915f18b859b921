/* engine/json_guide.c — the schema automaton and the vocabulary trie of
 * JSON mode and structured outputs (json_guide.h).
 *
 * The automaton is RFC 8259's grammar read one byte at a time: between
 * tokens `pos` says what may come (a key, a colon, a value, a comma or a
 * closing bracket), each open container has its schema node, and a token
 * in progress (string, number, literal, or a key or enum value matched
 * against the schema's candidates) has its own small state. A number has
 * no closing byte, so the byte after it ends it and is then read as
 * structure. Strings must be valid UTF-8 (no overlong forms, surrogates or
 * code points past U+10FFFF), as JSON text is.
 *
 * A compiled schema is one block: nodes, properties, literals and their
 * bytes. Node 0 is "any JSON value" (its objects' values and arrays'
 * items are node 0 again), the last node the root. An object without
 * properties takes any keys, of any values. Keys and enum values are
 * matched as their JSON text ("\"name\"", 12, true), so a key is written
 * exactly as the schema spells it. */
#include "json_guide.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_START, P_KEY_OR_CLOSE, P_KEY, P_COLON, P_VALUE, P_VALUE_OR_CLOSE, P_COMMA_OR_CLOSE,
       P_DONE };
enum { L_NONE, L_STRING, L_NUMBER, L_LITERAL, L_MATCH };
enum { S_NORMAL, S_ESC, S_HEX, S_UTF8 };
enum { N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };
enum { T_OBJECT = 1, T_ARRAY = 2, T_STRING = 4, T_INTEGER = 8, T_NUMBER = 16, T_BOOLEAN = 32,
       T_NULL = 64, T_ALL = 127 };

struct jg_node {
    uint8_t types;              /* T_*; 0 with lits: an enum */
    bool any_keys;              /* an object with any keys (their values: node values) */
    uint16_t items, values;     /* array items (after the tuple's); an any_keys object's values */
    int32_t tuple, ntuple;      /* an array's first items: nodes tuple[tuple, tuple + ntuple) */
    int32_t props, nprops;      /* properties: [props, props + nprops) */
    int32_t lits, nlits;        /* enum values: [lits, lits + nlits) */
    int32_t str, num;           /* string constraints, number bounds: an index, or -1 */
    uint32_t min_items, max_items;  /* arrays (max_items NO_MAX: none) */
    /* open containers a value of this node needs at least: as an object, as
     * an array, at all (0: a scalar will do; MD_NONE: none can be written) */
    uint8_t md_obj, md_arr, md;
    /* anyOf of several objects: until its first key the object is the union
     * (props: each branch's possible first keys, which switch to it);
     * empty_ok: a branch takes {} */
    bool union_obj, empty_ok;
};

#define MD_NONE 255
#define MAX_DEFS 256            /* distinct $refs targets */

#define NO_MAX UINT32_MAX

struct jg_text { int32_t off, len; };   /* bytes in the pool */
/* branch: in a union's props, the object node the key switches to, and
 * at, the property's index in it (0: an ordinary property) */
struct jg_prop { struct jg_text key; uint16_t node; bool required; uint16_t branch; uint8_t at; };
/* A string's minLength and maxLength (characters: code points; NO_MAX:
 * none), and its pattern (or format): a jre_prog at word re, or -1. */
struct jg_str { uint32_t min_len, max_len; int32_t re; };
/* A number's bounds: value >= lo (> with LO_EX), <= hi (< with HI_EX);
 * integer-only nodes have them as whole numbers, both included. */
enum { B_LO = 1, B_HI = 2, B_LO_EX = 4, B_HI_EX = 8 };
struct jg_num { double lo, hi; uint32_t flags; };

struct jg_schema {
    int nnodes, nprops, nlits, nstrs, nnums, nwords, ntuple;
    size_t npool;
    uint64_t *words;            /* the patterns' programs */
    uint16_t *tuple;            /* prefixItems' nodes */
    struct jg_num *nums;
    struct jg_node *nodes;
    struct jg_prop *props;
    struct jg_text *lits;
    struct jg_str *strs;
    char *pool;
    size_t bytes;               /* the whole block, for copies */
};

static const char *const literals[3] = {"true", "false", "null"};

/* --------------------------------------------------------------- schema */

static const struct jg_node any_nodes[2] = {
    {.types = T_ALL, .any_keys = true, .str = -1, .num = -1, .max_items = NO_MAX},  /* any value */
    {.types = T_OBJECT, .any_keys = true, .str = -1, .num = -1, .max_items = NO_MAX}, /* the root */
};
static const struct jg_schema any_object = {.nnodes = 2, .nodes = (struct jg_node *)any_nodes};

const struct jg_schema *jg_schema_object(void) { return &any_object; }

void jg_schema_free(struct jg_schema *sc)
{
    if (sc && sc != &any_object) free(sc);
}

/* The builder: growing arrays, then packed into one block. */
struct jg_build {
    struct jg_node *nodes;
    struct jg_prop *props;
    struct jg_text *lits;
    struct jg_str *strs;
    struct jg_num *nums;
    uint64_t *words;
    uint16_t *tuple;
    char *pool;
    int nnodes, nprops, nlits, nstrs, nnums, nwords, ntuple;
    struct { const json_t *def; int node; bool done; } memo[MAX_DEFS];  /* $ref targets */
    int nmemo;
    /* what is settled once every node is compiled (a recursive $ref's node
     * is only known then): $ref nodes as copies of their targets', anyOf
     * nodes as the merge of their branches (branch[start .. start + n)) */
    struct { int slot, src; } *alias;
    struct { int node, start, n; char *path; int uprops, nuprops; bool uready, uempty; } *anyof;
    uint16_t *branch;
    int nalias, nanyof, nbranch;
    size_t calias, canyof, cbranch;
    size_t npool, cnodes, cprops, clits, cstrs, cnums, cwords, ctuple, cpool;
    const json_t *root;
    char *err;
    size_t errlen;
};

static bool grow(void **p, size_t *cap, size_t n, size_t size)
{
    if (n <= *cap) return true;
    size_t c = *cap ? *cap * 2 : 16;
    while (c < n) c *= 2;
    void *q = realloc(*p, c * size);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

static int fail(struct jg_build *b, const char *path, const char *msg)
{
    snprintf(b->err, b->errlen, "json_schema%s%s: %s", *path ? " at " : "", path, msg);
    return -1;
}

static int add_text(struct jg_build *b, const char *t, size_t len, struct jg_text *out)
{
    if (!grow((void **)&b->pool, &b->cpool, b->npool + len, 1)) return -1;
    memcpy(b->pool + b->npool, t, len);
    out->off = (int32_t)b->npool;
    out->len = (int32_t)len;
    b->npool += len;
    return 0;
}

static int compile(struct jg_build *b, const json_t *s, const char *path, int refs);
static bool num_viable(const struct jg_state *s);

/* The validation keywords of strings, numbers and arrays; each applies to
 * values of its type only. */
static const char *const str_kw[] = {"minLength", "maxLength", "pattern", "format", NULL};
static const char *const num_kw[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                                     NULL};
static const char *const arr_kw[] = {"minItems", "maxItems", NULL};

static bool has_any(const json_t *s, const char *const *kw)
{
    for (; *kw; kw++)
        if (json_object_get(s, *kw)) return true;
    return false;
}

/* The formats, as the patterns they stand for (RFC 3339's date, time and
 * date-time, RFC 4122's uuid, an RFC 5321 dot-atom address, RFC 1123
 * host names, dotted-quad IPv4). */
static const char *const formats[][2] = {
    {"date", "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"},
    {"time", "^([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):"
             "[0-5][0-9])$"},
    {"date-time", "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):"
                  "[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"},
    {"uuid", "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"},
    {"email", "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@"
              "[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"},
    {"hostname", "^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                 "(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"},
    {"ipv4", "^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){3}"
             "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$"},
};

/* A count keyword (minLength, maxItems...): a whole number >= 0; dflt
 * when absent, NO_MAX from NO_MAX up. */
static int count_kw(struct jg_build *b, const json_t *s, const char *key, const char *path,
                    uint32_t dflt, uint32_t *out)
{
    const json_t *v = json_object_get(s, key);
    *out = dflt;
    if (!v) return 0;
    const double x = json_is_integer(v) ? (double)json_integer_value(v)
                   : json_is_real(v) ? json_real_value(v) : -1.0;
    if (!(x >= 0) || x != floor(x)) {
        char msg[96];
        snprintf(msg, sizeof msg, "\"%s\" must be a whole number >= 0", key);
        return fail(b, path, msg);
    }
    *out = x >= (double)NO_MAX ? NO_MAX : (uint32_t)x;
    return 0;
}

/* The string keywords of s: *out an index into b->strs, or -1 when none. */
static int str_constraints(struct jg_build *b, const json_t *s, const char *path, int32_t *out)
{
    *out = -1;
    if (!has_any(s, str_kw)) return 0;
    struct jg_str k = {0, NO_MAX, -1};
    if (count_kw(b, s, "minLength", path, 0, &k.min_len) ||
        count_kw(b, s, "maxLength", path, NO_MAX, &k.max_len))
        return -1;
    if (k.min_len > k.max_len) return fail(b, path, "\"minLength\" is greater than \"maxLength\"");
    const json_t *pat = json_object_get(s, "pattern"), *fmt = json_object_get(s, "format");
    if (pat && fmt) return fail(b, path, "\"pattern\" and \"format\" together are not supported");
    const char *text = NULL;
    size_t len = 0;
    char msg[320];
    if (pat) {
        if (!json_is_string(pat)) return fail(b, path, "\"pattern\" must be a string");
        text = json_string_value(pat);
        len = json_string_length(pat);
    } else if (fmt) {
        const char *name = json_string_value(fmt);
        for (size_t i = 0; name && i < sizeof formats / sizeof *formats; i++)
            if (!strcmp(name, formats[i][0])) text = formats[i][1];
        if (!text) {
            snprintf(msg, sizeof msg, "\"format\" \"%.64s\" is not supported (date-time, date, "
                     "time, uuid, email, hostname and ipv4 are)", name ? name : "");
            return fail(b, path, msg);
        }
        len = strlen(text);
    }
    if (text && (k.min_len > 0 || k.max_len != NO_MAX))
        return fail(b, path, "\"minLength\" or \"maxLength\" beside \"pattern\" or \"format\" "
                             "is not supported");
    if (text) {
        char e[200];
        struct jre_prog *prog = jre_compile(text, len, e, sizeof e);
        if (!prog) {
            snprintf(msg, sizeof msg, "\"%s\" %s", pat ? "pattern" : "format", e);
            return fail(b, path, msg);
        }
        const size_t words = prog->bytes / 8;
        if (!grow((void **)&b->words, &b->cwords, (size_t)b->nwords + words, 8)) {
            free(prog);
            return fail(b, path, "out of memory");
        }
        memcpy(b->words + b->nwords, prog, prog->bytes);
        free(prog);
        k.re = b->nwords;
        b->nwords += (int)words;
    }
    if (!grow((void **)&b->strs, &b->cstrs, (size_t)b->nstrs + 1, sizeof *b->strs))
        return fail(b, path, "out of memory");
    b->strs[b->nstrs] = k;
    *out = b->nstrs++;
    return 0;
}

/* The number keywords of s (types: the node's): *out an index into
 * b->nums, or -1 when none. */
static int num_bounds(struct jg_build *b, const json_t *s, const char *path, uint8_t types,
                      int32_t *out)
{
    *out = -1;
    if (!has_any(s, num_kw)) return 0;
    struct jg_num k = {-INFINITY, INFINITY, 0};
    for (int i = 0; num_kw[i]; i++) {
        const json_t *v = json_object_get(s, num_kw[i]);
        if (!v) continue;
        if (!json_is_number(v)) {
            char msg[96];
            snprintf(msg, sizeof msg, "\"%s\" must be a number", num_kw[i]);
            return fail(b, path, msg);
        }
        const double x = json_number_value(v);
        const bool ex = i >= 2, lower = i % 2 == 0;
        if (lower && (!(k.flags & B_LO) || x > k.lo || (x == k.lo && ex))) {
            k.lo = x;
            k.flags = (k.flags & ~(uint32_t)B_LO_EX) | B_LO | (ex ? B_LO_EX : 0);
        } else if (!lower && (!(k.flags & B_HI) || x < k.hi || (x == k.hi && ex))) {
            k.hi = x;
            k.flags = (k.flags & ~(uint32_t)B_HI_EX) | B_HI | (ex ? B_HI_EX : 0);
        }
    }
    if ((types & T_INTEGER) && !(types & T_NUMBER)) {
        /* whole-number bounds, both included */
        if (k.flags & B_LO) k.lo = k.flags & B_LO_EX ? floor(k.lo) + 1 : ceil(k.lo);
        if (k.flags & B_HI) k.hi = k.flags & B_HI_EX ? ceil(k.hi) - 1 : floor(k.hi);
        k.flags &= ~(uint32_t)(B_LO_EX | B_HI_EX);
    }
    /* some number must be within them: a '-' or a first digit that can
     * still be written out */
    const struct jg_schema one = {.nums = &k};
    bool some = false;
    for (int c = -1; c < 10 && !some; c++) {
        const struct jg_state st = {.sc = &one, .num = 0, .integer = !(types & T_NUMBER),
                                    .neg = c < 0, .nval = c < 0 ? 0 : c,
                                    .sub = c < 0 ? N_MINUS : c == 0 ? N_ZERO : N_INT};
        some = num_viable(&st);
    }
    if (!some)
        return fail(b, path, "no number is within its bounds (\"minimum\", \"maximum\" and the "
                             "exclusive ones)");
    if (!grow((void **)&b->nums, &b->cnums, (size_t)b->nnums + 1, sizeof *b->nums))
        return fail(b, path, "out of memory");
    b->nums[b->nnums] = k;
    *out = b->nnums++;
    return 0;
}

static int type_bits(struct jg_build *b, const json_t *t, const char *path, uint8_t *bits)
{
    static const char *const names[] = {"object", "array", "string", "integer", "number",
                                        "boolean", "null"};
    const json_t *one = t;
    size_t i = 0, n = json_is_array(t) ? json_array_size(t) : 1;
    *bits = 0;
    for (; i < n; i++) {
        if (json_is_array(t)) one = json_array_get(t, i);
        const char *name = json_string_value(one);
        int k = 0;
        while (name && k < 7 && strcmp(name, names[k])) k++;
        if (!name || k == 7) return fail(b, path, "\"type\" must be object, array, string, "
                                         "integer, number, boolean or null, or a list of them");
        *bits |= (uint8_t)(1 << k);
    }
    return n ? 0 : fail(b, path, "\"type\" is an empty list");
}

/* A node for schema s (path: where it is, for errors; refs: $refs followed
 * to get here); its index, or -1 with b->err set. */
static int compile(struct jg_build *b, const json_t *s, const char *path, int refs)
{
    char sub[512];
    if (!json_is_object(s)) return fail(b, path, "a schema must be an object");
    const json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        const char *r = json_string_value(ref), *name = NULL;
        const json_t *defs = NULL, *target = r && !strcmp(r, "#") ? b->root : NULL;
        if (r && !strncmp(r, "#/$defs/", 8)) defs = json_object_get(b->root, "$defs"), name = r + 8;
        else if (r && !strncmp(r, "#/definitions/", 14))
            defs = json_object_get(b->root, "definitions"), name = r + 14;
        if (name) target = json_object_get(defs, name);
        if (!target)
            return fail(b, path, "\"$ref\" must be \"#\" or name an entry of \"$defs\" or "
                                 "\"definitions\"");
        if (json_object_size(s) > 1) return fail(b, path, "\"$ref\" must stand alone");
        /* each target once: a recursive $ref comes back to its node */
        for (int i = 0; i < b->nmemo; i++)
            if (b->memo[i].def == target) return b->memo[i].node;
        if (b->nmemo == MAX_DEFS || refs >= MAX_DEFS)
            return fail(b, path, "more than 256 \"$ref\" targets");
        if (!grow((void **)&b->nodes, &b->cnodes, (size_t)b->nnodes + 1, sizeof *b->nodes))
            return fail(b, path, "out of memory");
        const int slot = b->nnodes++;
        b->nodes[slot] = any_nodes[0];
        const int me = b->nmemo++;
        b->memo[me].def = target;
        b->memo[me].node = slot;
        b->memo[me].done = false;
        const int got = compile(b, target, path, refs + 1);
        if (got < 0) return -1;
        for (int i = 0; i < b->nmemo; i++)
            if (b->memo[i].node == got && !b->memo[i].done)
                return fail(b, path, "\"$ref\" cycle with no schema in it");
        if (!grow((void **)&b->alias, &b->calias, (size_t)b->nalias + 1, sizeof *b->alias))
            return fail(b, path, "out of memory");
        b->alias[b->nalias].slot = slot;
        b->alias[b->nalias++].src = got;
        b->memo[me].done = true;
        return slot;
    }
    static const char *const known[] = {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const",
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "$defs",
        "definitions", "anyOf", "oneOf", "minLength", "maxLength", "pattern", "format", "minimum",
        "maximum", "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "prefixItems",
        "additionalItems", "discriminator", NULL};
    const char *k;
    const json_t *v;
    json_object_foreach((json_t *)s, k, v) {
        int i = 0;
        while (known[i] && strcmp(k, known[i])) i++;
        if (!known[i]) {
            snprintf(sub, sizeof sub, "keyword \"%.100s\" is not supported", k);
            return fail(b, path, sub);
        }
    }
    const json_t *type = json_object_get(s, "type"), *props = json_object_get(s, "properties");
    const json_t *items = json_object_get(s, "items"), *req = json_object_get(s, "required");
    const json_t *tup = json_object_get(s, "prefixItems");
    const json_t *addl = json_object_get(s, "additionalProperties");
    const json_t *en = json_object_get(s, "enum"), *cst = json_object_get(s, "const");
    const bool kw = has_any(s, str_kw) || has_any(s, num_kw) || has_any(s, arr_kw);
    if (!grow((void **)&b->nodes, &b->cnodes, (size_t)b->nnodes + 1, sizeof *b->nodes))
        return fail(b, path, "out of memory");
    const int me = b->nnodes++;
    struct jg_node n = {.str = -1, .num = -1, .max_items = NO_MAX};
    const json_t *alts = json_object_get(s, "anyOf");
    if (!alts) alts = json_object_get(s, "oneOf");
    if (alts) {
        /* branches of different types (Optional[X]: X or null), merged into
         * one node: the first byte of a value tells which (so anyOf and
         * oneOf mean the same here) */
        if (type || props || items || tup || req || en || cst || kw)
            return fail(b, path, "\"anyOf\" beside other constraints is not supported");
        if (!json_is_array(alts) || json_array_size(alts) == 0)
            return fail(b, path, "\"anyOf\" must be a list of schemas");
        const size_t nb = json_array_size(alts);
        if (!grow((void **)&b->anyof, &b->canyof, (size_t)b->nanyof + 1, sizeof *b->anyof) ||
            !grow((void **)&b->branch, &b->cbranch, (size_t)b->nbranch + nb, sizeof *b->branch) ||
            !(b->anyof[b->nanyof].path = strdup(path)))
            return fail(b, path, "out of memory");
        const int rec = b->nanyof++, start = b->nbranch;
        b->anyof[rec].node = me;
        b->anyof[rec].start = start;
        b->anyof[rec].n = (int)nb;
        b->anyof[rec].uready = false;
        b->nbranch += (int)nb;
        b->nodes[me] = n;
        size_t i;
        const json_t *alt;
        json_array_foreach(alts, i, alt) {
            snprintf(sub, sizeof sub, "%s%sanyOf[%zu]", path, *path ? "." : "", i);
            const int bi = compile(b, alt, sub, refs);
            if (bi < 0) return -1;
            if (bi == 0) {              /* one branch takes any value: so does the whole */
                b->anyof[rec].n = 0;
                return 0;
            }
            b->branch[start + (int)i] = (uint16_t)bi;
        }
        return me;
    }
    if (en || cst) {
        if (en && cst) return fail(b, path, "\"enum\" and \"const\" together");
        if (kw)
            return fail(b, path, "string, number and array keywords beside \"enum\" or \"const\" "
                                 "are not supported");
        const size_t count = en ? json_array_size(en) : 1;
        if ((en && !json_is_array(en)) || count == 0 || count > JG_MAX_CHOICES)
            return fail(b, path, "\"enum\" must be a list of 1 to 64 values");
        n.lits = b->nlits;
        for (size_t i = 0; i < count; i++) {
            const json_t *x = en ? json_array_get(en, i) : cst;
            if (json_is_object(x) || json_is_array(x))
                return fail(b, path, "\"enum\" and \"const\" values must be strings, numbers, "
                            "booleans or null");
            char *t = json_dumps(x, JSON_ENCODE_ANY | JSON_COMPACT);
            if (!t || !grow((void **)&b->lits, &b->clits, (size_t)b->nlits + 1, sizeof *b->lits) ||
                add_text(b, t, strlen(t), &b->lits[b->nlits])) {
                free(t);
                return fail(b, path, "out of memory");
            }
            free(t);
            b->nlits++;
        }
        n.nlits = (int32_t)count;
        b->nodes[me] = n;
        return me;
    }
    if (type && type_bits(b, type, path, &n.types)) return -1;
    if (!type) n.types = props || req ? T_OBJECT : items || tup ? T_ARRAY : T_ALL;
    if (!type && !props && !req && !items && !tup && !kw) return 0;     /* any value: node 0 */
    if ((n.types & T_STRING) && str_constraints(b, s, path, &n.str)) return -1;
    if ((n.types & (T_NUMBER | T_INTEGER)) && num_bounds(b, s, path, n.types, &n.num)) return -1;
    if (n.types & T_ARRAY) {
        if (count_kw(b, s, "minItems", path, 0, &n.min_items) ||
            count_kw(b, s, "maxItems", path, NO_MAX, &n.max_items))
            return -1;
        /* a tuple: prefixItems (or draft 7's list of items), then the rest:
         * items (additionalItems beside the list), false for none */
        const json_t *rest = items;
        const char *tname = "prefixItems";
        if (json_is_array(items)) {
            if (tup) return fail(b, path, "\"prefixItems\" beside \"items\" as a list");
            tup = items;
            tname = "items";
            rest = json_object_get(s, "additionalItems");
        }
        if (tup && (!json_is_array(tup) || json_array_size(tup) > JG_MAX_CHOICES))
            return fail(b, path, "\"prefixItems\" must be a list of at most 64 schemas");
        if (rest && !json_is_object(rest) && !json_is_boolean(rest))
            return fail(b, path, "\"items\" must be a schema or a boolean");
        n.tuple = b->ntuple;
        n.ntuple = tup ? (int32_t)json_array_size(tup) : 0;
        if (!grow((void **)&b->tuple, &b->ctuple, (size_t)b->ntuple + (size_t)n.ntuple,
                  sizeof *b->tuple))
            return fail(b, path, "out of memory");
        b->ntuple += n.ntuple;
        for (int i = 0; i < n.ntuple; i++) {
            snprintf(sub, sizeof sub, "%s%s%s[%d]", path, *path ? "." : "", tname, i);
            const int e = compile(b, json_array_get(tup, (size_t)i), sub, refs);
            if (e < 0) return -1;
            b->tuple[n.tuple + i] = (uint16_t)e;
        }
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", rest == items ? "items" : "additionalItems");
        const int it = json_is_object(rest) ? compile(b, rest, sub, refs) : 0;
        if (it < 0) return -1;
        n.items = (uint16_t)it;
        if (json_is_false(rest) && n.max_items > (uint32_t)n.ntuple) n.max_items = (uint32_t)n.ntuple;
        if (n.min_items > UINT16_MAX) return fail(b, path, "\"minItems\" above 65535 is not supported");
        if (n.max_items >= UINT16_MAX) n.max_items = NO_MAX;   /* the count stops at 65535 */
        if (n.min_items > n.max_items)
            return fail(b, path, "\"minItems\" is greater than \"maxItems\" (or than the items "
                                 "a tuple with no others has)");
    }
    if (n.types & T_OBJECT) {
        if (addl && !json_is_false(addl) && (props || req))
            return fail(b, path, "\"additionalProperties\" beside \"properties\" must be false");
        if (addl && !json_is_boolean(addl) && !json_is_object(addl))
            return fail(b, path, "\"additionalProperties\" must be a boolean or a schema");
        if (props && (!json_is_object(props) || json_object_size(props) > JG_MAX_CHOICES))
            return fail(b, path, "\"properties\" must be an object of at most 64 schemas");
        if (req && !json_is_array(req)) return fail(b, path, "\"required\" must be a list of names");
        n.any_keys = !props && !req && !json_is_false(addl);
        if (n.any_keys && json_is_object(addl)) {
            /* a map (pydantic's dict[str, X]): any keys, values of this schema */
            snprintf(sub, sizeof sub, "%s%sadditionalProperties", path, *path ? "." : "");
            const int vn = compile(b, addl, sub, refs);
            if (vn < 0) return -1;
            n.values = (uint16_t)vn;
        }
        n.props = b->nprops;
        n.nprops = props ? (int32_t)json_object_size(props) : 0;
        if (!grow((void **)&b->props, &b->cprops, (size_t)b->nprops + (size_t)n.nprops,
                  sizeof *b->props))
            return fail(b, path, "out of memory");
        b->nprops += n.nprops;
        int i = 0;
        json_object_foreach((json_t *)props, k, v) {
            json_t *ks = json_string(k);
            char *key = ks ? json_dumps(ks, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
            json_decref(ks);
            struct jg_text t;
            const int ok = key && !add_text(b, key, strlen(key), &t);
            free(key);
            if (!ok) return fail(b, path, "out of memory");
            snprintf(sub, sizeof sub, "%s%sproperties.%.200s", path, *path ? "." : "", k);
            const int pn = compile(b, v, sub, refs);
            if (pn < 0) return -1;
            b->props[n.props + i++] = (struct jg_prop){t, (uint16_t)pn, false, 0, 0};
        }
        size_t ri;
        const json_t *r;
        json_array_foreach(req, ri, r) {
            const char *name = json_string_value(r);
            int j = 0;
            while (name && j < n.nprops) {
                const struct jg_text *t = &b->props[n.props + j].key;
                if ((size_t)t->len == strlen(name) + 2 && !memcmp(b->pool + t->off + 1, name, t->len - 2))
                    break;
                j++;
            }
            if (!name || j == n.nprops)
                return fail(b, path, "\"required\" names a key that \"properties\" does not have");
            b->props[n.props + j].required = true;
        }
    }
    b->nodes[me] = n;
    return me;
}

/* anyOf node a as the merge of its branches (each is one of its types,
 * but objects: several make a union, its props built by union_props). */
static void merge_anyof(struct jg_build *b, int a)
{
    struct jg_node n = {.str = -1, .num = -1, .max_items = NO_MAX};
    int objects = 0;
    for (int i = 0; i < b->anyof[a].n; i++) objects += (b->nodes[b->branch[b->anyof[a].start + i]].types & T_OBJECT) != 0;
    for (int i = 0; i < b->anyof[a].n; i++) {
        const struct jg_node *x = &b->nodes[b->branch[b->anyof[a].start + i]];
        n.types |= x->types;
        if (x->types & T_STRING) n.str = x->str;
        if (x->types & (T_NUMBER | T_INTEGER)) n.num = x->num;
        if (x->types & T_ARRAY) {
            n.items = x->items;
            n.tuple = x->tuple;
            n.ntuple = x->ntuple;
            n.min_items = x->min_items;
            n.max_items = x->max_items;
        }
        if ((x->types & T_OBJECT) && objects == 1) {
            n.any_keys = x->any_keys;
            n.values = x->values;
            n.props = x->props;
            n.nprops = x->nprops;
            n.union_obj = x->union_obj;
            n.empty_ok = x->empty_ok;
        }
    }
    if (objects > 1) {
        n.union_obj = true;
        n.props = b->anyof[a].uready ? b->anyof[a].uprops : 0;
        n.nprops = b->anyof[a].uready ? b->anyof[a].nuprops : 0;
        n.empty_ok = b->anyof[a].uready && b->anyof[a].uempty;
    }
    b->nodes[b->anyof[a].node] = n;
}

/* The props of anyOf a's union of objects: each object branch's possible
 * first keys (its properties up to its first required one), each one
 * switching to its branch. Keys must tell the branches apart. */
static int union_props(struct jg_build *b, int a)
{
    const int start = b->nprops;
    bool empty = false;
    char sub[600];
    for (int i = 0; i < b->anyof[a].n; i++) {
        const int bn = b->branch[b->anyof[a].start + i];
        const struct jg_node *x = &b->nodes[bn];
        if (!(x->types & T_OBJECT)) continue;
        snprintf(sub, sizeof sub, "%s%sanyOf[%d]", b->anyof[a].path, *b->anyof[a].path ? "." : "", i);
        if (x->any_keys || x->union_obj)
            return fail(b, sub, "an object of \"anyOf\" beside other objects must list its "
                                "\"properties\" (not any keys, not another union)");
        bool req = false;
        for (int j = 0; j < x->nprops && !req; j++) {
            const struct jg_prop p = b->props[x->props + j];
            req = p.required;
            for (int k = start; k < b->nprops; k++)
                if (b->props[k].key.len == p.key.len &&
                    !memcmp(b->pool + b->props[k].key.off, b->pool + p.key.off, (size_t)p.key.len))
                    return fail(b, sub, "objects of \"anyOf\" must begin with different keys (their "
                                        "first properties, up to the first required one)");
            if (b->nprops - start == JG_MAX_CHOICES)
                return fail(b, sub, "objects of \"anyOf\" may begin with at most 64 keys in all");
            if (!grow((void **)&b->props, &b->cprops, (size_t)b->nprops + 1, sizeof *b->props))
                return fail(b, sub, "out of memory");
            b->props[b->nprops++] = (struct jg_prop){p.key, p.node, false, (uint16_t)bn, (uint8_t)j};
        }
        empty = empty || !req;
    }
    b->anyof[a].uprops = start;
    b->anyof[a].nuprops = b->nprops - start;
    b->anyof[a].uempty = empty;
    b->anyof[a].uready = true;
    return 0;
}

static bool same_node(const struct jg_node *a, const struct jg_node *x)
{
    return a->types == x->types && a->any_keys == x->any_keys && a->items == x->items &&
           a->values == x->values && a->tuple == x->tuple && a->ntuple == x->ntuple &&
           a->props == x->props && a->nprops == x->nprops && a->lits == x->lits &&
           a->nlits == x->nlits && a->str == x->str && a->num == x->num &&
           a->min_items == x->min_items && a->max_items == x->max_items &&
           a->union_obj == x->union_obj && a->empty_ok == x->empty_ok;
}

/* Settles $ref and anyOf nodes: copies and merges applied until none
 * changes (each round settles at least the next link of every chain of
 * them; more rounds than links: a cycle of them with no schema between),
 * then the branches of each anyOf checked. Returns 0 or -1 with b->err
 * set. */
static int settle(struct jg_build *b)
{
    int rounds = 0;
    bool unions = false;
again:
    for (bool changed = true; changed; rounds++) {
        if (rounds > b->nalias + b->nanyof + 1)
            return fail(b, "", "\"$ref\" and \"anyOf\" refer to each other with no schema between");
        changed = false;
        for (int i = 0; i < b->nalias; i++) {
            struct jg_node *d = &b->nodes[b->alias[i].slot];
            if (!same_node(d, &b->nodes[b->alias[i].src])) {
                *d = b->nodes[b->alias[i].src];
                changed = true;
            }
        }
        for (int i = 0; i < b->nanyof; i++) {
            if (!b->anyof[i].n) continue;
            const struct jg_node before = b->nodes[b->anyof[i].node];
            merge_anyof(b, i);
            changed = changed || !same_node(&before, &b->nodes[b->anyof[i].node]);
        }
    }
    for (int i = 0; i < b->nanyof; i++) {
        uint8_t seen = 0;
        for (int k = 0; k < b->anyof[i].n; k++) {
            const struct jg_node *x = &b->nodes[b->branch[b->anyof[i].start + k]];
            char sub[600];
            snprintf(sub, sizeof sub, "%s%sanyOf[%d]", b->anyof[i].path, *b->anyof[i].path ? "." : "", k);
            if (x->nlits) return fail(b, sub, "\"enum\" and \"const\" in \"anyOf\" are not supported");
            if (seen & x->types & ~T_OBJECT)
                return fail(b, sub, "\"anyOf\" branches must be of different types (but objects)");
            seen |= x->types;
        }
    }
    if (unions) return 0;
    /* the branches are final: the unions' keys, then settled again so that
     * copies of the unions see them */
    for (int i = 0; i < b->nanyof; i++) {
        int objects = 0;
        for (int k = 0; k < b->anyof[i].n; k++)
            objects += (b->nodes[b->branch[b->anyof[i].start + k]].types & T_OBJECT) != 0;
        if (objects > 1 && union_props(b, i)) return -1;
    }
    unions = true;
    rounds = 0;
    goto again;
}

/* The open containers each node needs at least (md_obj, md_arr, md), to
 * a fixed point: recursive schemas refer back to nodes not yet known. */
static void depth_needs(struct jg_build *b)
{
    for (int i = 0; i < b->nnodes; i++) b->nodes[i].md_obj = b->nodes[i].md_arr = b->nodes[i].md = MD_NONE;
    for (bool changed = true; changed;) {
        changed = false;
        for (int i = 0; i < b->nnodes; i++) {
            struct jg_node *n = &b->nodes[i];
            int obj = MD_NONE, arr = MD_NONE;
            const int scalar = n->nlits || (n->types & ~(T_OBJECT | T_ARRAY)) ? 0 : MD_NONE;
            if ((n->types & T_OBJECT) && n->union_obj) {
                /* its easiest branch (or {}) */
                obj = n->empty_ok ? 1 : MD_NONE;
                for (int j = 0; j < n->nprops; j++)
                    if (b->nodes[b->props[n->props + j].branch].md_obj < obj)
                        obj = b->nodes[b->props[n->props + j].branch].md_obj;
            } else if (n->types & T_OBJECT) {
                int need = 0;
                for (int j = 0; j < n->nprops; j++)
                    if (b->props[n->props + j].required && b->nodes[b->props[n->props + j].node].md > need)
                        need = b->nodes[b->props[n->props + j].node].md;
                obj = need + 1;
            }
            if (n->types & T_ARRAY) {
                int need = 0;
                for (int j = 0; j < n->ntuple && (uint32_t)j < n->min_items; j++)
                    if (b->nodes[b->tuple[n->tuple + j]].md > need) need = b->nodes[b->tuple[n->tuple + j]].md;
                if (n->min_items > (uint32_t)n->ntuple && b->nodes[n->items].md > need)
                    need = b->nodes[n->items].md;
                arr = need + 1;
            }
            obj = obj > MD_NONE ? MD_NONE : obj;
            arr = arr > MD_NONE ? MD_NONE : arr;
            int md = scalar < obj ? scalar : obj;
            md = md < arr ? md : arr;
            if (obj != n->md_obj || arr != n->md_arr || md != n->md) {
                n->md_obj = (uint8_t)obj;
                n->md_arr = (uint8_t)arr;
                n->md = (uint8_t)md;
                changed = true;
            }
        }
    }
}

/* The block's sections after its header (words, nums, nodes, props, lits,
 * strs, tuple, pool), each 8-aligned: their offsets; returns the block's
 * size. */
static size_t sections(const struct jg_schema *sc, size_t off[8])
{
    const size_t size[8] = {
        (size_t)sc->nwords * sizeof *sc->words, (size_t)sc->nnums * sizeof *sc->nums,
        (size_t)sc->nnodes * sizeof *sc->nodes, (size_t)sc->nprops * sizeof *sc->props,
        (size_t)sc->nlits * sizeof *sc->lits, (size_t)sc->nstrs * sizeof *sc->strs,
        (size_t)sc->ntuple * sizeof *sc->tuple, sc->npool};
    size_t at = (sizeof *sc + 7) / 8 * 8;
    for (int i = 0; i < 8; i++) {
        off[i] = at;
        at += (size[i] + 7) / 8 * 8;
    }
    return at;
}

/* Points sc's arrays at their sections of its block. */
static void layout(struct jg_schema *sc)
{
    size_t off[8];
    sections(sc, off);
    char *base = (char *)sc;
    sc->words = (uint64_t *)(base + off[0]);
    sc->nums = (struct jg_num *)(base + off[1]);
    sc->nodes = (struct jg_node *)(base + off[2]);
    sc->props = (struct jg_prop *)(base + off[3]);
    sc->lits = (struct jg_text *)(base + off[4]);
    sc->strs = (struct jg_str *)(base + off[5]);
    sc->tuple = (uint16_t *)(base + off[6]);
    sc->pool = base + off[7];
}

struct jg_schema *jg_schema_compile(const json_t *schema, char *err, size_t errlen)
{
    struct jg_build b = {.root = schema, .err = err, .errlen = errlen};
    struct jg_schema *sc = NULL;
    if (grow((void **)&b.nodes, &b.cnodes, 1, sizeof *b.nodes)) {
        b.nodes[0] = any_nodes[0];
        b.nnodes = 1;
        int root = compile(&b, schema, "", 0);
        if (root >= 0 && settle(&b)) root = -1;
        if (root >= 0) depth_needs(&b);
        if (root >= 0 && b.nodes[root].types != T_OBJECT)
            fail(&b, "", "the root must be an object schema (\"type\": \"object\")");
        else if (root >= 0 && b.nodes[root].md_obj > JG_MAX_DEPTH)
            fail(&b, "", "no object of the schema fits in 32 nested objects and arrays (or its "
                         "required properties recurse without end)");
        else if (root >= 0 && b.nnodes + 1 > UINT16_MAX)
            fail(&b, "", "too many schemas");
        else if (root >= 0) {
            /* the root as node 1: node `root` is 1 (the first compiled) or a $ref */
            const struct jg_schema counts = {
                .nnodes = b.nnodes + 1, .nprops = b.nprops, .nlits = b.nlits, .nstrs = b.nstrs,
                .nnums = b.nnums, .nwords = b.nwords, .ntuple = b.ntuple, .npool = b.npool};
            size_t off[8];
            const size_t bytes = sections(&counts, off);
            if ((sc = calloc(1, bytes))) {
                *sc = counts;
                sc->bytes = bytes;
                layout(sc);
                memcpy(sc->nodes, b.nodes, (size_t)b.nnodes * sizeof *b.nodes);
                sc->nodes[b.nnodes] = b.nodes[root];        /* a copy of the root, last */
                if (b.nprops) memcpy(sc->props, b.props, (size_t)b.nprops * sizeof *b.props);
                if (b.nlits) memcpy(sc->lits, b.lits, (size_t)b.nlits * sizeof *b.lits);
                if (b.nstrs) memcpy(sc->strs, b.strs, (size_t)b.nstrs * sizeof *b.strs);
                if (b.nnums) memcpy(sc->nums, b.nums, (size_t)b.nnums * sizeof *b.nums);
                if (b.nwords) memcpy(sc->words, b.words, (size_t)b.nwords * sizeof *b.words);
                if (b.ntuple) memcpy(sc->tuple, b.tuple, (size_t)b.ntuple * sizeof *b.tuple);
                if (b.npool) memcpy(sc->pool, b.pool, b.npool);
            } else {
                fail(&b, "", "out of memory");
            }
        }
    } else {
        fail(&b, "", "out of memory");
    }
    free(b.nodes);
    free(b.props);
    free(b.lits);
    free(b.strs);
    free(b.nums);
    free(b.words);
    free(b.tuple);
    free(b.pool);
    for (int i = 0; i < b.nanyof; i++) free(b.anyof[i].path);
    free(b.anyof);
    free(b.alias);
    free(b.branch);
    return sc;
}

struct jg_schema *jg_schema_copy(const struct jg_schema *sc)
{
    if (sc == &any_object) return (struct jg_schema *)sc;
    struct jg_schema *c = malloc(sc->bytes);
    if (!c) return NULL;
    memcpy(c, sc, sc->bytes);
    layout(c);
    return c;
}

/* ------------------------------------------------------------ automaton */

void jg_init(struct jg_state *s, const struct jg_schema *sc)
{
    memset(s, 0, sizeof *s);
    s->sc = sc;
    s->pos = P_START;
    s->cur = (uint16_t)(sc->nnodes - 1);    /* the root is the last node */
    s->str = s->num = -1;
}

bool jg_done(const struct jg_state *s)
{
    return s->pos == P_DONE;
}

static const struct jg_node *node(const struct jg_state *s, int i)
{
    return &s->sc->nodes[i];
}

/* The open container's node. */
static const struct jg_node *top(const struct jg_state *s)
{
    return node(s, s->node[s->depth - 1]);
}

static void after_value(struct jg_state *s)
{
    s->lex = L_NONE;
    s->pos = s->depth ? P_COMMA_OR_CLOSE : P_DONE;
}

/* The node of item i of array a. */
static uint16_t item_node(const struct jg_state *s, const struct jg_node *a, uint32_t i)
{
    return i < (uint32_t)a->ntuple ? s->sc->tuple[a->tuple + i] : a->items;
}

static bool push(struct jg_state *s, int n, bool object)
{
    if (s->depth == JG_MAX_DEPTH) return false;
    s->node[s->depth] = (uint16_t)n;
    s->next[s->depth] = 0;
    s->count[s->depth] = 0;
    if (object) s->objects |= 1u << s->depth;
    else s->objects &= ~(1u << s->depth);
    s->depth++;
    s->pos = object ? P_KEY_OR_CLOSE : P_VALUE_OR_CLOSE;
    if (!object) s->cur = item_node(s, node(s, n), 0);
    return true;
}

static void pop(struct jg_state *s)
{
    s->depth--;
    after_value(s);
}

/* Whether the open object may close: no required property left. */
static bool may_close(const struct jg_state *s)
{
    const struct jg_node *o = top(s);
    if (o->any_keys) return true;
    if (o->union_obj) return o->empty_ok;
    for (int i = s->next[s->depth - 1]; i < o->nprops; i++)
        if (s->sc->props[o->props + i].required) return false;
    return true;
}

/* Whether a value of node n can still be written inside the open
 * containers (its own need at most the depth left). */
static bool fits(const struct jg_state *s, int n)
{
    return node(s, n)->md <= JG_MAX_DEPTH - s->depth;
}

/* The candidates for the open object's next key: from its next property
 * up to the first required one (the optional ones may be left out, and
 * are when their value would not fit: recursive schemas). */
static uint64_t key_candidates(const struct jg_state *s)
{
    const struct jg_node *o = top(s);
    uint64_t c = 0;
    for (int i = s->next[s->depth - 1]; i < o->nprops; i++) {
        const struct jg_prop *p = &s->sc->props[o->props + i];
        /* a union's key: its branch must fit, as an object opened here */
        if (p->branch && node(s, p->branch)->md_obj > JG_MAX_DEPTH - s->depth + 1) continue;
        if (p->required || fits(s, p->node)) c |= 1ULL << i;
        if (p->required) break;
    }
    return c;
}

static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

/* A constrained string (s->str >= 0): whether one more character in
 * [lo, hi] could come (none past maxLength, none the pattern cannot go on
 * with) ... */
static bool str_can(const struct jg_state *s, uint32_t lo, uint32_t hi)
{
    const struct jg_str *k = &s->sc->strs[s->str];
    if (s->len >= k->max_len) return false;
    return k->re < 0 || jre_can((const struct jre_prog *)(s->sc->words + k->re), s->re, lo, hi);
}

/* ... one that \u can write (no surrogates: a pattern's classes hold
 * none, so only a range of nothing else needs refusing here) ... */
static bool str_can_escape(const struct jg_state *s, uint32_t lo, uint32_t hi)
{
    return (lo < 0xD800 || hi > 0xDFFF) && str_can(s, lo, hi);
}

/* ... and character c, taken. */
static bool str_char(struct jg_state *s, uint32_t c)
{
    const struct jg_str *k = &s->sc->strs[s->str];
    if (s->len >= k->max_len) return false;
    s->len++;
    return k->re < 0 || jre_step((const struct jre_prog *)(s->sc->words + k->re), s->re, c);
}

/* Whether a constrained string may end here. */
static bool str_whole(const struct jg_state *s)
{
    const struct jg_str *k = &s->sc->strs[s->str];
    return s->len >= k->min_len &&
           (k->re < 0 || jre_accepts((const struct jre_prog *)(s->sc->words + k->re), s->re));
}

static bool feed_string(struct jg_state *s, unsigned char c)
{
    const bool ck = s->str >= 0;
    switch (s->sub) {
    case S_ESC:
        if (c == 'u') {
            s->sub = S_HEX;
            s->aux = 4;
            s->cp = 0;
            return !ck || str_can_escape(s, 0, 0xFFFF);
        }
        if (c && strchr("\"\\/bfnrt", c)) {
            s->sub = S_NORMAL;
            static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
            return !ck || str_char(s, (unsigned char)to[strchr(from, c) - from]);
        }
        return false;
    case S_HEX: {
        const int v = is_digit(c) ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f'
                    ? (c | 0x20) - 'a' + 10 : -1;
        if (v < 0) return false;
        s->cp = s->cp << 4 | (uint32_t)v;
        if (--s->aux == 0) s->sub = S_NORMAL;
        if (!ck) return true;
        if (s->aux == 0) return (s->cp < 0xD800 || s->cp > 0xDFFF) && str_char(s, s->cp);
        const uint32_t lo = s->cp << (4 * s->aux), hi = lo | ((1u << (4 * s->aux)) - 1);
        return str_can_escape(s, lo, hi);
    }
    case S_UTF8:
        if (c < s->lo || c > s->hi) return false;
        s->lo = 0x80;
        s->hi = 0xBF;
        s->cp = s->cp << 6 | (c & 0x3Fu);
        if (--s->aux == 0) {
            s->sub = S_NORMAL;
            return !ck || str_char(s, s->cp);
        }
        return !ck || str_can(s, s->cp << (6 * s->aux), ((s->cp + 1) << (6 * s->aux)) - 1);
    default:
        break;
    }
    if (c == '"') {
        if (ck && !str_whole(s)) return false;
        if (s->key) {
            /* a key of an object of any keys: its value is of the object's
             * values node */
            s->lex = L_NONE;
            s->pos = P_COLON;
            s->cur = top(s)->values;
        } else {
            after_value(s);
        }
        return true;
    }
    if (c == '\\') {
        s->sub = S_ESC;
        /* an escape writes one of \" \\ / \b \f \n \r \t, or \u any BMP character */
        return !ck || str_can_escape(s, 0, 0xFFFF);
    }
    if (c < 0x20) return false;
    if (c < 0x80) return !ck || str_char(s, c);
    /* a UTF-8 lead byte: how many continuation bytes, the first one's range */
    s->lo = 0x80;
    s->hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) s->aux = 1;
    else if (c == 0xE0) s->aux = 2, s->lo = 0xA0;
    else if (c == 0xED) s->aux = 2, s->hi = 0x9F;
    else if (c >= 0xE1 && c <= 0xEF) s->aux = 2;
    else if (c == 0xF0) s->aux = 3, s->lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) s->aux = 3;
    else if (c == 0xF4) s->aux = 3, s->hi = 0x8F;
    else return false;
    s->sub = S_UTF8;
    s->cp = c & (0x3Fu >> s->aux);
    if (!ck) return true;
    /* the characters this lead byte and its continuation bytes can write */
    const uint32_t lo = (s->cp << (6 * s->aux)) | (uint32_t)(s->lo & 0x3F) << (6 * s->aux - 6);
    const uint32_t hi = (s->cp << (6 * s->aux)) | (uint32_t)(s->hi & 0x3F) << (6 * s->aux - 6) |
                        ((1u << (6 * s->aux - 6)) - 1);
    return str_can(s, lo, hi);
}

/* Whether some value in the interval from a to b (a_in, b_in: the ends
 * included) is within the bounds of the number in progress. */
static bool num_meets(const struct jg_state *s, double a, bool a_in, double b, bool b_in)
{
    const struct jg_num *k = &s->sc->nums[s->num];
    if (k->flags & B_LO) {
        if (k->lo > a) a = k->lo, a_in = !(k->flags & B_LO_EX);
        else if (k->lo == a) a_in = a_in && !(k->flags & B_LO_EX);
    }
    if (k->flags & B_HI) {
        if (k->hi < b) b = k->hi, b_in = !(k->flags & B_HI_EX);
        else if (k->hi == b) b_in = b_in && !(k->flags & B_HI_EX);
    }
    return a < b || (a == b && a_in && b_in);
}

/* The same for magnitudes from a to b, with the number's sign. */
static bool num_meets_mag(const struct jg_state *s, double a, bool a_in, double b, bool b_in)
{
    return s->neg ? num_meets(s, -b, b_in, -a, a_in) : num_meets(s, a, a_in, b, b_in);
}

/* Whether the bounded number so far can still be written out within its
 * bounds: the values it can end as are itself, more fraction digits (a
 * magnitude in [v, v + 10^-fraction digits)), and, in its whole part,
 * more whole digits ([v 10^j, (v + 1) 10^j) for j more digits). */
static bool num_viable(const struct jg_state *s)
{
    const double v = s->nval;
    switch (s->sub) {
    case N_MINUS:
        return num_meets_mag(s, 0, true, INFINITY, false);
    case N_ZERO:
        return num_meets_mag(s, 0, true, 0, true) ||
               (!s->integer && num_meets_mag(s, 0, true, 1, false));
    case N_INT: {
        if (num_meets_mag(s, v, true, v, true)) return true;
        if (!s->integer && num_meets_mag(s, v, true, v + 1, false)) return true;
        /* more whole digits: as far as the bound on that side, or without end */
        const struct jg_num *k = &s->sc->nums[s->num];
        const double far = s->neg ? (k->flags & B_LO ? -k->lo : INFINITY)
                                  : (k->flags & B_HI ? k->hi : INFINITY);
        if (far == INFINITY) return true;   /* large enough is within */
        for (double a = v * 10, b = (v + 1) * 10; a <= far; a *= 10, b *= 10)
            if (s->integer ? num_meets_mag(s, a, true, b - 1, true) : num_meets_mag(s, a, true, b, false))
                return true;
        return false;
    }
    case N_DOT:
        return num_meets_mag(s, v, true, v + 1, false);
    default:    /* N_FRAC */
        return num_meets_mag(s, v, true, v, true) ||
               num_meets_mag(s, v, true, v + pow(10, -(double)s->nfd), false);
    }
}

/* A bounded number taking digit c (in its whole part, or fraction). */
static bool num_digit(struct jg_state *s, unsigned char c, bool fraction)
{
    if (fraction) s->nval += (c - '0') * pow(10, -(double)++s->nfd);
    else s->nval = s->nval * 10 + (c - '0');
    return num_viable(s);
}

/* 1: c goes on with the number; 0: c is not part of it and the number is
 * whole; -1: c cannot follow. A bounded number (s->num >= 0) also refuses
 * what would leave it no way into its bounds, and an exponent. */
static int feed_number(struct jg_state *s, unsigned char c)
{
    const bool b = s->num >= 0, d = is_digit(c);
    const bool e = !s->integer && !b && (c == 'e' || c == 'E');
    switch (s->sub) {
    case N_MINUS:
        if (!d) return -1;
        s->sub = c == '0' ? N_ZERO : N_INT;
        return !b || num_digit(s, c, false) ? 1 : -1;
    case N_ZERO:
    case N_INT:
        if (d) {
            if (s->sub == N_ZERO) return -1;     /* no leading zeros */
            return !b || num_digit(s, c, false) ? 1 : -1;
        }
        if (c == '.' && !s->integer) {
            s->sub = N_DOT;
            return !b || num_viable(s) ? 1 : -1;
        }
        if (e) { s->sub = N_E; return 1; }
        return 0;
    case N_DOT:
        if (!d) return -1;
        s->sub = N_FRAC;
        return !b || num_digit(s, c, true) ? 1 : -1;
    case N_FRAC:
        if (d) return !b || num_digit(s, c, true) ? 1 : -1;
        if (e) { s->sub = N_E; return 1; }
        return 0;
    case N_E:
        if (c == '+' || c == '-') { s->sub = N_ESIGN; return 1; }
        /* fall through */
    case N_ESIGN:
        if (!d) return -1;
        s->sub = N_EXP;
        return 1;
    default:    /* N_EXP */
        return d ? 1 : 0;
    }
}

/* Whether the bounded number, whole now, is within its bounds. */
static bool num_within(const struct jg_state *s)
{
    return num_meets_mag(s, s->nval, true, s->nval, true);
}

/* The text of candidate i of the key or enum being matched. */
static const struct jg_text *cand_text(const struct jg_state *s, int i)
{
    if (s->key) return &s->sc->props[top(s)->props + i].key;
    return &s->sc->lits[node(s, s->cur)->lits + i];
}

/* A key or enum value matched whole: candidate i. */
static void matched(struct jg_state *s, int i)
{
    s->lex = L_NONE;
    if (!s->key) {
        after_value(s);
        return;
    }
    const struct jg_prop *p = &s->sc->props[top(s)->props + i];
    s->next[s->depth - 1] = (uint8_t)(i + 1);
    if (p->branch) {
        /* a union's first key: the object is now its branch's */
        s->node[s->depth - 1] = p->branch;
        s->next[s->depth - 1] = (uint8_t)(p->at + 1);
    }
    s->cur = p->node;
    s->pos = P_COLON;
}

/* 1: c goes on with a candidate; 0: none goes on but one is whole (a
 * number: c is read as structure); -1: c cannot follow. */
static int feed_match(struct jg_state *s, unsigned char c)
{
    uint64_t keep = 0;
    int whole = -1;
    for (uint64_t m = s->cand; m; m &= m - 1) {
        const int i = __builtin_ctzll(m);
        const struct jg_text *t = cand_text(s, i);
        if (t->len == s->off) whole = i;
        else if ((unsigned char)s->sc->pool[t->off + s->off] == c) keep |= 1ULL << i;
    }
    if (!keep) {
        if (whole < 0) return -1;
        matched(s, whole);
        return 0;
    }
    s->cand = keep;
    s->off++;
    /* whole now and nothing longer: a string, literal or the only number */
    bool longer = false;
    whole = -1;
    for (uint64_t m = keep; m; m &= m - 1) {
        const int i = __builtin_ctzll(m);
        if (cand_text(s, i)->len == s->off) whole = i;
        else longer = true;
    }
    if (whole >= 0 && !longer) matched(s, whole);
    return 1;
}

static void start_match(struct jg_state *s, bool key, uint64_t cand)
{
    s->lex = L_MATCH;
    s->key = key;
    s->cand = cand;
    s->off = 0;
}

/* The first byte of a value of node cur. */
static bool start_value(struct jg_state *s, unsigned char c)
{
    const struct jg_node *n = node(s, s->cur);
    if (n->nlits) {
        start_match(s, false, n->nlits == 64 ? ~0ULL : (1ULL << n->nlits) - 1);
        return feed_match(s, c) > 0;
    }
    const uint8_t t = n->types;
    const int left = JG_MAX_DEPTH - s->depth;
    switch (c) {
    case '{': return (t & T_OBJECT) && n->md_obj <= left && push(s, s->cur, true);
    case '[': return (t & T_ARRAY) && n->md_arr <= left && push(s, s->cur, false);
    case '"':
        if (!(t & T_STRING)) return false;
        s->lex = L_STRING;
        s->sub = S_NORMAL;
        s->key = false;
        s->str = n->str;
        s->len = 0;
        if (n->str >= 0) jre_start(s->re);
        return true;
    case 't': case 'f': case 'n':
        if (!(t & (c == 'n' ? T_NULL : T_BOOLEAN))) return false;
        s->lex = L_LITERAL;
        s->aux = c == 't' ? 0 : c == 'f' ? 1 : 2;
        s->sub = 1;
        return true;
    default:
        if ((c != '-' && !is_digit(c)) || !(t & (T_NUMBER | T_INTEGER))) return false;
        s->lex = L_NUMBER;
        s->integer = !(t & T_NUMBER);
        s->sub = c == '-' ? N_MINUS : c == '0' ? N_ZERO : N_INT;
        s->num = n->num;
        if (n->num < 0) return true;
        s->neg = c == '-';
        s->nval = 0;
        s->nfd = 0;
        return c == '-' ? num_viable(s) : num_digit(s, c, false);
    }
}

/* The first byte of a key of the open object. */
static bool start_key(struct jg_state *s, unsigned char c)
{
    if (c != '"') return false;
    if (top(s)->any_keys) {
        if (!fits(s, top(s)->values)) return false;
        s->lex = L_STRING;
        s->sub = S_NORMAL;
        s->key = true;
        s->str = -1;
        return true;
    }
    const uint64_t cand = key_candidates(s);
    if (!cand) return false;
    start_match(s, true, cand);
    return feed_match(s, c) > 0;
}

bool jg_feed(struct jg_state *s, unsigned char c)
{
    if (s->lex == L_STRING) return feed_string(s, c);
    if (s->lex == L_LITERAL) {
        const char *lit = literals[s->aux];
        if ((unsigned char)lit[s->sub] != c) return false;
        if (!lit[++s->sub]) after_value(s);
        return true;
    }
    if (s->lex == L_NUMBER) {
        const int r = feed_number(s, c);
        if (r) return r > 0;
        if (s->num >= 0 && !num_within(s)) return false;
        after_value(s);     /* c ends the number: read it as structure */
    } else if (s->lex == L_MATCH) {
        const int r = feed_match(s, c);
        if (r) return r > 0;
    }
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        if (s->pos == P_START || s->pos == P_DONE || s->ws >= JG_MAX_WS) return false;
        s->ws++;
        return true;
    }
    s->ws = 0;
    switch (s->pos) {
    case P_START:
        return c == '{' && start_value(s, c);
    case P_KEY_OR_CLOSE:
        if (c == '}') {
            if (!may_close(s)) return false;
            pop(s);
            return true;
        }
        /* fall through */
    case P_KEY:
        return start_key(s, c);
    case P_COLON:
        if (c != ':') return false;
        s->pos = P_VALUE;
        return true;
    case P_VALUE_OR_CLOSE:
        if (c == ']') {
            if (top(s)->min_items > 0) return false;
            pop(s);
            return true;
        }
        if (top(s)->max_items == 0 || !fits(s, item_node(s, top(s), 0))) return false;
        s->count[s->depth - 1] = 1;
        /* fall through */
    case P_VALUE:
        return start_value(s, c);
    case P_COMMA_OR_CLOSE: {
        const bool object = s->objects >> (s->depth - 1) & 1;
        uint16_t *count = &s->count[s->depth - 1];
        if (c == ',') {
            if (!object) {
                if (*count >= top(s)->max_items || !fits(s, item_node(s, top(s), *count)))
                    return false;
                s->cur = item_node(s, top(s), *count);
                if (*count < UINT16_MAX) ++*count;
                s->pos = P_VALUE;
                return true;
            }
            /* none left, or none whose value would fit */
            if (top(s)->any_keys ? !fits(s, top(s)->values) : !key_candidates(s)) return false;
            s->pos = P_KEY;
            return true;
        }
        if (c != (object ? '}' : ']') || (object && !may_close(s)) ||
            (!object && *count < top(s)->min_items))
            return false;
        pop(s);
        return true;
    }
    default:    /* P_DONE */
        return false;
    }
}

/* ------------------------------------------------------------------ trie */

struct jg_tnode {
    int32_t child, sibling;     /* -1: none */
    int32_t tokens;             /* first token ending here (-1), then tok_next */
    uint8_t byte;
};

/* Node 0 is the root of every token, node 1 the root of the tokens that
 * are not plain. A plain token is text that can sit anywhere inside a
 * string and leave it as it was: bytes from 0x20 up but '"' and '\\',
 * whole UTF-8 characters. In a string all of them are allowed, whatever
 * the rest of the state, and only the others need a walk: in Qwen3's
 * vocabulary (151,669 tokens, 147k allowed in a string) 0.07-0.09 ms
 * instead of 20 ms for walking them all. In a string with a maxLength,
 * those whose characters fit; one with a pattern walks them all (0.9 ms
 * for an address pattern, whose first bytes cut most branches). */
struct jg_vocab {
    struct jg_tnode *n;
    int nn, cap, V;
    int32_t *tok_next;          /* (V), in trie 0 */
    int32_t *tok_next1;         /* (V), in trie 1 */
    uint8_t *plain;             /* (V) */
    uint8_t *chars;             /* (V): a plain token's characters */
    int n_plain;
};

void jg_vocab_free(struct jg_vocab *v)
{
    if (!v) return;
    free(v->n);
    free(v->tok_next);
    free(v->tok_next1);
    free(v->plain);
    free(v->chars);
    free(v);
}

static bool is_plain(const uint8_t *b, size_t len)
{
    struct jg_state s;
    memset(&s, 0, sizeof s);
    s.str = -1;
    s.lex = L_STRING;
    s.sub = S_NORMAL;
    for (size_t i = 0; i < len; i++)
        if (b[i] == '"' || b[i] == '\\' || !feed_string(&s, b[i])) return false;
    return s.sub == S_NORMAL;
}

static int32_t child_of(struct jg_vocab *v, int32_t node, uint8_t byte)
{
    for (int32_t c = v->n[node].child; c >= 0; c = v->n[c].sibling)
        if (v->n[c].byte == byte) return c;
    if (v->nn == v->cap) {
        int cap = v->cap * 2;
        struct jg_tnode *g = realloc(v->n, (size_t)cap * sizeof *g);
        if (!g) return -1;
        v->n = g;
        v->cap = cap;
    }
    const int32_t c = v->nn++;
    v->n[c] = (struct jg_tnode){-1, v->n[node].child, -1, byte};
    v->n[node].child = c;
    return c;
}

struct jg_vocab *jg_vocab_empty(int V)
{
    struct jg_vocab *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->V = V;
    v->cap = 1024;
    const size_t nv = (size_t)(V > 0 ? V : 1);
    v->n = malloc((size_t)v->cap * sizeof *v->n);
    v->tok_next = malloc(nv * sizeof *v->tok_next);
    v->tok_next1 = malloc(nv * sizeof *v->tok_next1);
    v->plain = calloc(nv, 1);
    v->chars = calloc(nv, 1);
    if (!v->n || !v->tok_next || !v->tok_next1 || !v->plain || !v->chars) {
        jg_vocab_free(v);
        return NULL;
    }
    v->n[0] = v->n[1] = (struct jg_tnode){-1, -1, -1, 0};
    v->nn = 2;
    return v;
}

/* Token t (len bytes) into the trie at root; next: its list links. */
static int trie_add(struct jg_vocab *v, int32_t root, int32_t *next, int32_t t, const uint8_t *b,
                    size_t len)
{
    int32_t node = root;
    for (size_t i = 0; i < len && node >= 0; i++) node = child_of(v, node, b[i]);
    if (node < 0) return -1;
    next[t] = v->n[node].tokens;
    v->n[node].tokens = t;
    return 0;
}

int jg_vocab_add(struct jg_vocab *v, int32_t t, const void *bytes, size_t len)
{
    if (t < 0 || t >= v->V || len == 0) return 0;
    if (trie_add(v, 0, v->tok_next, t, bytes, len)) return -1;
    size_t chars = 0;
    for (size_t i = 0; i < len; i++) chars += (((const uint8_t *)bytes)[i] & 0xC0) != 0x80;
    if (chars <= UINT8_MAX && is_plain(bytes, len)) {
        v->plain[t] = 1;
        v->chars[t] = (uint8_t)chars;
        v->n_plain++;
        return 0;
    }
    return trie_add(v, 1, v->tok_next1, t, bytes, len);
}

struct jg_vocab *jg_vocab_new(const struct tokenizer *tok, int V, char *err, size_t errlen)
{
    struct jg_vocab *v = jg_vocab_empty(V);
    const int tv = tok_vocab_size(tok);
    for (int32_t t = 0; v && t < V && t < tv; t++) {
        size_t len = 0;
        const char *b = tok_is_special(tok, t) ? NULL : tok_token_bytes(tok, t, &len);
        if (b && jg_vocab_add(v, t, b, len)) {
            jg_vocab_free(v);
            v = NULL;
        }
    }
    if (!v) snprintf(err, errlen, "out of memory for the JSON mode's vocabulary (%d tokens)", V);
    return v;
}

static int walk(const struct jg_vocab *v, const int32_t *next, int32_t node,
                const struct jg_state *s, uint8_t *allowed)
{
    int n = 0;
    for (int32_t c = v->n[node].child; c >= 0; c = v->n[c].sibling) {
        struct jg_state t = *s;
        if (!jg_feed(&t, v->n[c].byte)) continue;
        for (int32_t k = v->n[c].tokens; k >= 0; k = next[k]) {
            allowed[k] = 1;
            n++;
        }
        n += walk(v, next, c, &t, allowed);
    }
    return n;
}

int jg_allowed(const struct jg_vocab *v, const struct jg_state *s, uint8_t *allowed)
{
    if (s->lex == L_STRING && s->sub == S_NORMAL && s->str < 0) {
        memcpy(allowed, v->plain, (size_t)v->V);
        return v->n_plain + walk(v, v->tok_next1, 1, s, allowed);
    }
    if (s->lex == L_STRING && s->sub == S_NORMAL && s->sc->strs[s->str].re < 0) {
        /* lengths only: a plain token goes on while its characters fit
         * (Qwen3's vocabulary: 0.14 ms, against 6.7 for walking it all) */
        const uint32_t room = s->sc->strs[s->str].max_len - s->len;
        int n = 0;
        for (int t = 0; t < v->V; t++) n += allowed[t] = v->plain[t] && v->chars[t] <= room;
        return n + walk(v, v->tok_next1, 1, s, allowed);
    }
    memset(allowed, 0, (size_t)v->V);
    return walk(v, v->tok_next, 0, s, allowed);
}
