/* engine/errmsg.h — filling the caller's error buffer, the one way every
 * engine module reports what went wrong (PostgreSQL-style messages naming
 * the place: file, line, field). */
#ifndef AHA_ERRMSG_H
#define AHA_ERRMSG_H

#include <stddef.h>

/* printf into err (errlen bytes, always NUL-terminated when errlen > 0). */
void errmsg_set(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
