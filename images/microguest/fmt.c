/* Numbers on the wire (hex without 0x, signed decimal) and the two libc calls gcc may emit. */
#include "microguest.h"

/* 1..n hex digits, either case; 0 on anything else or on a value above 2**64-1. */
int fmt_parse_hex(const char *s, usize n, u64 *out)
{
    u64 v = 0;
    if (n == 0)
        return 0;
    for (usize i = 0; i < n; i++) {
        char c = s[i];
        u64 d;
        if (c >= '0' && c <= '9')
            d = (u64)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (u64)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (u64)(c - 'A' + 10);
        else
            return 0;
        if (v >> 60)
            return 0;
        v = v << 4 | d;
    }
    *out = v;
    return 1;
}

/* Lower-case hex, at least `width` digits (1 for none); returns the length written. */
usize fmt_hex(char *dst, u64 v, int width)
{
    char tmp[16];
    usize n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n < (usize)width)
        tmp[n++] = '0';
    for (usize i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

usize fmt_dec(char *dst, s64 v)
{
    char tmp[20];
    usize n = 0, len = 0;
    u64 m = v < 0 ? 0 - (u64)v : (u64)v;
    do {
        tmp[n++] = (char)('0' + m % 10);
        m /= 10;
    } while (m);
    if (v < 0)
        dst[len++] = '-';
    while (n)
        dst[len++] = tmp[--n];
    return len;
}

void *memset(void *dst, int c, usize n)
{
    u8 *d = dst;
    while (n--)
        *d++ = (u8)c;
    return dst;
}

void *memcpy(void *dst, const void *src, usize n)
{
    u8 *d = dst;
    const u8 *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}
