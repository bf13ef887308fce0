/*
 * Strict parsing of the words the caller's request and the policy are made of: decimal numbers
 * without sign or leading zero, names from allowlists, numeric addresses, interface names, hex
 * ethertypes, prefixes and ranges. No I/O and no privilege: the caller's input reaches these
 * functions only after the helper holds no effective capability (main.c).
 */
#include "helper.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void say(reason why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(why, sizeof(reason), fmt, ap);
    va_end(ap);
}

/* Decimal, no sign, no leading zero, at most MAX. */
bool parse_number(const char *text, uint32_t max, uint32_t *out)
{
    size_t length = strlen(text);
    if (length == 0 || length > 10 || (length > 1 && text[0] == '0'))
        return false;
    uint64_t value = 0;
    for (size_t i = 0; i < length; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        value = value * 10 + (uint64_t)(text[i] - '0');
    }
    if (value > max)
        return false;
    *out = (uint32_t)value;
    return true;
}

bool parse_name(const char *text, const struct name_bit *names, size_t n, unsigned *out)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(text, names[i].name) == 0) {
            *out = names[i].bit;
            return true;
        }
    return false;
}

/* A numeric address; FAMILY 0 means "either, by its form". */
bool parse_address(const char *text, unsigned family, struct address *out)
{
    if (strlen(text) > INET6_ADDRSTRLEN)
        return false;
    memset(out, 0, sizeof *out);
    if (family != FAMILY_INET6 && inet_pton(AF_INET, text, out->bytes) == 1) {
        out->family = FAMILY_INET;
        return true;
    }
    if (family != FAMILY_INET && inet_pton(AF_INET6, text, out->bytes) == 1) {
        out->family = FAMILY_INET6;
        return true;
    }
    memset(out, 0, sizeof *out);
    return false;
}

/* ::ffff:a.b.c.d, which an IPv6 socket uses for the IPv4 address a.b.c.d. */
bool is_v4_mapped(const struct address *address)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return address->family == FAMILY_INET6 && memcmp(address->bytes, mapped, 12) == 0;
}

/* An IPv4-mapped address as the IPv4 address it stands for. */
void unmap_v4(struct address *address)
{
    unsigned char v4[4];
    memcpy(v4, address->bytes + 12, 4);
    memset(address, 0, sizeof *address);
    address->family = FAMILY_INET;
    memcpy(address->bytes, v4, 4);
}

/* Splits "key=value" in place. */
bool split_pair(char *item, char **key, char **value)
{
    char *equals = strchr(item, '=');
    if (equals == NULL || equals == item || equals[1] == '\0')
        return false;
    *equals = '\0';
    *key = item;
    *value = equals + 1;
    return true;
}

/* An interface name: 1 to IFNAMSIZ-1 characters of letters, digits and . _ - : */
bool parse_device(const char *text, char out[IFNAMSIZ])
{
    size_t length = strlen(text);
    if (length == 0 || length >= IFNAMSIZ)
        return false;
    for (size_t i = 0; i < length; i++) {
        char c = text[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-' || c == ':'))
            return false;
    }
    memcpy(out, text, length + 1);
    return true;
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* "0x" and 1 to 4 lowercase hex digits, no leading zero: an ethertype such as 0x806. */
bool parse_ethertype(const char *text, uint32_t *out)
{
    size_t length = strlen(text);
    if (length < 3 || length > 6 || text[0] != '0' || text[1] != 'x' || (length > 3 && text[2] == '0'))
        return false;
    uint32_t value = 0;
    for (size_t i = 2; i < length; i++) {
        if (!is_hex(text[i]))
            return false;
        value = value * 16 + (uint32_t)(text[i] <= '9' ? text[i] - '0' : text[i] - 'a' + 10);
    }
    *out = value;
    return true;
}

/*
 * "10.0.0.0/8", "::1" (a single address: all its bits). The prefix is a network: the bits after
 * it are cleared ("10.0.0.1/8" is 10.0.0.0/8, as ip(8) reads it). An IPv4-mapped prefix of at
 * least 96 bits is the IPv4 prefix it stands for, as requests are matched (policy.c).
 */
bool parse_prefix(const char *text, struct prefix *out)
{
    char copy[INET6_ADDRSTRLEN + 8];
    if (strlen(text) >= sizeof copy)
        return false;
    strcpy(copy, text);
    char *slash = strchr(copy, '/');
    if (slash != NULL)
        *slash = '\0';
    if (!parse_address(copy, 0, &out->address))
        return false;
    uint32_t max = out->address.family == FAMILY_INET ? 32 : 128;
    out->bits = max;
    if (slash != NULL) {
        uint32_t bits;
        if (!parse_number(slash + 1, max, &bits))
            return false;
        out->bits = bits;
    }
    for (unsigned bit = out->bits; bit < max; bit++)
        out->address.bytes[bit / 8] &= (unsigned char)~(0x80u >> (bit % 8));
    if (is_v4_mapped(&out->address) && out->bits >= 96) {
        unmap_v4(&out->address);
        out->bits -= 96;
    }
    return true;
}

/* A number or range of numbers up to MAX: "80", "1000-1023"; ethertypes in hex: "0x806". */
bool parse_range(const char *text, uint32_t max, bool hex, struct range *out)
{
    char copy[24];
    if (strlen(text) >= sizeof copy)
        return false;
    strcpy(copy, text);
    char *dash = strchr(copy, '-');
    if (dash != NULL)
        *dash = '\0';
    bool ok = hex ? parse_ethertype(copy, &out->low) : parse_number(copy, max, &out->low);
    out->high = out->low;
    if (ok && dash != NULL)
        ok = (hex ? parse_ethertype(dash + 1, &out->high) : parse_number(dash + 1, max, &out->high))
             && out->high >= out->low;
    return ok;
}
