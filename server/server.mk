# server/server.mk — aha-server, included from the top Makefile, which
# provides CC, CFLAGS_COMMON, CFLAGS, SAN, ARCH, OBJ_DIR, SOBJ_DIR, the
# %.c -> $(OBJ_DIR)/%.o / $(SOBJ_DIR)/%.o pattern rules and build/aha-engine.

# Reward specs are text rules (no tensor math): the server validates and
# dry-runs them with the engine's own code, so both agree on every spec.
SERVER_ENGINE_SRCS := engine/rewards.c engine/rewards_http.c engine/rewards_math.c \
                      engine/rewards_text.c engine/errmsg.c
SERVER_SRCS  := $(wildcard server/*.c) $(SERVER_ENGINE_SRCS)
SERVER_OBJS  := $(SERVER_SRCS:%.c=$(OBJ_DIR)/%.o)
SERVER_SOBJS := $(SERVER_SRCS:%.c=$(SOBJ_DIR)/%.o)
SERVER_LIBS  := -lmicrohttpd -ljansson -lpq -lcrypto -lpcre2-8 -lutf8proc -lcurl -lpthread -lm

# Debian packages the server, its tests, its bench and `make run` need.
SERVER_DEB_PKGS := libmicrohttpd-dev libjansson-dev libpq-dev libssl-dev libpcre2-dev libutf8proc-dev postgresql \
                   libcurl4-openssl-dev curl python3

build/aha-server: $(SERVER_OBJS)
	$(CC) $(CFLAGS) $^ -o $@ $(SERVER_LIBS)

build/aha-server-san: $(SERVER_SOBJS)
	$(CC) -O1 $(ARCH) $(SAN) $^ -o $@ $(SERVER_LIBS)

.PHONY: server server-test server-bench
server: build/aha-server build/aha-server-san

# Integration tests (~1 min): a throwaway PostgreSQL on a free port, the
# sanitized server, a scripted fake engine, and the real engine when it
# has `serve` (on a tiny model pretrained for two steps); then the catalog
# (datasets, rewards, pipelines checked by `aha-engine train --check`).
server-test: build/aha-server-san build/aha-engine
	$(PYTHON) tests/integration/test_server.py --server build/aha-server-san --engine build/aha-engine
	$(PYTHON) tests/integration/test_catalog.py --server build/aha-server-san --engine build/aha-engine

# Requests/s and latency at concurrency 1 and 32 (max_tokens 1), server
# overhead per request, 200 concurrent streams checked token by token.
server-bench: build/aha-server build/aha-engine
	$(PYTHON) tests/integration/bench_server.py --server build/aha-server --engine build/aha-engine
