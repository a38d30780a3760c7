/*
 * auth.c - API key creation and checking; see auth.h.
 */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "log.h"

static void hex(const uint8_t *in, size_t n, char *out)
{
	static const char d[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = d[in[i] >> 4];
		out[2 * i + 1] = d[in[i] & 15];
	}
	out[2 * n] = 0;
}

static int sha256(const char *data, size_t len, uint8_t out[32])
{
	unsigned int n = 32;

	return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
}

int auth_key_create(struct store *s, int64_t tenant_id, char out[AUTH_KEY_LEN + 1], char key_id[17])
{
	uint8_t id[8], secret[32], hash[32];
	char secret_hex[65];
	int rc;

	if (RAND_bytes(id, sizeof(id)) != 1 || RAND_bytes(secret, sizeof(secret)) != 1)
		return -EIO;
	hex(id, sizeof(id), key_id);
	hex(secret, sizeof(secret), secret_hex);
	if (sha256(secret_hex, 64, hash))
		return -EIO;
	rc = store_key_add(s, key_id, tenant_id, hash);
	if (rc)
		return rc;
	snprintf(out, AUTH_KEY_LEN + 1, "hk_%s_%s", key_id, secret_hex);
	OPENSSL_cleanse(secret, sizeof(secret));
	OPENSSL_cleanse(secret_hex, sizeof(secret_hex));
	return 0;
}

int auth_check(struct store *s, const char *header, size_t len, struct principal *p)
{
	char key_id[17], tname[128];
	uint8_t want[32], got[32];
	int64_t tenant;
	const char *k = header;

	memset(p, 0, sizeof(*p));
	/* The whole value must be "Bearer <key>": no bare key, and nothing after a NUL. */
	if (!k || memchr(k, 0, len) || strncasecmp(k, "Bearer ", 7) != 0)
		return -EACCES;
	k += 7;
	while (*k == ' ')
		k++;
	if (strlen(k) != AUTH_KEY_LEN || strncmp(k, "hk_", 3) != 0 || k[19] != '_')
		return -EACCES;
	memcpy(key_id, k + 3, 16);
	key_id[16] = 0;
	if (store_key_get(s, key_id, want, &tenant, tname, sizeof(tname)))
		return -EACCES;
	if (sha256(k + 20, 64, got) || CRYPTO_memcmp(want, got, 32) != 0)
		return -EACCES;
	p->admin = tenant == 0;
	p->tenant_id = tenant;
	snprintf(p->tenant, sizeof(p->tenant), "%s", tname);
	return 0;
}

int auth_bootstrap_admin(struct store *s, const char *path)
{
	char key[AUTH_KEY_LEN + 1], id[17];
	int fd, rc;
	ssize_t w;

	if (store_has_admin_key(s))
		return 0;
	rc = auth_key_create(s, 0, key, id);
	if (rc)
		return rc;
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		hlog_error("auth", "cannot write the admin key to %s: %s", path, strerror(errno));
		return -errno;
	}
	fchmod(fd, 0600); /* in case the file existed with looser permissions */
	w = write(fd, key, strlen(key));
	if (w == (ssize_t)strlen(key))
		w = write(fd, "\n", 1);
	close(fd);
	OPENSSL_cleanse(key, sizeof(key));
	if (w != 1)
		return -EIO;
	hlog_info("auth", "created the admin key; it is in %s (mode 0600)", path);
	return 0;
}
