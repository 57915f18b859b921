# server/server.mk — aha-server, included from the top Makefile, which
# provides CC, CFLAGS_COMMON, CFLAGS, SAN, ARCH, OBJ_DIR, SOBJ_DIR and the
# %.c -> $(OBJ_DIR)/%.o / $(SOBJ_DIR)/%.o pattern rules.

SERVER_SRCS  := $(wildcard server/*.c)
SERVER_OBJS  := $(SERVER_SRCS:%.c=$(OBJ_DIR)/%.o)
SERVER_SOBJS := $(SERVER_SRCS:%.c=$(SOBJ_DIR)/%.o)
SERVER_LIBS  := -lmicrohttpd -ljansson -lpq -lcrypto -lpthread -lm

# Debian packages the server, its tests and `make run` need.
SERVER_DEB_PKGS := libmicrohttpd-dev libjansson-dev libpq-dev libcurl4-openssl-dev \
                   libssl-dev postgresql curl python3

build/aha-server: $(SERVER_OBJS)
	$(CC) $(CFLAGS) $^ -o $@ $(SERVER_LIBS)

build/aha-server-san: $(SERVER_SOBJS)
	$(CC) -O1 $(ARCH) $(SAN) $^ -o $@ $(SERVER_LIBS)

.PHONY: server server-test
server: build/aha-server build/aha-server-san

# Integration tests: a real PostgreSQL on a free port, the sanitized server,
# a scripted fake engine, and the real engine when it has `serve`.
server-test: build/aha-server-san
	python3 tests/integration/test_server.py --server build/aha-server-san
