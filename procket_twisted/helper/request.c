/*
 * The caller's request: argv is "v1 [check] SPEC...", one SPEC per socket, such as
 * "kind=tcp,family=inet6,addr=::1,port=80,backlog=50,v6only=1", "kind=raw,family=inet,proto=1",
 * "kind=packet,ethertype=0x806,device=eth0" or
 * "kind=tun,device=tun7,family=inet,addr=10.9.0.1,prefixlen=24,up=1". Keys come in any order,
 * each at most once; which keys and options each kind needs and takes is its row in kinds.c.
 * This is the caller's input: it is parsed with no effective capability, into fixed-size
 * structures, with every length bounded.
 */
#include "helper.h"

#include <stdlib.h>
#include <string.h>

/* The value of socket option INDEX in a spec. */
static bool parse_option(unsigned index, const char *value, struct socket_request *out)
{
    switch (options[index].value) {
    case VALUE_NAME: return parse_device(value, out->device);
    case VALUE_FLAG: out->values[index] = 1; return strcmp(value, "1") == 0;
    default: return parse_number(value, options[index].max, &out->values[index]);
    }
}

static bool is_hex_digit(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* A classic BPF program: 16 lowercase hex digits per instruction (code 4, jt 2, jf 2, k 8). */
static bool parse_filter(const char *text, struct socket_request *out)
{
    size_t length = strlen(text);
    if (length == 0 || length % 16 != 0 || length / 16 > MAX_FILTER)
        return false;
    for (size_t i = 0; i < length; i++)
        if (!is_hex_digit(text[i]))
            return false;
    out->filter_length = (unsigned)(length / 16);
    for (unsigned i = 0; i < out->filter_length; i++) {
        char field[9];
        const char *at = text + 16 * i;
        unsigned long parts[4];
        const unsigned widths[4] = {4, 2, 2, 8};
        for (unsigned f = 0, offset = 0; f < 4; offset += widths[f], f++) {
            memcpy(field, at + offset, widths[f]);
            field[widths[f]] = '\0';
            parts[f] = strtoul(field, NULL, 16);   /* only hex digits, checked above */
        }
        out->filter[i].code = (uint16_t)parts[0];
        out->filter[i].jt = (uint8_t)parts[1];
        out->filter[i].jf = (uint8_t)parts[2];
        out->filter[i].k = (uint32_t)parts[3];
    }
    return true;
}

static bool parse_flag(const char *value, bool *out)
{
    *out = true;
    return strcmp(value, "1") == 0;
}

static bool parse_key(unsigned key, const char *value, struct socket_request *out,
                      unsigned *family, const char **address)
{
    switch (key) {
    case KEY_KIND: return parse_kind(value, &out->kind);
    case KEY_FAMILY: return parse_name(value, family_names, COUNT(family_names), family);
    case KEY_ADDR: *address = value; return true;
    case KEY_PORT: return parse_number(value, 65535, &out->port);
    case KEY_BACKLOG: return parse_number(value, 65535, &out->backlog);
    case KEY_PROTO: return parse_number(value, 255, &out->proto) && out->proto != 0;
    case KEY_ETHERTYPE: return parse_ethertype(value, &out->ethertype);
    case KEY_FILTER: return parse_filter(value, out);
    case KEY_PREFIXLEN: return parse_number(value, 128, &out->prefixlen);
    case KEY_COOKED: return parse_flag(value, &out->cooked);
    case KEY_PROMISC: return parse_flag(value, &out->promisc);
    case KEY_HDRINCL: return parse_flag(value, &out->hdrincl);
    case KEY_UP: return parse_flag(value, &out->up);
    default: return parse_flag(value, &out->pi);
    }
}

/* What the kind's row needs and allows, and how the keys fit together; SEEN: the KEY() bits. */
static bool check_spec(struct socket_request *out, unsigned seen, unsigned family,
                       const char *address, reason why)
{
    const struct kind *kind = kind_of(out->kind);
    if ((seen & kind->required) != kind->required) {
        say(why, "%s needs %s", kind->name, kind->required_text);
        return false;
    }
    for (unsigned key = 0; key < KEY_COUNT; key++)
        if ((seen & KEY(key)) && !(kind->keys & KEY(key))) {
            say(why, "%s does not apply to kind %s", key_names[key], kind->name);
            return false;
        }
    for (unsigned i = 0; i < OPTION_COUNT; i++)
        if ((out->options & OPTION(i)) && !(kind->options & OPTION(i))) {
            say(why, "option %s does not apply to kind %s", options[i].name, kind->name);
            return false;
        }
    if ((seen & KEY(KEY_ADDR)) && family == 0) {
        say(why, "addr needs a family");
        return false;
    }
    if (address != NULL && !parse_address(address, family, &out->address)) {
        say(why, "addr '%.48s' is not a numeric %s address", address,
            family == FAMILY_INET ? "IPv4" : "IPv6");
        return false;
    }
    if (address != NULL && (out->kind & (KIND_RAW | KIND_DEVICE)) && is_v4_mapped(&out->address)) {
        say(why, "addr '%.48s' is IPv4-mapped: give the IPv4 address with family=inet", address);
        return false;
    }
    out->has_address = address != NULL;
    if (address == NULL)
        out->address.family = family;   /* raw, tun, tap: the family, and no address */
    if ((out->options & OPTION(OPT_V6ONLY)) && family != FAMILY_INET6) {
        say(why, "v6only applies to family=inet6 only");
        return false;
    }
    if (out->hdrincl && family != FAMILY_INET) {
        say(why, "hdrincl applies to family=inet only");
        return false;
    }
    if (out->promisc && !(out->options & OPTION(OPT_DEVICE))) {
        say(why, "promisc needs a device");
        return false;
    }
    uint32_t longest = family == FAMILY_INET ? 32 : 128;
    if ((seen & KEY(KEY_PREFIXLEN)) && (address == NULL || out->prefixlen > longest)) {
        say(why, "prefixlen needs an addr, and at most %u bits", (unsigned)longest);
        return false;
    }
    if (!(seen & KEY(KEY_PREFIXLEN)))
        out->prefixlen = longest;
    return true;
}

bool parse_spec(const char *spec, struct socket_request *out, reason why)
{
    char copy[MAX_SPEC_LEN + 1];
    if (strlen(spec) > MAX_SPEC_LEN) {
        say(why, "longer than %d bytes", MAX_SPEC_LEN);
        return false;
    }
    strcpy(copy, spec);
    const char *address = NULL;
    unsigned family = 0, seen = 0;
    memset(out, 0, sizeof *out);
    out->backlog = DEFAULT_BACKLOG;
    char *cursor = copy;
    for (char *item = strsep(&cursor, ","); item != NULL; item = strsep(&cursor, ",")) {
        char *name, *value;
        unsigned key = 0, option = 0;
        if (!split_pair(item, &name, &value)) {
            say(why, "'%.32s' is not key=value", item);
            return false;
        }
        while (key < KEY_COUNT && strcmp(name, key_names[key]) != 0)
            key++;
        bool is_option = key == KEY_COUNT;
        if (is_option && !parse_option_name(name, &option)) {
            say(why, "unknown key '%.32s'", name);
            return false;
        }
        bool given = is_option ? (out->options & OPTION(option)) != 0 : (seen & KEY(key)) != 0;
        if (given) {
            say(why, "key '%s' given twice", name);
            return false;
        }
        bool ok;
        if (is_option) {
            out->options |= OPTION(option);
            ok = parse_option(option, value, out);
        } else {
            seen |= KEY(key);
            ok = parse_key(key, value, out, &family, &address);
        }
        if (!ok) {
            say(why, "bad value '%.48s' for %s", value, name);
            return false;
        }
    }
    if (out->kind == 0) {
        say(why, "kind is required");
        return false;
    }
    return check_spec(out, seen, family, address, why);
}

bool parse_request(int argc, char *const argv[], struct request *out, unsigned *bad, reason why)
{
    *bad = 0;
    if (argc >= 2 && strcmp(argv[1], PROTOCOL_VERSION) != 0) {
        say(why, "protocol '%.16s' is not supported; this helper speaks " PROTOCOL_VERSION
            " (reinstall it with procket-twisted install-helper)", argv[1]);
        return false;
    }
    out->check = argc >= 3 && strcmp(argv[2], "check") == 0;
    int first = out->check ? 3 : 2;
    if (argc <= first) {
        say(why, "usage: procket-helper " PROTOCOL_VERSION " [check] SPEC... (it is run by "
            "procket_twisted)");
        return false;
    }
    if (argc - first > MAX_SOCKETS) {
        say(why, "%d sockets asked for; at most %d per call", argc - first, MAX_SOCKETS);
        return false;
    }
    out->count = (unsigned)(argc - first);
    for (unsigned i = 0; i < out->count; i++)
        if (!parse_spec(argv[first + (int)i], &out->sockets[i], why)) {
            *bad = i + 1;
            return false;
        }
    return true;
}
