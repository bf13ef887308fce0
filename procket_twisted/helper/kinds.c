/*
 * What the helper accepts, in two tables (read this file first): one row per kind of socket or
 * device (the keys it needs and takes, the options it may ask for, the capabilities each of its
 * privileged calls raises) and one row per socket option. Everything else (the parser, the
 * policy, the capability sets, the messages) reads these rows instead of restating them.
 */
#include "helper.h"

#include <linux/capability.h>
#include <string.h>

const char *const step_names[] = {
    [STEP_SETUP] = "setup", [STEP_PARSE] = "parse", [STEP_PRIVILEGE] = "privilege",
    [STEP_POLICY] = "policy", [STEP_SOCKET] = "socket", [STEP_SETSOCKOPT] = "setsockopt",
    [STEP_BIND] = "bind", [STEP_LISTEN] = "listen", [STEP_DROP] = "drop", [STEP_SEND] = "send",
};

const struct name_bit family_names[2] = {{"inet", FAMILY_INET}, {"inet6", FAMILY_INET6}};

const char *const key_names[KEY_COUNT] = {
    [KEY_KIND] = "kind", [KEY_FAMILY] = "family", [KEY_ADDR] = "addr", [KEY_PORT] = "port",
    [KEY_BACKLOG] = "backlog", [KEY_PROTO] = "proto", [KEY_ETHERTYPE] = "ethertype",
    [KEY_FILTER] = "filter", [KEY_COOKED] = "cooked", [KEY_PROMISC] = "promisc",
    [KEY_HDRINCL] = "hdrincl", [KEY_PREFIXLEN] = "prefixlen", [KEY_UP] = "up", [KEY_PI] = "pi",
};

#define INET_OPTIONS (OPTION(OPT_V6ONLY) | OPTION(OPT_REUSEPORT) | OPTION(OPT_FREEBIND) | \
                      OPTION(OPT_DEVICE) | OPTION(OPT_MARK) | OPTION(OPT_TRANSPARENT) |   \
                      OPTION(OPT_PRIORITY) | OPTION(OPT_RCVBUF) | OPTION(OPT_SNDBUF))
#define LINK_OPTIONS (OPTION(OPT_DEVICE) | OPTION(OPT_MARK) | OPTION(OPT_PRIORITY) | \
                      OPTION(OPT_RCVBUF) | OPTION(OPT_SNDBUF))
#define INET_KEYS (KEY(KEY_KIND) | KEY(KEY_FAMILY) | KEY(KEY_ADDR) | KEY(KEY_PORT))
#define DEVICE_KEYS (KEY(KEY_KIND) | KEY(KEY_FAMILY) | KEY(KEY_ADDR) | KEY(KEY_PREFIXLEN) | \
                     KEY(KEY_UP) | KEY(KEY_PI))

/*
 * A packet socket's device is the interface it is bound to, and a tun or tap's is the name of
 * the new interface: both are part of what is asked for (a rule's device= decides them), not the
 * SO_BINDTODEVICE option. /dev/net/tun is opened before these capabilities are raised
 * (open_tun.c: it may need CAP_DAC_OVERRIDE, where the device is mode 600).
 */
const struct kind kinds[6] = {
    {"tcp", KIND_TCP, INET_KEYS & ~KEY(KEY_KIND), INET_KEYS | KEY(KEY_BACKLOG), INET_OPTIONS,
     0, CAP_BIT(CAP_NET_BIND_SERVICE), "family, addr and port"},
    {"udp", KIND_UDP, INET_KEYS & ~KEY(KEY_KIND), INET_KEYS, INET_OPTIONS,
     0, CAP_BIT(CAP_NET_BIND_SERVICE), "family, addr and port"},
    {"raw", KIND_RAW, KEY(KEY_FAMILY) | KEY(KEY_PROTO),
     KEY(KEY_KIND) | KEY(KEY_FAMILY) | KEY(KEY_ADDR) | KEY(KEY_PROTO) | KEY(KEY_HDRINCL),
     LINK_OPTIONS, CAP_BIT(CAP_NET_RAW), 0, "family and proto"},
    {"packet", KIND_PACKET, KEY(KEY_ETHERTYPE),
     KEY(KEY_KIND) | KEY(KEY_ETHERTYPE) | KEY(KEY_FILTER) | KEY(KEY_COOKED) | KEY(KEY_PROMISC),
     LINK_OPTIONS, CAP_BIT(CAP_NET_RAW), 0, "ethertype"},
    {"tun", KIND_TUN, 0, DEVICE_KEYS, OPTION(OPT_DEVICE), CAP_BIT(CAP_NET_ADMIN), 0, "nothing"},
    {"tap", KIND_TAP, 0, DEVICE_KEYS, OPTION(OPT_DEVICE), CAP_BIT(CAP_NET_ADMIN), 0, "nothing"},
};

/*
 * The kernel checks CAP_NET_ADMIN (or CAP_NET_RAW) for mark and transparent, CAP_NET_ADMIN for a
 * priority above 6 and for forced buffer sizes, and CAP_NET_RAW for SO_BINDTODEVICE. The holder
 * can set v6only, reuseport and freebind on its own socket before bind, so a rule that names no
 * options grants them.
 */
const struct option options[OPTION_COUNT] = {
    [OPT_V6ONLY] = {"v6only", KIND_INET, 0, VALUE_NUMBER, 1, false},
    [OPT_REUSEPORT] = {"reuseport", KIND_INET, 0, VALUE_FLAG, 1, false},
    [OPT_FREEBIND] = {"freebind", KIND_INET, 0, VALUE_FLAG, 1, false},
    [OPT_DEVICE] = {"device", KIND_ANY, CAP_BIT(CAP_NET_RAW), VALUE_NAME, 0, false},
    [OPT_MARK] = {"mark", KIND_SOCKET, CAP_BIT(CAP_NET_ADMIN), VALUE_NUMBER, UINT32_MAX, true},
    [OPT_TRANSPARENT] = {"transparent", KIND_INET, CAP_BIT(CAP_NET_ADMIN), VALUE_FLAG, 1, false},
    [OPT_PRIORITY] = {"priority", KIND_SOCKET, CAP_BIT(CAP_NET_ADMIN), VALUE_NUMBER, INT32_MAX,
                      true},
    [OPT_RCVBUF] = {"rcvbuf", KIND_SOCKET, CAP_BIT(CAP_NET_ADMIN), VALUE_NUMBER, INT32_MAX / 2,
                    true},
    [OPT_SNDBUF] = {"sndbuf", KIND_SOCKET, CAP_BIT(CAP_NET_ADMIN), VALUE_NUMBER, INT32_MAX / 2,
                    true},
};

unsigned unprivileged_options(void)
{
    unsigned bits = 0;
    for (unsigned i = 0; i < OPTION_COUNT; i++)
        if (options[i].needs == 0)
            bits |= OPTION(i);
    return bits;
}

const struct kind *kind_of(unsigned bit)
{
    for (size_t i = 0; i < COUNT(kinds); i++)
        if (kinds[i].bit == bit)
            return &kinds[i];
    return &kinds[0];               /* never reached: a parsed kind is one of the rows */
}

bool parse_kind(const char *text, unsigned *bit)
{
    for (size_t i = 0; i < COUNT(kinds); i++)
        if (strcmp(text, kinds[i].name) == 0) {
            *bit = kinds[i].bit;
            return true;
        }
    return false;
}

bool parse_option_name(const char *text, unsigned *index)
{
    for (unsigned i = 0; i < OPTION_COUNT; i++)
        if (strcmp(text, options[i].name) == 0) {
            *index = i;
            return true;
        }
    return false;
}
