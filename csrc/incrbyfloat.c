/* INCRBYFLOAT's arithmetic, as Redis 7 does it (src/util.c string2ld and
 * ld2string, src/t_string.c incrbyfloatCommand): in C's long double, which
 * Rust lacks. Called from src/server/commands/args.rs. */

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LONG_DOUBLE_CHARS (5 * 1024)

/* Redis's string2ld: the whole string, no leading space, no NaN. */
static int string2ld(const char *s, size_t slen, long double *dp) {
    char buf[MAX_LONG_DOUBLE_CHARS];
    long double value;
    char *eptr;

    if (slen == 0 || slen >= sizeof(buf)) return 0;
    memcpy(buf, s, slen);
    buf[slen] = '\0';

    errno = 0;
    value = strtold(buf, &eptr);
    if (isspace((unsigned char)buf[0]) || eptr[0] != '\0' ||
        (size_t)(eptr - buf) != slen ||
        (errno == ERANGE &&
         (value == HUGE_VALL || value == -HUGE_VALL || fpclassify(value) == FP_ZERO)) ||
        errno == EINVAL || isnan(value))
        return 0;

    *dp = value;
    return 1;
}

/* Redis's ld2string in LD_STR_HUMAN mode: 17 decimals, trailing zeros and
 * a trailing point cut, "-0" written "0". Returns the length, 0 on no room. */
static size_t ld2string_human(char *buf, size_t len, long double value) {
    int n = snprintf(buf, len, "%.17Lf", value);
    if (n < 0 || (size_t)n + 1 > len) return 0;
    size_t l = (size_t)n;
    if (strchr(buf, '.') != NULL) {
        char *p = buf + l - 1;
        while (*p == '0') {
            p--;
            l--;
        }
        if (*p == '.') l--;
    }
    if (l == 2 && buf[0] == '-' && buf[1] == '0') {
        buf[0] = '0';
        l = 1;
    }
    buf[l] = '\0';
    return l;
}

/* current + by into out. Returns 0 and sets *written on success, 1 when
 * either is not a valid float, 2 when the sum is NaN or infinite (or does
 * not fit in out). */
int rkv_incrbyfloat(const char *current, size_t current_len, const char *by, size_t by_len,
                    char *out, size_t out_len, size_t *written) {
    long double value, incr;
    if (!string2ld(current, current_len, &value) || !string2ld(by, by_len, &incr)) return 1;
    value += incr;
    if (isnan(value) || isinf(value)) return 2;
    size_t l = ld2string_human(out, out_len, value);
    if (l == 0) return 2;
    *written = l;
    return 0;
}
