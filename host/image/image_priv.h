/*
 * image_priv.h - helpers shared by image.c and manifest.c; not part of the
 * module's contract (image.h).
 */
#ifndef HEARTH_IMAGE_PRIV_H
#define HEARTH_IMAGE_PRIV_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* printf into err when the caller gave a buffer. */
static inline void seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

#endif
