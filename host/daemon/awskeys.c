/*
 * awskeys.c - sealed AWS access keys; see awskeys.h.
 */
#include "awskeys.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "log.h"

#define NONCE_LEN 12
#define TAG_LEN 16
#define SEALED_LEN (NONCE_LEN + AWSKEY_SECRET_LEN + TAG_LEN)

struct awskeys {
	struct store *store;
	char path[512];
	pthread_mutex_t mu;
	bool loaded;
	uint8_t key[32];
};

int awskeys_open(struct store *s, const char *state_dir, struct awskeys **out)
{
	struct awskeys *k = calloc(1, sizeof(*k));

	if (!k)
		return -ENOMEM;
	k->store = s;
	snprintf(k->path, sizeof(k->path), "%s/%s", state_dir, AWSKEY_HOST_KEY_FILE);
	pthread_mutex_init(&k->mu, NULL);
	*out = k;
	return 0;
}

void awskeys_close(struct awskeys *k)
{
	if (!k)
		return;
	OPENSSL_cleanse(k->key, sizeof(k->key));
	pthread_mutex_destroy(&k->mu);
	free(k);
}

static int read_host_key(struct awskeys *k)
{
	struct stat st;
	ssize_t n;
	int fd = open(k->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode) || st.st_size != 32) {
		close(fd);
		hlog_error("awskeys", "%s is not a 32-byte file: AWS keys are unusable", k->path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		close(fd);
		hlog_error("awskeys", "%s is readable by group or others (mode %03o): refused;"
			   " chmod 600 it if it was never exposed, else revoke every AWS key",
			   k->path, (unsigned)(st.st_mode & 0777));
		return -EPERM;
	}
	n = read(fd, k->key, 32);
	close(fd);
	if (n != 32)
		return -EIO;
	k->loaded = true;
	return 0;
}

/* Loads the host key; creates it if create is set and there is none. Holds k->mu. */
static int host_key(struct awskeys *k, bool create)
{
	int rc, fd;
	ssize_t w;

	if (k->loaded)
		return 0;
	rc = read_host_key(k);
	if (rc != -ENOENT || !create)
		return rc;
	if (RAND_bytes(k->key, 32) != 1)
		return -EIO;
	fd = open(k->path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = -errno;
		hlog_error("awskeys", "cannot create %s: %s", k->path, strerror(errno));
		OPENSSL_cleanse(k->key, 32);
		return rc;
	}
	w = write(fd, k->key, 32);
	if (w != 32 || fsync(fd)) {
		close(fd);
		unlink(k->path);
		OPENSSL_cleanse(k->key, 32);
		return -EIO;
	}
	close(fd);
	k->loaded = true;
	hlog_info("awskeys", "created the AWS key host key %s (mode 0600)", k->path);
	return 0;
}

static void aad_of(const char *id, int64_t tenant_id, char *aad, size_t n)
{
	snprintf(aad, n, "hearth-aws-key:%s:%lld", id, (long long)tenant_id);
}

static int seal(const uint8_t key[32], const char *aad, const char *secret, uint8_t out[SEALED_LEN])
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0, f = 0, ok;

	if (!c || RAND_bytes(out, NONCE_LEN) != 1) {
		EVP_CIPHER_CTX_free(c);
		return -EIO;
	}
	ok = EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
	     EVP_EncryptInit_ex(c, NULL, NULL, key, out) == 1 &&
	     EVP_EncryptUpdate(c, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
	     EVP_EncryptUpdate(c, out + NONCE_LEN, &n, (const uint8_t *)secret,
			       AWSKEY_SECRET_LEN) == 1 &&
	     EVP_EncryptFinal_ex(c, out + NONCE_LEN + n, &f) == 1 && n + f == AWSKEY_SECRET_LEN &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN,
				 out + NONCE_LEN + AWSKEY_SECRET_LEN) == 1;
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -EIO;
}

static int unseal(const uint8_t key[32], const char *aad, const uint8_t in[SEALED_LEN],
		  char secret[AWSKEY_SECRET_LEN + 1])
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	uint8_t tag[TAG_LEN];
	int n = 0, f = 0, ok;

	if (!c)
		return -EIO;
	memcpy(tag, in + NONCE_LEN + AWSKEY_SECRET_LEN, TAG_LEN);
	ok = EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
	     EVP_DecryptInit_ex(c, NULL, NULL, key, in) == 1 &&
	     EVP_DecryptUpdate(c, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) == 1 &&
	     EVP_DecryptUpdate(c, (uint8_t *)secret, &n, in + NONCE_LEN, AWSKEY_SECRET_LEN) == 1 &&
	     EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag) == 1 &&
	     EVP_DecryptFinal_ex(c, (uint8_t *)secret + n, &f) == 1 && n + f == AWSKEY_SECRET_LEN;
	EVP_CIPHER_CTX_free(c);
	secret[AWSKEY_SECRET_LEN] = 0;
	if (!ok) {
		OPENSSL_cleanse(secret, AWSKEY_SECRET_LEN + 1);
		return -EIO;
	}
	return 0;
}

/* Fills out[0..n) with characters of alphabet (its length a power of two, so no bias). */
static int random_chars(char *out, size_t n, const char *alphabet, unsigned mask)
{
	uint8_t r[64];

	if (n > sizeof(r) || RAND_bytes(r, (int)n) != 1)
		return -EIO;
	for (size_t i = 0; i < n; i++)
		out[i] = alphabet[r[i] & mask];
	out[n] = 0;
	OPENSSL_cleanse(r, sizeof(r));
	return 0;
}

int awskeys_is_id(const char *s)
{
	if (!s || strlen(s) != AWSKEY_ID_LEN || strncmp(s, "HKIA", 4) != 0)
		return 0;
	for (int i = 4; i < AWSKEY_ID_LEN; i++)
		if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '2' && s[i] <= '7')))
			return 0;
	return 1;
}

int awskeys_create(struct awskeys *k, int64_t tenant_id, char id[AWSKEY_ID_LEN + 1],
		   char secret[AWSKEY_SECRET_LEN + 1])
{
	static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	uint8_t sealed[SEALED_LEN], key[32];
	char aad[128];
	int rc;

	pthread_mutex_lock(&k->mu);
	rc = host_key(k, true);
	if (!rc)
		memcpy(key, k->key, 32);
	pthread_mutex_unlock(&k->mu);
	if (rc)
		return rc;
	memcpy(id, "HKIA", 4);
	rc = random_chars(id + 4, AWSKEY_ID_LEN - 4, b32, 31);
	if (!rc)
		rc = random_chars(secret, AWSKEY_SECRET_LEN, b64, 63);
	if (!rc) {
		aad_of(id, tenant_id, aad, sizeof(aad));
		rc = seal(key, aad, secret, sealed);
	}
	if (!rc)
		rc = store_aws_key_add(k->store, id, tenant_id, sealed, sizeof(sealed));
	OPENSSL_cleanse(key, sizeof(key));
	if (rc)
		OPENSSL_cleanse(secret, AWSKEY_SECRET_LEN + 1);
	return rc;
}

int awskeys_lookup(struct awskeys *k, const char *id, int64_t *tenant_id, char *tenant,
		   size_t tenantlen, char secret[AWSKEY_SECRET_LEN + 1])
{
	uint8_t sealed[SEALED_LEN + 16], key[32];
	size_t len = sizeof(sealed);
	char aad[128];
	int rc;

	if (!awskeys_is_id(id))
		return -ENOENT;
	rc = store_aws_key_get(k->store, id, tenant_id, tenant, tenantlen, sealed, &len);
	if (rc)
		return rc == -ENOENT ? -ENOENT : -EIO;
	if (len != SEALED_LEN) {
		hlog_error("awskeys", "AWS key %s: the stored secret has the wrong size", id);
		return -EIO;
	}
	pthread_mutex_lock(&k->mu);
	rc = host_key(k, false);
	if (!rc)
		memcpy(key, k->key, 32);
	pthread_mutex_unlock(&k->mu);
	if (rc) {
		hlog_error("awskeys", "AWS key %s: cannot load the host key %s: %s", id, k->path,
			   strerror(-rc));
		return -EIO;
	}
	aad_of(id, *tenant_id, aad, sizeof(aad));
	rc = unseal(key, aad, sealed, secret);
	OPENSSL_cleanse(key, sizeof(key));
	if (rc)
		hlog_error("awskeys", "AWS key %s: the secret does not unseal under %s (another host"
			   " key, or a tampered row)", id, k->path);
	return rc;
}
