/* tests/unit/test_safetensors.c — safetensors round trips, dtype
 * conversions, and every malformed input st_open must reject (files are
 * generated into a temporary directory). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"     /* bf16_from_f32, bf16_to_f32, f16_to_f32 */
#include "safetensors.h"

static char tmpdir[64];
static char err[512];

static void mk_tmpdir(void)
{
    strcpy(tmpdir, "/tmp/aha-test-st-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void rm_tmpdir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(safetensors, .init = mk_tmpdir, .fini = rm_tmpdir);

static const char *tpath(const char *name)
{
    static char p[4][160];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmpdir, name);
    return p[k];
}

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* A file with the given header length field, header text and data. */
static const char *make_file(const char *name, uint64_t hlen, const char *hdr,
                             const void *data, size_t data_len)
{
    size_t n = strlen(hdr);
    unsigned char *buf = malloc(8 + n + data_len + 1);
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, hdr, n);
    if (data_len) {
        if (data) memcpy(buf + 8 + n, data, data_len);
        else memset(buf + 8 + n, 0x11, data_len);
    }
    const char *path = tpath(name);
    write_bytes(path, buf, 8 + n + data_len);
    free(buf);
    return path;
}

/* st_open must fail with a message naming the file, containing `needle`
 * and, when not NULL, the tensor name in quotes. */
static void expect_bad(const char *name, const char *hdr, size_t data_len,
                       const char *needle, const char *tensor)
{
    const char *path = make_file(name, strlen(hdr), hdr, NULL, data_len);
    err[0] = '\0';
    struct st_file *f = st_open(path, err, sizeof err);
    cr_assert_null(f, "accepted header %s", hdr);
    cr_assert(strstr(err, path) == err, "no file name in: %s", err);
    cr_assert(strstr(err, needle), "expected \"%s\" in: %s", needle, err);
    if (tensor) {
        char q[128];
        snprintf(q, sizeof q, "\"%s\"", tensor);
        cr_assert(strstr(err, q), "tensor %s not named in: %s", q, err);
    }
}

static uint32_t bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

Test(safetensors, f32_roundtrip_bit_exact)
{
    enum { N = 3 * 5 * 7 };
    float a[N], b[4] = { 1.5f, -0.0f, INFINITY, 0 }, s = 3.25f;
    for (int i = 0; i < N; i++) a[i] = sinf((float)i) * powf(10.0f, (float)(i % 40 - 20));
    a[0] = NAN;
    a[1] = from_bits(0x7fc12345u);   /* NaN payload */
    a[2] = from_bits(0x00000001u);   /* smallest subnormal */
    b[3] = -INFINITY;
    struct st_entry e[] = {
        { "model.layers.0.w", 3, { 3, 5, 7 }, a },
        { "b", 1, { 4 }, b },
        { "scalar", 0, { 0 }, &s },
        { "empty", 2, { 0, 3 }, NULL },
    };
    const char *path = tpath("model.safetensors");
    cr_assert_eq(st_write(path, e, 4, ST_F32, err, sizeof err), 0, "%s", err);
    struct st_file *f = st_open(path, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    cr_assert_eq(f->n_tensors, 4);
    for (int i = 0; i < 4; i++)   /* file order is the given order */
        cr_assert_str_eq(f->tensors[i].name, e[i].name);
    const struct st_tensor *t = st_find(f, "model.layers.0.w");
    cr_assert_not_null(t);
    cr_assert(t->dtype == ST_F32 && t->ndim == 3 && t->shape[0] == 3 &&
              t->shape[1] == 5 && t->shape[2] == 7 && t->numel == N &&
              t->nbytes == N * 4);
    float out[N];
    st_to_f32(t, out);
    for (int i = 0; i < N; i++)
        cr_assert_eq(bits(out[i]), bits(a[i]), "element %d", i);
    t = st_find(f, "b");
    st_to_f32(t, out);
    for (int i = 0; i < 4; i++) cr_assert_eq(bits(out[i]), bits(b[i]));
    t = st_find(f, "scalar");
    cr_assert(t->ndim == 0 && t->numel == 1);
    st_to_f32(t, out);
    cr_assert_eq(out[0], 3.25f);
    t = st_find(f, "empty");
    cr_assert(t->ndim == 2 && t->numel == 0 && t->nbytes == 0);
    cr_assert_null(st_find(f, "missing"));
    cr_assert_null(st_find(f, "__metadata__"));
    st_close(f);
}

/* The layout the official Rust implementation writes and requires:
 * header length a multiple of 8 (space padded), __metadata__ format pt,
 * contiguous offsets that cover the data section exactly. */
Test(safetensors, written_layout_follows_spec)
{
    float a[3] = { 1, 2, 3 }, b[2] = { 4, 5 };
    struct st_entry e[] = { { "zeta", 1, { 3 }, a }, { "alpha", 2, { 1, 2 }, b } };
    const char *path = tpath("layout.safetensors");
    cr_assert_eq(st_write(path, e, 2, ST_BF16, err, sizeof err), 0, "%s", err);
    FILE *fp = fopen(path, "rb");
    unsigned char buf[1024];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    uint64_t hlen;
    memcpy(&hlen, buf, 8);
    cr_assert_eq(hlen % 8, 0);
    cr_assert_eq(n, 8 + hlen + 10, "file is %zu bytes", n);
    char hdr[1024];
    memcpy(hdr, buf + 8, hlen);
    hdr[hlen] = '\0';
    cr_assert_eq(hdr[0], '{');
    size_t end = strlen(hdr);
    while (end > 0 && hdr[end - 1] == ' ') end--;
    cr_assert_eq(hdr[end - 1], '}', "%s", hdr);
    cr_assert(end + 8 > hlen, "padding longer than needed: %s", hdr);
    cr_assert(strstr(hdr, "\"__metadata__\":{\"format\":\"pt\"}"), "%s", hdr);
    cr_assert(strstr(hdr, "\"zeta\":{\"dtype\":\"BF16\",\"shape\":[3],"
                     "\"data_offsets\":[0,6]}"), "%s", hdr);
    cr_assert(strstr(hdr, "\"alpha\":{\"dtype\":\"BF16\",\"shape\":[1,2],"
                     "\"data_offsets\":[6,10]}"), "%s", hdr);
    cr_assert(strstr(hdr, "\"zeta\"") < strstr(hdr, "\"alpha\""));
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0644);
    /* nothing left behind but the file itself */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

Test(safetensors, bf16_write_read)
{
    enum { N = 1000 };
    float a[N], out[N];
    for (int i = 0; i < N; i++) a[i] = cosf((float)i * 0.37f) * (float)(i + 1) * 1e-3f;
    a[0] = NAN;
    a[1] = INFINITY;
    a[2] = -INFINITY;
    a[3] = 3.4028235e38f;           /* rounds up to inf, as torch does */
    a[4] = from_bits(0x7f800001u);  /* NaN whose payload is in the low bits */
    struct st_entry e = { "w", 2, { 10, 100 }, a };
    const char *path = tpath("bf16.safetensors");
    cr_assert_eq(st_write(path, &e, 1, ST_BF16, err, sizeof err), 0, "%s", err);
    struct st_file *f = st_open(path, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    const struct st_tensor *t = st_find(f, "w");
    cr_assert(t->dtype == ST_BF16 && t->nbytes == 2 * N);
    st_to_f32(t, out);
    for (int i = 0; i < N; i++) {
        float want = bf16_to_f32(bf16_from_f32(a[i]));
        cr_assert_eq(bits(out[i]), bits(want), "element %d", i);
    }
    cr_assert(isnan(out[0]) && isnan(out[4]));
    cr_assert(isinf(out[1]) && out[1] > 0 && isinf(out[2]) && out[2] < 0);
    cr_assert(isinf(out[3]));
    st_close(f);
}

Test(safetensors, bf16_rounding)
{
    /* ties to even: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 */
    cr_assert_eq(bf16_from_f32(1.0f + 0x1p-8f), 0x3f80);
    cr_assert_eq(bf16_from_f32(1.0f + 3 * 0x1p-8f), 0x3f82);
    cr_assert_eq(bf16_from_f32(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    cr_assert_eq(bf16_from_f32(1.0f), 0x3f80);
    cr_assert_eq(bf16_from_f32(-2.0f), 0xc000);
    cr_assert_eq(bf16_from_f32(from_bits(0x3f80ffffu)), 0x3f81);
    cr_assert_eq(bf16_from_f32(from_bits(0x3f807fffu)), 0x3f80);
    cr_assert_eq(bf16_from_f32(INFINITY), 0x7f80);
    cr_assert_eq(bf16_from_f32(-0.0f), 0x8000);
    uint16_t h = bf16_from_f32(from_bits(0x7f800001u));
    cr_assert((h & 0x7f80) == 0x7f80 && (h & 0x7f), "NaN became 0x%04x", h);
    h = bf16_from_f32(from_bits(0xffffffffu));
    cr_assert((h & 0x7f80) == 0x7f80 && (h & 0x7f), "NaN became 0x%04x", h);
    cr_assert_eq(bf16_to_f32(0x4049), 3.140625f);
    cr_assert_eq(bits(bf16_to_f32(0x8000)), 0x80000000u);
}

Test(safetensors, f16_decoding)
{
    static const struct { uint16_t h; float f; } cases[] = {
        { 0x0000, 0.0f }, { 0x3c00, 1.0f }, { 0xc000, -2.0f },
        { 0x3555, 0.333251953125f }, { 0x7bff, 65504.0f },
        { 0x0400, 0x1p-14f },                 /* smallest normal */
        { 0x0001, 0x1p-24f },                 /* smallest subnormal */
        { 0x03ff, 1023 * 0x1p-24f },          /* largest subnormal */
        { 0x8001, -0x1p-24f }, { 0x0200, 0x1p-15f },
        { 0x7c00, INFINITY }, { 0xfc00, -INFINITY },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        cr_assert_eq(bits(f16_to_f32(cases[i].h)), bits(cases[i].f),
                     "0x%04x -> %g", cases[i].h, (double)f16_to_f32(cases[i].h));
    cr_assert_eq(bits(f16_to_f32(0x8000)), 0x80000000u);
    cr_assert(isnan(f16_to_f32(0x7e00)));
    cr_assert(isnan(f16_to_f32(0x7c01)));
    cr_assert(isnan(f16_to_f32(0xfe00)) && signbit(f16_to_f32(0xfe00)));

    /* and through a file */
    uint16_t data[4] = { 0x3c00, 0x0001, 0xfc00, 0x3555 };
    const char *hdr = "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]}}";
    const char *path = make_file("f16.safetensors", strlen(hdr), hdr, data, 8);
    struct st_file *f = st_open(path, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    float out[4];
    st_to_f32(st_find(f, "h"), out);
    cr_assert(out[0] == 1.0f && out[1] == 0x1p-24f && out[2] == -INFINITY &&
              out[3] == 0.333251953125f);
    st_close(f);
}

/* A header whose length is not a multiple of 4 puts F32 data at an odd
 * address; UBSan (alignment) must stay quiet and values must be right. */
Test(safetensors, unaligned_f32_data)
{
    const char *hdr = "{\"x\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[1,13]}} ";
    unsigned char data[13];
    float v[3] = { 1.25f, -7.0f, 1e-30f };
    data[0] = 0xee;
    memcpy(data + 1, v, 12);
    const char *path = make_file("unaligned.safetensors", strlen(hdr), hdr, data, 13);
    struct st_file *f = st_open(path, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    const struct st_tensor *t = st_find(f, "x");
    cr_assert((uintptr_t)t->data % 4 != 0);
    float out[3];
    st_to_f32(t, out);
    for (int i = 0; i < 3; i++) cr_assert_eq(bits(out[i]), bits(v[i]));
    st_close(f);

    /* odd BF16 offsets too */
    const char *h2 = "{\"y\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[1,5]}}";
    unsigned char d2[5] = { 0, 0x80, 0x3f, 0x00, 0xc0 };
    path = make_file("unaligned16.safetensors", strlen(h2), h2, d2, 5);
    f = st_open(path, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    st_to_f32(st_find(f, "y"), out);
    cr_assert(out[0] == 1.0f && out[1] == -2.0f);
    st_close(f);
}

Test(safetensors, accepts_gaps_metadata_and_empty_tensors)
{
    const char *hdr = "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
        "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[10,10]},"
        "\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    const char *path = make_file("ok.safetensors", strlen(hdr), hdr, NULL, 16);
    struct st_file *f = st_open(path, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    cr_assert_eq(f->n_tensors, 3);
    cr_assert_str_eq(f->tensors[0].name, "a");
    cr_assert_str_eq(f->tensors[2].name, "b");
    st_close(f);
    st_close(NULL);
}

Test(safetensors, bad_file_level)
{
    const char *path = tpath("short.safetensors");
    write_bytes(path, "\x10\0\0\0\0", 5);
    cr_assert_null(st_open(path, err, sizeof err));
    cr_assert(strstr(err, path) == err && strstr(err, "too short"), "%s", err);

    path = tpath("empty.safetensors");
    write_bytes(path, "", 0);
    cr_assert_null(st_open(path, err, sizeof err));
    cr_assert(strstr(err, path) == err && strstr(err, "too short"), "%s", err);

    path = tpath("nonexistent.safetensors");
    cr_assert_null(st_open(path, err, sizeof err));
    cr_assert(strstr(err, path) == err && strstr(err, "cannot open"), "%s", err);

    cr_assert_null(st_open(tmpdir, err, sizeof err));
    cr_assert(strstr(err, tmpdir) == err, "%s", err);

    const char *hdr = "{}";
    path = make_file("past.safetensors", 3, hdr, NULL, 0);
    cr_assert_null(st_open(path, err, sizeof err));
    cr_assert(strstr(err, path) == err && strstr(err, "past the end"), "%s", err);

    path = make_file("huge.safetensors", 1ull << 40, hdr, NULL, 0);
    cr_assert_null(st_open(path, err, sizeof err));
    cr_assert(strstr(err, path) == err && strstr(err, "too large"), "%s", err);

    path = make_file("max.safetensors", UINT64_MAX, hdr, NULL, 0);
    cr_assert_null(st_open(path, err, sizeof err));
    cr_assert(strstr(err, path) == err && strstr(err, "too large"), "%s", err);

    /* 100 MB + 1 is past the official limit even if the file were that big */
    path = make_file("limit.safetensors", 100000001, hdr, NULL, 0);
    cr_assert_null(st_open(path, err, sizeof err));
    cr_assert(strstr(err, "too large"), "%s", err);
}

Test(safetensors, bad_header_json)
{
    expect_bad("json1.safetensors", "{\"a\": ", 0, "not valid JSON (line 1", NULL);
    expect_bad("json2.safetensors", "", 0, "not valid JSON", NULL);
    expect_bad("json3.safetensors", "[1, 2]", 0, "not a JSON object", NULL);
    expect_bad("json4.safetensors", "{} {}", 0, "not valid JSON", NULL);
    expect_bad("dup.safetensors",
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, "duplicate tensor name", "w");
    expect_bad("meta1.safetensors", "{\"__metadata__\":[]}", 0,
               "\"__metadata__\" must be an object", NULL);
    expect_bad("meta2.safetensors", "{\"__metadata__\":{\"format\":1}}", 0,
               "must be a string", "format");
    /* the header length covers a NUL byte: not JSON */
    const char hdr[] = "{}\0";
    const char *path = make_file("nul.safetensors", 3, hdr, NULL, 0);
    cr_assert_null(st_open(path, err, sizeof err));
    cr_assert(strstr(err, path) == err, "%s", err);
}

#define ENTRY(dtype, shape, offs) \
    "{\"model.norm.weight\":{\"dtype\":" dtype ",\"shape\":" shape \
    ",\"data_offsets\":" offs "}}"
#define T "model.norm.weight"

Test(safetensors, bad_entries)
{
    expect_bad("e1.safetensors", "{\"" T "\":5}", 0, "must be an object", T);
    expect_bad("e2.safetensors", "{\"" T "\":{\"shape\":[1],\"data_offsets\":[0,4]}}",
               4, "\"dtype\" must be a string", T);
    expect_bad("e3.safetensors", ENTRY("32", "[1]", "[0,4]"), 4,
               "\"dtype\" must be a string", T);
    expect_bad("e4.safetensors", ENTRY("\"Q7\"", "[1]", "[0,4]"), 4,
               "unknown dtype \"Q7\"", T);
    expect_bad("e5.safetensors", ENTRY("\"I64\"", "[1]", "[0,8]"), 8,
               "unsupported dtype \"I64\"", T);
    expect_bad("e6.safetensors", ENTRY("\"F8_E4M3\"", "[1]", "[0,1]"), 1,
               "unsupported dtype \"F8_E4M3\"", T);
    expect_bad("e7.safetensors", ENTRY("\"BOOL\"", "[1]", "[0,1]"), 1,
               "unsupported dtype \"BOOL\"", T);
    expect_bad("e8.safetensors", ENTRY("\"f32\"", "[1]", "[0,4]"), 4,
               "unknown dtype \"f32\"", T);
    expect_bad("s1.safetensors", "{\"" T "\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}",
               4, "\"shape\" must be an array", T);
    expect_bad("s2.safetensors", ENTRY("\"F32\"", "4", "[0,4]"), 4,
               "\"shape\" must be an array", T);
    expect_bad("s3.safetensors", ENTRY("\"F32\"", "[2,-1]", "[0,4]"), 4,
               "shape[1] must be a non-negative integer", T);
    expect_bad("s4.safetensors", ENTRY("\"F32\"", "[1.0]", "[0,4]"), 4,
               "shape[0] must be a non-negative integer", T);
    expect_bad("s5.safetensors", ENTRY("\"F32\"", "[\"1\"]", "[0,4]"), 4,
               "shape[0]", T);
    expect_bad("s6.safetensors", ENTRY("\"F32\"", "[1,1,1,1,1,1,1,1,1]", "[0,4]"), 4,
               "9 dimensions", T);
    expect_bad("s7.safetensors",
               ENTRY("\"F32\"", "[4611686018427387904,4611686018427387904]", "[0,4]"),
               4, "overflow", T);
    expect_bad("s8.safetensors", ENTRY("\"F32\"", "[4611686018427387904]", "[0,4]"),
               4, "overflow", T);
    expect_bad("o1.safetensors", ENTRY("\"F32\"", "[1]", "[0]"), 4,
               "\"data_offsets\" must be [begin, end]", T);
    expect_bad("o2.safetensors", ENTRY("\"F32\"", "[1]", "[0,4,8]"), 8,
               "\"data_offsets\" must be [begin, end]", T);
    expect_bad("o3.safetensors", "{\"" T "\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
               "\"data_offsets\" must be [begin, end]", T);
    expect_bad("o4.safetensors", ENTRY("\"F32\"", "[1]", "[0,4.0]"), 4,
               "\"data_offsets\" must be [begin, end]", T);
    expect_bad("o5.safetensors", ENTRY("\"F32\"", "[1]", "[-4,0]"), 4,
               "\"data_offsets\" must be [begin, end]", T);
    expect_bad("o6.safetensors", ENTRY("\"F32\"", "[1]", "[8,4]"), 8,
               "data_offsets [8, 4] out of range", T);
    expect_bad("o7.safetensors", ENTRY("\"F32\"", "[1]", "[12,16]"), 15,
               "data_offsets [12, 16] out of range (data section is 15 bytes)", T);
}

Test(safetensors, offsets_out_of_range_message)
{
    const char *hdr = ENTRY("\"F32\"", "[2,1]", "[10,20]");
    const char *path = make_file("model.safetensors", strlen(hdr), hdr, NULL, 16);
    cr_assert_null(st_open(path, err, sizeof err));
    char want[512];
    snprintf(want, sizeof want, "%s: tensor \"model.norm.weight\": data_offsets "
             "[10, 20] out of range (data section is 16 bytes)", path);
    cr_assert_str_eq(err, want);
}

Test(safetensors, offsets_size_mismatch_and_overlap)
{
    expect_bad("m1.safetensors", ENTRY("\"F32\"", "[3]", "[0,8]"), 16,
               "hold 8 bytes, but F32 [3] needs 12", T);
    expect_bad("m2.safetensors", ENTRY("\"BF16\"", "[2,2]", "[0,4]"), 16,
               "BF16 [2, 2] needs 8", T);
    expect_bad("m3.safetensors", ENTRY("\"F16\"", "[]", "[0,4]"), 16,
               "F16 [] needs 2", T);
    expect_bad("x1.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "overlap tensor \"a\"", "b");
    expect_bad("x2.safetensors",
               "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}",
               12, "overlap", "b");
    expect_bad("x3.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
               4, "overlap", "b");
    expect_bad("k1.safetensors",
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],"
               "\"extra\":1}}", 4, "unknown key \"extra\"", "a");
}

Test(safetensors, write_errors)
{
    float x[2] = { 1, 2 };
    struct st_entry dup[] = { { "a", 1, { 2 }, x }, { "a", 1, { 2 }, x } };
    const char *path = tpath("w.safetensors");
    cr_assert_eq(st_write(path, dup, 2, ST_F32, err, sizeof err), -1);
    cr_assert(strstr(err, path) == err && strstr(err, "\"a\": duplicate"), "%s", err);
    struct st_entry bad_shape = { "neg", 1, { -1 }, x };
    cr_assert_eq(st_write(path, &bad_shape, 1, ST_F32, err, sizeof err), -1);
    cr_assert(strstr(err, "\"neg\""), "%s", err);
    struct st_entry bad_ndim = { "nd", 9, { 1 }, x };
    cr_assert_eq(st_write(path, &bad_ndim, 1, ST_F32, err, sizeof err), -1);
    cr_assert(strstr(err, "\"nd\""), "%s", err);
    struct st_entry meta = { "__metadata__", 1, { 2 }, x };
    cr_assert_eq(st_write(path, &meta, 1, ST_F32, err, sizeof err), -1);
    struct st_entry ok = { "ok", 1, { 2 }, x };
    cr_assert_eq(st_write(path, &ok, 1, ST_F16, err, sizeof err), -1);
    cr_assert(access(path, F_OK) != 0, "a failed write left %s", path);
    const char *nodir = tpath("no/such/dir/w.safetensors");
    cr_assert_eq(st_write(nodir, &ok, 1, ST_F32, err, sizeof err), -1);
    cr_assert(strstr(err, nodir) == err, "%s", err);
    /* overwriting an existing file replaces it */
    cr_assert_eq(st_write(path, &ok, 1, ST_F32, err, sizeof err), 0, "%s", err);
    x[0] = 9;
    cr_assert_eq(st_write(path, &ok, 1, ST_BF16, err, sizeof err), 0, "%s", err);
    struct st_file *f = st_open(path, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    cr_assert_eq(f->tensors[0].dtype, ST_BF16);
    float out[2];
    st_to_f32(&f->tensors[0], out);
    cr_assert(out[0] == 9.0f && out[1] == 2.0f);
    st_close(f);
    /* zero tensors is a valid file */
    cr_assert_eq(st_write(path, NULL, 0, ST_F32, err, sizeof err), 0, "%s", err);
    f = st_open(path, err, sizeof err);
    cr_assert_not_null(f, "%s", err);
    cr_assert_eq(f->n_tensors, 0);
    st_close(f);
}
