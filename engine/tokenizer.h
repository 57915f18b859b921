/* engine/tokenizer.h — Hugging Face tokenizer.json (byte-level BPE) encode
 * and decode, and the byte-level tokenizer aha uses for models it trains
 * from scratch (256 byte tokens + special tokens, no merges), which is saved
 * as a tokenizer.json and loaded back through the same code.
 *
 * Supported tokenizer.json parts: model BPE (merges "a b" or ["a","b"],
 * ignore_merges, byte_fallback, unk_token), added_tokens (special,
 * lstrip/rstrip/single_word/normalized; ids assigned as Hugging Face assigns
 * them), normalizers NFC/NFD/NFKC/NFKD/Sequence, pre-tokenizers
 * Sequence/Split/ByteLevel/Digits, decoder ByteLevel. Anything else is a load
 * error naming its JSON path; post_processor, truncation and padding are
 * ignored (encode is add_special_tokens=False). Ids equal Hugging Face
 * tokenizers 0.22 (tests/tokenizer/run.sh checks it).
 *
 * A loaded tokenizer is read-only except for an internal word cache, so
 * tok_encode/tok_decode may run on several threads at once. */
#ifndef AHA_TOKENIZER_H
#define AHA_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tokenizer;

/* Loads a tokenizer.json. Returns a new tokenizer (free with tok_free) or
 * NULL with err naming the file and JSON path of the problem. */
struct tokenizer *tok_load(const char *path, char *err, size_t errlen);
void tok_free(struct tokenizer *tok);

/* Writes aha's byte-level tokenizer.json to path: vocab ids 0..255 are the
 * bytes (GPT-2 byte-to-unicode mapping, as ByteLevel expects), then the
 * special tokens <|endoftext|> 256, <think> 257, </think> 258, <answer> 259,
 * </answer> 260, <|im_start|> 261, <|im_end|> 262. Returns 0 or -1. */
int tok_write_bytelevel(const char *path, char *err, size_t errlen);
#define TOK_BYTELEVEL_VOCAB 263

/* Encodes UTF-8 text (special-token strings become their ids, as Hugging
 * Face tokenizer.encode(text, add_special_tokens=False)). Returns the number
 * of ids and sets *ids to a new malloc'd array (caller frees), or -1.
 * Invalid UTF-8 (which Hugging Face cannot be given): the text is cut at
 * each byte that is not part of a valid character, the valid runs are
 * encoded on their own and each such byte becomes its byte-level token. */
int tok_encode(const struct tokenizer *tok, const char *text, size_t len,
               int32_t **ids);
/* Decodes ids to a new NUL-terminated malloc'd UTF-8 string (caller frees);
 * *len gets its length when len is not NULL. Unknown ids are skipped;
 * special tokens are kept; bytes that do not form valid UTF-8 become U+FFFD
 * (as Hugging Face's decode(ids, skip_special_tokens=False)). */
char *tok_decode(const struct tokenizer *tok, const int32_t *ids, size_t n,
                 size_t *len);
/* Like tok_decode but the exact bytes the ids stand for, without replacing
 * invalid UTF-8 (so tok_decode_bytes(tok_encode(x)) == x for any bytes x,
 * when the tokenizer has no normalizer). Caller frees. */
char *tok_decode_bytes(const struct tokenizer *tok, const int32_t *ids, size_t n,
                       size_t *len);
/* The bytes id stands for (tok_decode_bytes of that one id), owned by
 * the tokenizer, not NUL-terminated: n_out of them; NULL for an unknown
 * id. */
const char *tok_token_bytes(const struct tokenizer *tok, int32_t id, size_t *n_out);
/* Whether id is an added token marked special (e.g. <|im_end|>). */
bool tok_is_special(const struct tokenizer *tok, int32_t id);

/* Incremental decoder for streaming: fed ids one at a time, it returns only
 * whole UTF-8 characters and holds back a trailing incomplete one until the
 * next id completes it (or finish turns it into U+FFFD). The concatenation
 * of everything returned equals tok_decode of all ids. Borrows tok, which
 * must outlive the stream. */
struct tok_stream;
struct tok_stream *tok_stream_new(const struct tokenizer *tok);
/* Feeds one id; returns the newly completed text (NUL-terminated, possibly
 * empty, owned by the stream and valid until its next call) and its length
 * in *len; NULL on allocation failure. Unknown ids add nothing. */
const char *tok_stream_push(struct tok_stream *s, int32_t id, size_t *len);
/* Flushes what is held back (an incomplete character becomes U+FFFD) and
 * resets the stream for a new sequence; same return contract as push. */
const char *tok_stream_finish(struct tok_stream *s, size_t *len);
void tok_stream_free(struct tok_stream *s);

/* Number of ids in the vocabulary (including added tokens). */
int tok_vocab_size(const struct tokenizer *tok);
/* Id of a token string (added or regular), or -1. */
int tok_token_id(const struct tokenizer *tok, const char *token);

#endif
