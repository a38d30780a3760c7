/* jail_uid.c - the process-wide jail uid allocator (see jail_uid.h). */
#include "jail_uid.h"

#include <pthread.h>

#include "engine.h"

static pthread_mutex_t uid_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t uid_used[HEARTH_JAIL_UIDS / 8];
static uint32_t uid_next;

uint32_t jail_uid_get(uint32_t base)
{
	uint32_t uid = 0;

	pthread_mutex_lock(&uid_mu);
	for (uint32_t k = 0; k < HEARTH_JAIL_UIDS; k++) {
		uint32_t s = (uid_next + k) % HEARTH_JAIL_UIDS;

		if (!(uid_used[s / 8] & (1u << (s % 8)))) {
			uid_used[s / 8] |= (uint8_t)(1u << (s % 8));
			uid_next = s + 1;
			uid = base + s;
			break;
		}
	}
	pthread_mutex_unlock(&uid_mu);
	return uid;
}

void jail_uid_put(uint32_t base, uint32_t uid)
{
	if (uid < base || uid - base >= HEARTH_JAIL_UIDS)
		return;
	uint32_t s = uid - base;

	pthread_mutex_lock(&uid_mu);
	uid_used[s / 8] &= (uint8_t)~(1u << (s % 8));
	pthread_mutex_unlock(&uid_mu);
}
