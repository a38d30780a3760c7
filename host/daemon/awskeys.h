/*
 * awskeys.h - per-tenant AWS access key pairs for the Lambda API (SigV4).
 *
 * SigV4 needs the secret itself on the server (it is an HMAC key), so unlike
 * hearth's API keys it cannot be stored as a hash. It is sealed instead:
 * AES-256-GCM (OpenSSL EVP) under a 32-byte host key, with a fresh 12-byte
 * nonce per key and the access key id and tenant id as associated data (a
 * sealed secret copied onto another row does not open). The row holds
 * nonce || ciphertext || tag.
 *
 * The host key lives in <state dir>/aws-host.key, mode 0600, created (with
 * O_EXCL) when the first AWS key is created. A host key file readable by group
 * or others is refused, and so is one of the wrong size; without it no AWS key
 * can be used (requests get UnrecognizedClientException, and the reason is
 * logged). Losing the file makes every AWS key useless (hearth keys are not
 * affected); back it up with the database.
 *
 * An access key id is "HKIA" + 16 characters of [A-Z2-7] (20 in all, like
 * AWS's); a secret is 40 characters of [A-Za-z0-9+/]. The secret is returned
 * once, by awskeys_create, and never logged.
 *
 * Thread-safe: the host key is loaded once under a mutex.
 */
#ifndef HEARTH_DAEMON_AWSKEYS_H
#define HEARTH_DAEMON_AWSKEYS_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define AWSKEY_ID_LEN 20
#define AWSKEY_SECRET_LEN 40
#define AWSKEY_HOST_KEY_FILE "aws-host.key"

struct awskeys;

/* Nothing is read or created yet. Returns 0 or -ENOMEM. */
int awskeys_open(struct store *s, const char *state_dir, struct awskeys **out);
void awskeys_close(struct awskeys *k);

/* Creates a key pair for tenant_id (creating the host key if needed). Returns 0 or -errno. */
int awskeys_create(struct awskeys *k, int64_t tenant_id, char id[AWSKEY_ID_LEN + 1],
		   char secret[AWSKEY_SECRET_LEN + 1]);

/*
 * Looks an access key id up and unseals its secret (caller cleanses it with
 * OPENSSL_cleanse). Returns 0, -ENOENT for an unknown id (or a malformed one),
 * -EIO when the secret cannot be unsealed (no host key, wrong host key,
 * tampered row; logged without the secret).
 */
int awskeys_lookup(struct awskeys *k, const char *id, int64_t *tenant_id, char *tenant,
		   size_t tenantlen, char secret[AWSKEY_SECRET_LEN + 1]);

/* True if s looks like an access key id (so DELETE .../keys/{id} knows which table). */
int awskeys_is_id(const char *s);

#endif
