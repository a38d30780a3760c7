#include "i8042.h"

#include <string.h>

#define I8042_CMD_RESET 0xfe

void i8042_io(void *opaque, uint64_t off, uint8_t *data, uint32_t len, bool is_write)
{
	struct i8042 *k = opaque;
	if (!is_write) {
		memset(data, 0, len); /* status: output buffer empty, input buffer empty */
		return;
	}
	if (off == I8042_CMD_PORT - I8042_DATA_PORT && len == 1 && data[0] == I8042_CMD_RESET &&
	    k->reset)
		k->reset(k->ctx);
}
