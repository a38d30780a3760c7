/*
 * auth.h - API keys for hearthd.
 *
 * A key looks like "hk_<16 hex key id>_<64 hex secret>". Only SHA-256 of the
 * secret is stored (store.h); presented keys are hashed and compared with
 * CRYPTO_memcmp, so timing does not reveal how much of a secret matched.
 * The admin key is written in clear exactly once, to a 0600 file, on first
 * start; tenant keys are shown once, in the API response that creates them.
 */
#ifndef HEARTH_DAEMON_AUTH_H
#define HEARTH_DAEMON_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define AUTH_KEY_LEN (3 + 16 + 1 + 64)

struct principal {
	bool admin;
	int64_t tenant_id;      /* 0 for the admin */
	char tenant[128];
};

/* Creates a key for tenant_id (0 = admin), stores its hash, returns the clear key in out. */
int auth_key_create(struct store *s, int64_t tenant_id, char out[AUTH_KEY_LEN + 1],
		    char key_id[17]);

/*
 * Checks an Authorization value of len bytes: exactly "Bearer <key>" (scheme
 * case-insensitive). A bare key, trailing bytes, or a NUL inside the value are
 * refused. Returns 0 and fills p, or -EACCES.
 */
int auth_check(struct store *s, const char *header, size_t len, struct principal *p);

/* On first start, creates the admin key and writes it to path (mode 0600). */
int auth_bootstrap_admin(struct store *s, const char *path);

#endif
