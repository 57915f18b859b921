/* server/keys.c — API key creation and verification (SHA-256 via OpenSSL).
 * Not an account system: a key has a name, a scope and can be revoked. */
#include "keys.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define KEYS_CACHE_SIZE 256
#define KEYS_CACHE_TTL_S 30.0
#define KEYS_MAX_LEN 256

struct cache_entry {
    unsigned char hash[32];
    bool used;
    struct keys_info info;
    double verified_at;
};

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cache_entry cache[KEYS_CACHE_SIZE];

int keys_scope_parse(const char *s, enum keys_scope *out)
{
    if (!s) return -1;
    if (strcmp(s, "admin") == 0) *out = KEYS_SCOPE_ADMIN;
    else if (strcmp(s, "inference") == 0) *out = KEYS_SCOPE_INFERENCE;
    else if (strcmp(s, "read") == 0) *out = KEYS_SCOPE_READ;
    else return -1;
    return 0;
}

const char *keys_scope_name(enum keys_scope s)
{
    return s == KEYS_SCOPE_ADMIN ? "admin" : s == KEYS_SCOPE_INFERENCE ? "inference" : "read";
}

static void sha256(const char *s, unsigned char out[32])
{
    unsigned int n = 32;
    EVP_Digest(s, strlen(s), out, &n, EVP_sha256(), NULL);
}

static void hex(const unsigned char *in, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = 0;
}

int keys_create(PGconn *c, const char *name, enum keys_scope scope, char *key_out,
                size_t key_size, char *err, size_t errlen)
{
    unsigned char raw[24];
    if (key_size < 64 || random_bytes(raw, sizeof raw)) {
        snprintf(err, errlen, "could not generate a key");
        return -1;
    }
    char h[sizeof raw * 2 + 1];
    hex(raw, sizeof raw, h);
    snprintf(key_out, key_size, "aha-%s", h);
    unsigned char digest[32];
    sha256(key_out, digest);
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%.10s", key_out);
    const char *params[] = {name, keys_scope_name(scope), prefix, (const char *)digest};
    int lengths[] = {0, 0, 0, 32};
    int formats[] = {0, 0, 0, 1};
    PGresult *r = PQexecParams(c,
                               "INSERT INTO api_keys (name, scope, prefix, key_hash) "
                               "VALUES ($1, $2, $3, $4) RETURNING id",
                               4, NULL, params, lengths, formats, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        snprintf(err, errlen, "could not store the key: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    PQclear(r);
    return 0;
}

static struct cache_entry *cache_find(const unsigned char hash[32])
{
    for (int i = 0; i < KEYS_CACHE_SIZE; i++)
        if (cache[i].used && memcmp(cache[i].hash, hash, 32) == 0) return &cache[i];
    return NULL;
}

static void cache_put(const unsigned char hash[32], const struct keys_info *info, double now)
{
    pthread_mutex_lock(&cache_mu);
    struct cache_entry *e = cache_find(hash);
    if (!e) {
        e = &cache[0];
        for (int i = 0; i < KEYS_CACHE_SIZE; i++) {
            if (!cache[i].used) {
                e = &cache[i];
                break;
            }
            if (cache[i].verified_at < e->verified_at) e = &cache[i];
        }
    }
    memcpy(e->hash, hash, 32);
    e->used = true;
    e->info = *info;
    e->verified_at = now;
    pthread_mutex_unlock(&cache_mu);
}

static void cache_drop(const unsigned char hash[32])
{
    pthread_mutex_lock(&cache_mu);
    struct cache_entry *e = cache_find(hash);
    if (e) e->used = false;
    pthread_mutex_unlock(&cache_mu);
}

void keys_cache_clear(void)
{
    pthread_mutex_lock(&cache_mu);
    memset(cache, 0, sizeof cache);
    pthread_mutex_unlock(&cache_mu);
}

enum keys_result keys_verify(db_pool *pool, const char *key, struct keys_info *info)
{
    if (!key || !*key || strlen(key) > KEYS_MAX_LEN) return KEYS_INVALID;
    unsigned char digest[32];
    sha256(key, digest);
    double now = clock_mono();
    bool have_cached = false;
    struct keys_info cached = {0};
    pthread_mutex_lock(&cache_mu);
    struct cache_entry *e = cache_find(digest);
    if (e) {
        have_cached = true;
        cached = e->info;
        if (now - e->verified_at < KEYS_CACHE_TTL_S) {
            *info = cached;
            pthread_mutex_unlock(&cache_mu);
            return KEYS_OK;
        }
    }
    pthread_mutex_unlock(&cache_mu);

    char err[256];
    const char *params[] = {(const char *)digest};
    int lengths[] = {32};
    int formats[] = {1};
    PGresult *r = db_exec(pool,
                          "UPDATE api_keys SET last_used_at = now() "
                          "WHERE key_hash = $1 AND revoked_at IS NULL "
                          "RETURNING id, scope",
                          1, params, lengths, formats, err, sizeof err);
    if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
        PQclear(r);
        if (have_cached) { /* keep serving known keys while the database is away */
            *info = cached;
            return KEYS_OK;
        }
        return KEYS_UNAVAILABLE;
    }
    enum keys_result res = KEYS_INVALID;
    if (PQntuples(r) == 1) {
        info->id = atoll(PQgetvalue(r, 0, 0));
        if (keys_scope_parse(PQgetvalue(r, 0, 1), &info->scope) == 0) {
            res = KEYS_OK;
            cache_put(digest, info, now);
        }
    }
    if (res != KEYS_OK) cache_drop(digest);
    PQclear(r);
    return res;
}
