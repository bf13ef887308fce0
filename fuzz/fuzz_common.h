/*
 * Shared by the libFuzzer harnesses: linked with the helper's own pure files (kinds.c, text.c,
 * request.c, policy.c, filters.c: the parsers, the policy's decisions and the grant filters), it
 * holds an independent reference of the policy matching, invariant checks, known-answer checks,
 * and a few fixed callers, requests and a fixed policy.
 *
 * Build (scripts/fuzz does this):
 *   clang -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -g -O1 -DPROCKET_FUZZ \
 *         -Iprocket_twisted/helper fuzz/fuzz_request.c procket_twisted/helper/{kinds,text,\
 *         request,policy,filters}.c -o fuzz_request
 * scripts/fuzz --self-test builds the same harnesses from copies of the helper's directory with
 * one bug injected.
 *
 * The invariants and the reference restate what the helper's files and docs/policy.md promise,
 * field by field: a change to struct socket_request, struct rule or the matching rules needs the
 * same change here (scripts/fuzz fails to build, or reports the disagreement, until it is made).
 * The known answers (fuzz_known_answers) do not read the parsed structures at all: they state
 * what a policy text decides for a request text, so a parser that reads "10.0.0.0/8" as one host
 * fails them even where the reference would agree with it.
 */
#ifndef PROCKET_FUZZ_COMMON_H
#define PROCKET_FUZZ_COMMON_H

#ifndef PROCKET_FUZZ
#error "build the harnesses with -DPROCKET_FUZZ"
#endif

#include "helper.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A failed invariant is a crash for libFuzzer: it saves the input and exits non-zero. */
#define CHECK(condition, ...)                                                                  \
    do {                                                                                       \
        if (!(condition)) {                                                                    \
            fprintf(stderr, "INVARIANT FAILED %s:%d: %s: ", __FILE__, __LINE__, #condition);   \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* ---- argv from NUL-separated bytes ------------------------------------------------------------ */

#define FUZZ_MAX_ARGS (MAX_SOCKETS + 8)   /* enough to reach "too many sockets" */

struct fuzz_argv {
    int argc;
    char *argv[FUZZ_MAX_ARGS + 2];
};

/*
 * argv[0] is the program; each NUL-separated piece of DATA is one more argument, copied into its
 * own exact-size allocation so that ASan sees any read past its terminator. At most
 * FUZZ_MAX_ARGS pieces; the rest is ignored.
 */
static void fuzz_argv_make(struct fuzz_argv *args, const uint8_t *data, size_t size)
{
    static char program[] = "procket-helper";
    args->argc = 0;
    args->argv[args->argc++] = program;
    size_t start = 0;
    while (start <= size && args->argc <= FUZZ_MAX_ARGS) {
        const uint8_t *nul = start < size ? memchr(data + start, '\0', size - start) : NULL;
        size_t length = nul != NULL ? (size_t)(nul - (data + start)) : size - start;
        if (nul == NULL && length == 0 && start > 0)
            break;                    /* a trailing NUL ends the last piece, adds none */
        char *piece = malloc(length + 1);
        CHECK(piece != NULL, "out of memory");
        memcpy(piece, data + start, length);
        piece[length] = '\0';
        args->argv[args->argc++] = piece;
        start += length + 1;
    }
    args->argv[args->argc] = NULL;
}

static void fuzz_argv_free(struct fuzz_argv *args)
{
    for (int i = 1; i < args->argc; i++)
        free(args->argv[i]);
    args->argc = 0;
}

/* ---- invariants ----------------------------------------------------------------------------- */

static void fuzz_check_reason(const reason why)
{
    CHECK(memchr(why, '\0', sizeof(reason)) != NULL, "reason not terminated");
    CHECK(why[0] != '\0', "a failure without a reason");
}

#define ALL_KINDS ((unsigned)KIND_ANY)
#define ALL_FAMILIES ((unsigned)(FAMILY_INET | FAMILY_INET6))
#define ALL_OPTIONS ((1u << OPTION_COUNT) - 1u)

static bool is_zero(const void *bytes, size_t size)
{
    for (size_t i = 0; i < size; i++)
        if (((const unsigned char *)bytes)[i] != 0)
            return false;
    return true;
}

/* A family and the bytes it uses; an inet address leaves the last 12 bytes zero. */
static bool fuzz_address_is_valid(const struct address *address)
{
    if (address->family == FAMILY_INET)
        return is_zero(address->bytes + 4, 12);
    return address->family == FAMILY_INET6;
}

/* As parse_device() promises: 1 to IFNAMSIZ-1 of [A-Za-z0-9._:-], terminated. */
static bool device_is_valid(const char device[IFNAMSIZ])
{
    size_t length = strnlen(device, IFNAMSIZ);
    if (length == 0 || length >= IFNAMSIZ)
        return false;
    for (size_t i = 0; i < length; i++)
        if (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:",
                   device[i]) == NULL)
            return false;
    return true;
}

/* What a parsed socket request must be, for every kind. */
static void fuzz_check_socket(const struct socket_request *socket)
{
    unsigned kind = socket->kind;
    CHECK(kind != 0 && (kind & (kind - 1)) == 0 && (kind & ~ALL_KINDS) == 0, "kind 0x%x", kind);
    unsigned family = socket->address.family;
    CHECK(family == 0 || family == FAMILY_INET || family == FAMILY_INET6, "family %u", family);
    if (socket->has_address)
        CHECK(fuzz_address_is_valid(&socket->address), "address of family %u", family);
    else
        CHECK(is_zero(socket->address.bytes, sizeof socket->address.bytes),
              "address bytes without an address");
    /* tcp and udp: family, address and port; raw: family and protocol; packet: no family. */
    if (kind & KIND_INET)
        CHECK(socket->has_address && family != 0, "tcp or udp without an address");
    if (kind & (KIND_RAW | KIND_DEVICE))
        CHECK(!socket->has_address || !is_v4_mapped(&socket->address),
              "an IPv4-mapped address for kind 0x%x", kind);
    if (kind == KIND_RAW)
        CHECK(family != 0 && socket->proto >= 1 && socket->proto <= 255, "raw: family %u proto %u",
              family, (unsigned)socket->proto);
    else
        CHECK(socket->proto == 0 && !socket->hdrincl, "raw keys for kind 0x%x", kind);
    if (kind == KIND_PACKET)
        CHECK(family == 0 && !socket->has_address && socket->ethertype <= 0xffff,
              "packet: family %u ethertype 0x%x", family, (unsigned)socket->ethertype);
    else
        CHECK(socket->ethertype == 0 && socket->filter_length == 0 && !socket->cooked &&
              !socket->promisc, "packet keys for kind 0x%x", kind);
    CHECK(socket->filter_length <= MAX_FILTER, "%u filter instructions", socket->filter_length);
    CHECK(is_zero(socket->filter + socket->filter_length,
                  sizeof socket->filter[0] * (MAX_FILTER - socket->filter_length)),
          "filter instructions past its length");
    CHECK(socket->port <= 65535 && ((kind & KIND_INET) || socket->port == 0), "port %u",
          (unsigned)socket->port);
    CHECK(socket->backlog <= 65535 && (kind == KIND_TCP || socket->backlog == DEFAULT_BACKLOG),
          "backlog %u for kind 0x%x", (unsigned)socket->backlog, kind);
    CHECK((kind & KIND_DEVICE) || (!socket->up && !socket->pi), "up or pi for kind 0x%x", kind);
    CHECK(socket->prefixlen <= (family == FAMILY_INET ? 32u : 128u), "prefixlen %u for family %u",
          (unsigned)socket->prefixlen, family);
    CHECK(!socket->hdrincl || family == FAMILY_INET, "hdrincl on family %u", family);
    CHECK(!socket->promisc || (socket->options & OPTION(OPT_DEVICE)), "promisc without a device");

    unsigned asked = socket->options;
    CHECK((asked & ~ALL_OPTIONS) == 0, "options 0x%x", asked);
    for (unsigned i = 0; i < OPTION_COUNT; i++) {
        bool on = (asked & OPTION(i)) != 0;
        if (on)
            CHECK(options[i].kinds & kind, "option %s for kind 0x%x", options[i].name, kind);
        /* A value is set only with its option (parse_spec zeroes the request first). */
        CHECK(on || socket->values[i] == 0, "a value for %s without the option", options[i].name);
        if (options[i].value == VALUE_FLAG)
            CHECK(socket->values[i] == (on ? 1u : 0u), "flag %s = %u", options[i].name,
                  (unsigned)socket->values[i]);
        if (options[i].value == VALUE_NUMBER)
            CHECK(socket->values[i] <= options[i].max, "%s = %u", options[i].name,
                  (unsigned)socket->values[i]);
    }
    CHECK(!(asked & OPTION(OPT_V6ONLY)) || family == FAMILY_INET6, "v6only on family %u", family);
    if (asked & OPTION(OPT_DEVICE))
        CHECK(device_is_valid(socket->device), "device '%.*s'", IFNAMSIZ, socket->device);
    else
        CHECK(is_zero(socket->device, IFNAMSIZ), "a device without the option");
}

static void check_ranges(const struct range *ranges, unsigned count, uint32_t max,
                         const char *what)
{
    CHECK(count <= MAX_VALUES, "%u %s values", count, what);
    for (unsigned i = 0; i < count; i++)
        CHECK(ranges[i].low <= ranges[i].high && ranges[i].high <= max, "%s range %u-%u", what,
              (unsigned)ranges[i].low, (unsigned)ranges[i].high);
}

/* The bits of ADDRESS after BITS are zero. */
static bool host_bits_zero(const struct address *address, unsigned bits)
{
    for (unsigned bit = bits; bit < 128; bit++)
        if ((address->bytes[bit / 8] >> (7 - bit % 8)) & 1u)
            return false;
    return true;
}

static void fuzz_check_rule(const struct rule *rule)
{
    CHECK(rule->n_users <= MAX_VALUES && rule->n_groups <= MAX_VALUES &&
          rule->n_addresses <= MAX_VALUES && rule->n_devices <= MAX_VALUES,
          "value counts %u %u %u %u", rule->n_users, rule->n_groups, rule->n_addresses,
          rule->n_devices);
    CHECK((rule->kinds & ~ALL_KINDS) == 0, "kinds 0x%x", rule->kinds);
    CHECK((rule->families & ~ALL_FAMILIES) == 0, "families 0x%x", rule->families);
    CHECK((rule->options & ~ALL_OPTIONS) == 0, "options 0x%x", rule->options);
    CHECK(rule->has_options == (rule->options != 0), "has_options %d with options 0x%x",
          rule->has_options, rule->options);
    /* What check_rule() refuses: an allow for tun or tap without its interfaces' names, and a
       bound on an option the allow rule does not grant. */
    CHECK(!rule->allow || !(rule->kinds & KIND_DEVICE) || rule->n_devices > 0,
          "an allow rule for tun or tap without device=");
    for (unsigned i = 0; i < rule->n_users; i++)
        CHECK(rule->users[i] != UINT32_MAX, "user -1 (no one's uid)");
    for (unsigned i = 0; i < rule->n_groups; i++)
        CHECK(rule->groups[i] != UINT32_MAX, "group -1 (no one's gid)");
    check_ranges(rule->ports, rule->n_ports, 65535, "port");
    check_ranges(rule->protos, rule->n_protos, 255, "proto");
    check_ranges(rule->ethertypes, rule->n_ethertypes, 0xffff, "ethertype");
    for (unsigned i = 0; i < OPTION_COUNT; i++) {
        CHECK(rule->n_bounds[i] == 0 || options[i].bounded, "a bound on %s", options[i].name);
        CHECK(rule->n_bounds[i] == 0 || !rule->allow || (rule->options & OPTION(i)),
              "an allow rule bounds %s without granting it", options[i].name);
        check_ranges(rule->bounds[i], rule->n_bounds[i], options[i].max, options[i].name);
    }
    for (unsigned i = 0; i < rule->n_addresses; i++) {
        const struct prefix *prefix = &rule->addresses[i];
        CHECK(fuzz_address_is_valid(&prefix->address), "prefix family %u", prefix->address.family);
        CHECK(prefix->bits <= (prefix->address.family == FAMILY_INET ? 32u : 128u),
              "prefix of %u bits", prefix->bits);
        CHECK(host_bits_zero(&prefix->address, prefix->bits), "a prefix with host bits");
        CHECK(!is_v4_mapped(&prefix->address) || prefix->bits < 96,
              "an IPv4-mapped prefix of %u bits kept as IPv6", prefix->bits);
    }
    for (unsigned i = 0; i < rule->n_devices; i++)
        CHECK(device_is_valid(rule->devices[i]), "device '%.*s'", IFNAMSIZ, rule->devices[i]);
}

/* LINES: the number of lines of the text, so that every rule's line is within it. */
static void fuzz_check_policy(const struct policy *policy, unsigned lines)
{
    CHECK(policy->count <= MAX_RULES, "%u rules", policy->count);
    unsigned previous = 0;
    for (unsigned i = 0; i < policy->count; i++) {
        const struct rule *rule = &policy->rules[i];
        CHECK(rule->line > previous && rule->line <= lines, "rule %u on line %u after %u of %u",
              i, rule->line, previous, lines);
        previous = rule->line;
        fuzz_check_rule(rule);
    }
}

static unsigned fuzz_count_lines(const uint8_t *data, size_t size)
{
    unsigned lines = 0;
    size_t start = 0;
    while (start < size) {            /* as parse_policy counts: a final '\n' ends the last line */
        const uint8_t *end = memchr(data + start, '\n', size - start);
        lines++;
        start = end != NULL ? (size_t)(end - data) + 1 : size;
    }
    return lines;
}

/* ---- an independent reference of the matching (docs/policy.md), bit by bit ------------------ */

static unsigned bit_of(const struct address *address, unsigned bit)
{
    return (address->bytes[bit / 8] >> (7 - bit % 8)) & 1u;
}

/* The reference's view of a socket: the networks it accepts, worked out from its fields. */
struct reference_view {
    unsigned family;
    bool addressed;
    struct address first;             /* the network's address, host bits cleared */
    unsigned bits;
};

static unsigned reference_views(const struct socket_request *socket, struct reference_view out[2])
{
    memset(out, 0, 2 * sizeof out[0]);
    out[0].family = socket->address.family;
    bool inet = (socket->kind & KIND_INET) != 0;
    if (!socket->has_address && !inet && socket->kind != KIND_RAW)
        return 1;
    out[0].addressed = true;
    out[0].first = socket->address;
    unsigned width = socket->address.family == FAMILY_INET ? 32 : 128;
    if (socket->kind & KIND_DEVICE) {
        out[0].bits = socket->prefixlen;
        for (unsigned bit = socket->prefixlen; bit < width; bit++)
            out[0].first.bytes[bit / 8] &= (unsigned char)~(1u << (7 - bit % 8));
        return 1;
    }
    bool mapped = inet && socket->address.family == FAMILY_INET6;
    for (unsigned i = 0; mapped && i < 12; i++)
        mapped = socket->address.bytes[i] == (i < 10 ? 0 : 0xff);
    if (mapped) {
        memset(&out[0].first, 0, sizeof out[0].first);
        out[0].first.family = out[0].family = FAMILY_INET;
        memcpy(out[0].first.bytes, socket->address.bytes + 12, 4);
        width = 32;
    }
    bool any = true;
    for (unsigned i = 0; i < 16; i++)
        any = any && out[0].first.bytes[i] == 0;
    out[0].bits = any ? 0 : width;
    bool v6only = (socket->options & OPTION(OPT_V6ONLY)) && socket->values[OPT_V6ONLY] != 0;
    if (any && inet && out[0].family == FAMILY_INET6 && !v6only) {
        out[1].family = out[1].first.family = FAMILY_INET;
        out[1].addressed = true;
        return 2;
    }
    return 1;
}

/* Contained: the prefix's bits all agree. Overlapping: the shorter one's bits all agree. */
static bool reference_prefix_relation(const struct prefix *prefix, const struct reference_view *v,
                                      bool contain)
{
    if (!v->addressed || prefix->address.family != v->family)
        return false;
    if (contain && prefix->bits > v->bits)
        return false;
    unsigned bits = prefix->bits < v->bits ? prefix->bits : v->bits;
    for (unsigned bit = 0; bit < bits; bit++)
        if (bit_of(&prefix->address, bit) != bit_of(&v->first, bit))
            return false;
    return true;
}

/* No ranges: any value. Ranges: the socket has such a value (WITH) and it is in one of them. */
static bool reference_in_ranges(uint32_t value, bool with, const struct range *ranges,
                                unsigned count)
{
    bool any = count == 0;
    for (unsigned i = 0; i < count; i++)
        any |= with && ranges[i].low <= value && value <= ranges[i].high;
    return any;
}

static bool fuzz_reference_rule_matches(const struct rule *rule, const struct caller *caller,
                                        const struct socket_request *socket,
                                        const struct reference_view *view)
{
    /* A rule without kind= is about tcp and udp only: raw, packet, tun and tap must be named. */
    unsigned kinds = rule->kinds != 0 ? rule->kinds : (unsigned)(KIND_TCP | KIND_UDP);
    if ((kinds & socket->kind) == 0)
        return false;
    if (rule->families != 0 && (rule->families & view->family) == 0)
        return false;
    bool any = rule->n_users == 0;
    for (unsigned i = 0; i < rule->n_users; i++)
        any |= rule->users[i] == caller->uid;
    if (!any)
        return false;
    /* Groups unknown (sudo): a deny naming groups matches; an allow sees the primary group. */
    any = rule->n_groups == 0 || (!rule->allow && !caller->groups_known);
    for (unsigned i = 0; i < rule->n_groups; i++) {
        any |= rule->groups[i] == caller->gid;
        for (int g = 0; caller->groups_known && g < caller->n_groups; g++)
            any |= rule->groups[i] == caller->groups[g];
    }
    if (!any)
        return false;
    if (!reference_in_ranges(socket->port, socket->kind == KIND_TCP || socket->kind == KIND_UDP,
                             rule->ports, rule->n_ports) ||
        !reference_in_ranges(socket->proto, socket->kind == KIND_RAW, rule->protos,
                             rule->n_protos) ||
        !reference_in_ranges(socket->ethertype, socket->kind == KIND_PACKET, rule->ethertypes,
                             rule->n_ethertypes))
        return false;
    any = rule->n_addresses == 0;
    for (unsigned i = 0; i < rule->n_addresses; i++)
        any |= reference_prefix_relation(&rule->addresses[i], view, rule->allow);
    if (!any)
        return false;
    any = rule->n_devices == 0;
    for (unsigned i = 0; i < rule->n_devices; i++)
        any |= (socket->options & OPTION(OPT_DEVICE)) != 0 &&
               strncmp(socket->device, rule->devices[i], IFNAMSIZ) == 0;
    if (!any)
        return false;
    for (unsigned i = 0; i < OPTION_COUNT; i++) {
        if (rule->n_bounds[i] == 0)
            continue;
        bool asked = (socket->options & OPTION(i)) != 0;
        if (asked ? !reference_in_ranges(socket->values[i], true, rule->bounds[i],
                                         rule->n_bounds[i])
                  : !rule->allow)
            return false;
    }
    /* An allow rule grants what its options= names, or, without options=, v6only, reuseport and
     * freebind; a deny rule with options= matches a socket that asks for any of them. A packet
     * socket's interface and a tun or tap's name are what is asked for, not an option. */
    unsigned asked = socket->options;
    if (socket->kind & (KIND_PACKET | KIND_TUN | KIND_TAP))
        asked &= ~OPTION(OPT_DEVICE);
    unsigned granted = rule->has_options ? rule->options
                                         : OPTION(OPT_V6ONLY) | OPTION(OPT_REUSEPORT) |
                                               OPTION(OPT_FREEBIND);
    if (rule->allow)
        return (asked | granted) == granted;
    return !rule->has_options || (asked & rule->options) != 0;
}

/* The reference's decision: each view by its first matching rule; every view must be allowed. */
static struct decision fuzz_reference_decision(const struct policy *policy,
                                               const struct caller *caller,
                                               const struct socket_request *socket)
{
    struct reference_view views[2];
    unsigned count = reference_views(socket, views);
    struct decision result = {false, NULL};
    for (unsigned v = 0; v < count; v++) {
        const struct rule *found = NULL;
        for (unsigned i = 0; i < policy->count && found == NULL; i++)
            if (fuzz_reference_rule_matches(&policy->rules[i], caller, socket, &views[v]))
                found = &policy->rules[i];
        if (found == NULL || !found->allow)
            return (struct decision){false, found};
        if (v == 0)
            result = (struct decision){true, found};
    }
    return result;
}

/* policy_decision() and rule_matches() must agree with the reference. */
static void fuzz_check_decision(const struct policy *policy, const struct caller *caller,
                                const struct socket_request *socket)
{
    struct decision decided = policy_decision(policy, caller, socket);
    struct decision expected = fuzz_reference_decision(policy, caller, socket);
    CHECK(decided.allowed == expected.allowed && decided.rule == expected.rule,
          "policy_decision %s by rule %ld, the reference %s by rule %ld "
          "(uid %u, kind 0x%x, family %u, port %u)", decided.allowed ? "allows" : "denies",
          decided.rule != NULL ? (long)(decided.rule - policy->rules) : -1L,
          expected.allowed ? "allows" : "denies",
          expected.rule != NULL ? (long)(expected.rule - policy->rules) : -1L,
          (unsigned)caller->uid, socket->kind, socket->address.family, (unsigned)socket->port);
    struct view views[MAX_VIEWS];
    struct reference_view references[2];
    unsigned count = socket_views(socket, views);
    CHECK(count == reference_views(socket, references), "socket_views: %u networks", count);
    for (unsigned v = 0; v < count; v++) {
        CHECK(views[v].family == references[v].family &&
              views[v].addressed == references[v].addressed &&
              (!views[v].addressed || (views[v].network.bits == references[v].bits &&
                                       memcmp(views[v].network.address.bytes,
                                              references[v].first.bytes, 16) == 0)),
              "socket_views: network %u differs from the reference", v);
        for (unsigned i = 0; i < policy->count; i++)
            CHECK(rule_matches(&policy->rules[i], caller, socket, &views[v]) ==
                  fuzz_reference_rule_matches(&policy->rules[i], caller, socket, &references[v]),
                  "rule_matches disagrees with the reference on rule %u (line %u), network %u",
                  i, policy->rules[i].line, v);
    }
}

/* ---- fixed callers, sockets and policy ------------------------------------------------------ */

static struct caller fixed_callers[6];

static void fuzz_make_callers(void)
{
    struct caller *c = fixed_callers;
    memset(fixed_callers, 0, sizeof fixed_callers);
    for (size_t i = 0; i < COUNT(fixed_callers); i++)
        c[i].groups_known = true;
    c[0].uid = 1000; c[0].gid = 1000;
    c[1].uid = 33; c[1].gid = 33; c[1].n_groups = 1; c[1].groups[0] = 33;
    c[2].uid = 65534; c[2].gid = 65534; c[2].n_groups = 2; c[2].groups[0] = 100;
    c[2].groups[1] = 4294967294u;
    c[3].uid = 4294967294u; c[3].gid = 0; c[3].n_groups = MAX_GROUPS;
    for (int g = 0; g < MAX_GROUPS; g++)
        c[3].groups[g] = (gid_t)(g * 7);
    c[4].uid = 0; c[4].gid = 0;       /* the helper refuses root before, but matching must hold */
    c[5].uid = 1000; c[5].gid = 100; c[5].groups_known = false;   /* under sudo */
}

static const char *const fixed_specs[] = {
    "kind=tcp,family=inet,addr=0.0.0.0,port=80",
    "kind=tcp,family=inet,addr=127.0.0.1,port=443,backlog=5",
    "kind=udp,family=inet,addr=10.1.2.3,port=53",
    "kind=tcp,family=inet,addr=255.255.255.255,port=0",
    "kind=tcp,family=inet,addr=192.168.1.77,port=8080",
    "kind=udp,family=inet,addr=0.0.0.0,port=1023",
    "kind=tcp,family=inet6,addr=::,port=80,v6only=1",
    "kind=tcp,family=inet6,addr=::,port=80",
    "kind=udp,family=inet6,addr=::,port=53,v6only=0",
    "kind=tcp,family=inet6,addr=::1,port=1,backlog=65535",
    "kind=udp,family=inet6,addr=fe80::1,port=65535,v6only=0",
    "kind=tcp,family=inet6,addr=2001:db8::ff,port=8000",
    "kind=udp,family=inet6,addr=::ffff:127.0.0.1,port=123",
    "kind=tcp,family=inet6,addr=::ffff:0.0.0.0,port=80",
    "kind=tcp,family=inet6,addr=ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,port=65535",
    "kind=tcp,family=inet6,addr=::,port=80,v6only=1,reuseport=1",
    "kind=udp,family=inet,addr=0.0.0.0,port=67,device=eth0,freebind=1",
    "kind=tcp,family=inet,addr=10.0.0.1,port=443,mark=7,priority=6,rcvbuf=65536,sndbuf=65536",
    "kind=tcp,family=inet,addr=10.0.0.1,port=443,mark=70",
    "kind=tcp,family=inet,addr=192.168.1.77,port=80,transparent=1,device=lo",
    "kind=raw,family=inet,proto=1",
    "kind=raw,family=inet,proto=17,addr=10.1.2.3,hdrincl=1",
    "kind=raw,family=inet6,proto=58,addr=fe80::1,device=eth0",
    "kind=packet,ethertype=0x806",
    ("kind=packet,ethertype=0x800,device=eth0,promisc=1,cooked=1,"
     "filter=0028000000000000001500010000080600060000000000000006000000040000"),
    "kind=tun,device=tun7,family=inet,addr=10.9.0.1,prefixlen=24,up=1",
    "kind=tun,device=tun7,family=inet,addr=10.9.0.1,prefixlen=5",
    "kind=tap",
    "kind=tap,device=tap0,family=inet6,addr=fd00::1,pi=1",
    "kind=tap,device=tap0,family=inet6,addr=fd00::1,prefixlen=0",
};
static struct socket_request fixed_sockets[COUNT(fixed_specs)];

static void fuzz_make_sockets(void)
{
    for (size_t i = 0; i < COUNT(fixed_specs); i++) {
        reason why;
        CHECK(parse_spec(fixed_specs[i], &fixed_sockets[i], why), "fixed spec %s: %s",
              fixed_specs[i], why);
        fuzz_check_socket(&fixed_sockets[i]);
    }
}

/* Every key, every kind, both families, prefixes and ranges, so that matching covers it all. */
static const char fixed_policy_text[] =
    "# a fixed policy for the fuzzers\n"
    "deny user=4294967294 port=0-1023\n"
    "allow group=33 kind=tcp port=80,443 addr=0.0.0.0/0,::/0\n"
    "deny kind=tcp port=1-79\n"
    "allow user=1000,1001 kind=udp family=inet addr=10.0.0.0/8,192.168.0.0/16 port=53,67-68\n"
    "allow user=65534 family=inet6 addr=fe80::/10,2001:db8::/33,::1 port=1-65535\n"
    "deny addr=127.0.0.1/31,::ffff:0:0/96\n"
    "deny group=4000 port=123\n"
    "allow group=100 addr=192.168.1.76/31,192.168.1.0/25,10.1.2.3/32 kind=tcp,udp\n"
    "deny family=inet6 addr=ff00::/8,2001:db8::80/121,::/1\n"
    "\tallow kind=udp,tcp family=inet,inet6 port=1024-65535\r\n"
    "allow port=8000-8080 addr=8000::/1,0.0.0.0/1 # a comment\n"
    "deny options=transparent mark=1-9\n"
    "allow device=eth0,lo,br-0.1 kind=udp options=device,freebind,v6only\n"
    "allow user=1000 options=rcvbuf,sndbuf,priority,reuseport,mark mark=0-10 priority=0-6\n"
    "allow kind=raw proto=1,58,17-17 family=inet,inet6 options=device device=eth0\n"
    "deny kind=packet ethertype=0x800-0x86dd options=mark\n"
    "allow kind=packet ethertype=0x806,0x800-0x800 device=eth0\n"
    "allow kind=tun,tap device=tun7,tap0 addr=10.9.0.0/16,fd00::/8\n"
    "allow kind=tap user=1000 device=tap1\n"
    "deny kind=raw,packet,tun,tap\n"
    "allow\n";
static struct policy fixed_policy;

static void fuzz_make_policy(void)
{
    reason why;
    CHECK(parse_policy(fixed_policy_text, strlen(fixed_policy_text), &fixed_policy, why),
          "the fixed policy: %s", why);
    CHECK(fixed_policy.count == 21, "the fixed policy has %u rules", fixed_policy.count);
    fuzz_check_policy(&fixed_policy, fuzz_count_lines((const uint8_t *)fixed_policy_text,
                                                      strlen(fixed_policy_text)));
}

/* ---- known answers: policy text and request text in, decision out --------------------------- */

/* The decision of POLICY_TEXT for the spec SPEC and CALLER: 'a'llow:LINE, 'd'eny:LINE, 'e'rror. */
static void known_answer(const char *policy_text, const char *spec, const struct caller *caller,
                         char expected, unsigned line)
{
    static struct policy policy;
    struct socket_request socket;
    reason why;
    CHECK(parse_spec(spec, &socket, why), "known answer: spec %s: %s", spec, why);
    bool parsed = parse_policy(policy_text, strlen(policy_text), &policy, why);
    if (expected == 'e') {
        CHECK(!parsed, "known answer: the policy %s parses", policy_text);
        return;
    }
    CHECK(parsed, "known answer: the policy %s: %s", policy_text, why);
    struct decision decision = policy_decision(&policy, caller, &socket);
    unsigned got = decision.rule != NULL ? decision.rule->line : 0;
    CHECK(decision.allowed == (expected == 'a') && got == line,
          "known answer: %s for %s is %s:%u, not %c:%u", policy_text, spec,
          decision.allowed ? "allow" : "deny", got, expected, line);
}

#define TCP4(addr, port) "kind=tcp,family=inet,addr=" addr ",port=" port
#define TCP6(addr, port) "kind=tcp,family=inet6,addr=" addr ",port=" port

static void fuzz_known_answers(void)
{
    const struct caller *user = &fixed_callers[0], *nobody = &fixed_callers[2];
    const struct caller *sudo = &fixed_callers[5];
    /* Prefixes are networks, not hosts. */
    known_answer("deny addr=10.0.0.0/8\nallow\n", TCP4("10.1.2.3", "80"), user, 'd', 1);
    known_answer("deny addr=10.0.0.0/8\nallow\n", TCP4("11.0.0.1", "80"), user, 'a', 2);
    known_answer("deny addr=10.0.0.0/8\nallow\n", TCP4("9.255.255.255", "80"), user, 'a', 2);
    known_answer("allow addr=192.168.0.0/16\n", TCP4("192.168.255.1", "80"), user, 'a', 1);
    known_answer("allow addr=192.168.0.0/16\n", TCP4("192.169.0.1", "80"), user, 'd', 0);
    known_answer("allow addr=fd00::/8\n", TCP6("fdff::1", "80"), user, 'a', 1);
    known_answer("allow addr=fd00::/8\n", TCP6("fe00::1", "80"), user, 'd', 0);
    known_answer("deny addr=2001:db8::/32\nallow\n", TCP6("2001:db8:ffff::1", "80"), user, 'd', 1);
    known_answer("allow addr=10.9.8.7/8\n", TCP4("10.0.0.1", "80"), user, 'a', 1);
    known_answer("allow addr=10.9.8.7/8\n", TCP4("11.0.0.1", "80"), user, 'd', 0);
    known_answer("allow addr=10.0.0.0/33\n", TCP4("10.0.0.1", "80"), user, 'e', 0);
    /* A wildcard accepts every address: a deny of one of them denies it; an allow must cover it. */
    known_answer("deny addr=127.0.0.1 port=300\nallow\n", TCP4("0.0.0.0", "300"), user, 'd', 1);
    known_answer("allow addr=127.0.0.0/8\n", TCP4("0.0.0.0", "80"), user, 'd', 0);
    known_answer("allow addr=0.0.0.0/0\n", TCP4("0.0.0.0", "80"), user, 'a', 1);
    /* IPv4-mapped is IPv4; "::" without v6only is both families. */
    known_answer("deny addr=127.0.0.1 port=300\nallow\n", TCP6("::ffff:127.0.0.1", "300"), user,
                 'd', 1);
    known_answer("deny family=inet\nallow\n", TCP6("::", "80"), user, 'd', 1);
    known_answer("deny family=inet\nallow\n", TCP6("::", "80") ",v6only=1", user, 'a', 2);
    known_answer("deny addr=0.0.0.0\nallow\n", TCP6("::", "80"), user, 'd', 1);
    known_answer("allow family=inet6\n", TCP6("::", "80"), user, 'd', 0);
    known_answer("allow family=inet6\n", TCP6("::ffff:10.0.0.1", "80"), user, 'd', 0);
    known_answer("allow family=inet6\n", TCP6("::1", "80"), user, 'a', 1);
    known_answer("allow family=inet6\nallow family=inet\n", TCP6("::", "80"), user, 'a', 1);
    known_answer("deny addr=::ffff:127.0.0.1\nallow\n", TCP4("127.0.0.1", "80"), user, 'd', 1);
    /* A tun or tap's whole network must lie inside the grant. */
    known_answer("allow kind=tun device=t0 addr=10.213.0.0/24\n",
                 "kind=tun,device=t0,family=inet,addr=10.213.0.1,prefixlen=5", user, 'd', 0);
    known_answer("allow kind=tun device=t0 addr=10.213.0.0/24\n",
                 "kind=tun,device=t0,family=inet,addr=10.213.0.1,prefixlen=24", user, 'a', 1);
    known_answer("allow kind=tun device=t0 addr=10.213.0.0/24\n",
                 "kind=tun,device=t0,family=inet,addr=10.213.0.1,prefixlen=30", user, 'a', 1);
    known_answer("allow kind=tun device=t0 addr=fd77::/64\n",
                 "kind=tun,device=t0,family=inet6,addr=fd77::1,prefixlen=0", user, 'd', 0);
    known_answer("allow kind=tun addr=10.213.0.0/24\n", "kind=tun,device=t0", user, 'e', 0);
    known_answer("allow kind=tun device=t0\n", "kind=tun", user, 'd', 0);
    /* Under sudo the groups are unknown: a deny naming a group stops the caller. */
    known_answer("deny group=4000\nallow\n", TCP4("127.0.0.1", "80"), sudo, 'd', 1);
    known_answer("deny group=4000\nallow\n", TCP4("127.0.0.1", "80"), user, 'a', 2);
    known_answer("allow group=100\n", TCP4("127.0.0.1", "80"), sudo, 'a', 1);
    known_answer("allow group=100\n", TCP4("127.0.0.1", "80"), nobody, 'a', 1);
    /* Option values: bounded by an allow, matched by a deny. */
    known_answer("allow options=mark mark=1-10\n", TCP4("127.0.0.1", "80") ",mark=5", user, 'a', 1);
    known_answer("allow options=mark mark=1-10\n", TCP4("127.0.0.1", "80") ",mark=11", user, 'd', 0);
    known_answer("allow mark=1-10\n", TCP4("127.0.0.1", "80"), user, 'e', 0);
    known_answer("deny options=mark\nallow options=mark\n", TCP4("127.0.0.1", "80") ",mark=1",
                 user, 'd', 1);
    known_answer("deny priority=7-100\nallow options=priority\n",
                 TCP4("127.0.0.1", "80") ",priority=6", user, 'a', 2);
    /* Grants the kernel cannot keep are not in the grammar. */
    known_answer("allow kind=raw options=hdrincl\n", "kind=raw,family=inet,proto=1", user, 'e', 0);
    known_answer("allow kind=packet options=promisc\n", "kind=packet,ethertype=0x806", user, 'e',
                 0);
    known_answer("allow kind=raw proto=1\n", "kind=raw,family=inet,proto=1,hdrincl=1", user, 'a',
                 1);
    /* A half-written file is refused. */
    known_answer("allow", TCP4("127.0.0.1", "80"), user, 'e', 0);
}

static void fuzz_make_fixed(void)
{
    static bool made;
    if (made)
        return;
    made = true;
    fuzz_make_callers();
    fuzz_make_sockets();
    fuzz_make_policy();
    fuzz_known_answers();
}

/* ---- canonical text, for round trips -------------------------------------------------------- */

static const char *fuzz_kind_name(unsigned bit)
{
    for (size_t i = 0; i < COUNT(kinds); i++)
        if (kinds[i].bit == bit)
            return kinds[i].name;
    return "?";
}

static const char *fuzz_family_name(unsigned bit)
{
    return bit == FAMILY_INET ? "inet" : bit == FAMILY_INET6 ? "inet6" : "?";
}

static void fuzz_format_address(const struct address *address, char *out, size_t size)
{
    CHECK(inet_ntop(address->family == FAMILY_INET ? AF_INET : AF_INET6, address->bytes, out,
                    (socklen_t)size) != NULL, "inet_ntop failed");
}

/* Appends to OUT[*LENGTH]; returns false (and appends nothing) when it would not fit. */
static bool append(char *out, size_t size, size_t *length, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool append(char *out, size_t size, size_t *length, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out + *length, size - *length, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *length) {
        out[*length] = '\0';
        return false;
    }
    *length += (size_t)n;
    return true;
}

/* The spec that should parse back to SOCKET; false if it would not fit in SIZE. */
static bool fuzz_format_spec(const struct socket_request *socket, char *out, size_t size)
{
    unsigned kind = socket->kind;
    size_t length = 0;
    bool ok = append(out, size, &length, "kind=%s", fuzz_kind_name(kind));
    if (ok && socket->address.family != 0)
        ok = append(out, size, &length, ",family=%s", fuzz_family_name(socket->address.family));
    if (ok && socket->has_address) {
        char address[INET6_ADDRSTRLEN];
        fuzz_format_address(&socket->address, address, sizeof address);
        ok = append(out, size, &length, ",addr=%s", address);
        if (ok && (kind & KIND_DEVICE))
            ok = append(out, size, &length, ",prefixlen=%u", (unsigned)socket->prefixlen);
    }
    if (ok && (kind & KIND_INET))
        ok = append(out, size, &length, ",port=%u", (unsigned)socket->port);
    if (ok && kind == KIND_TCP)
        ok = append(out, size, &length, ",backlog=%u", (unsigned)socket->backlog);
    if (ok && kind == KIND_RAW)
        ok = append(out, size, &length, ",proto=%u", (unsigned)socket->proto);
    if (ok && kind == KIND_PACKET)
        ok = append(out, size, &length, ",ethertype=0x%x", (unsigned)socket->ethertype);
    for (unsigned i = 0; ok && i < socket->filter_length; i++) {
        const struct sock_filter *f = &socket->filter[i];
        ok = append(out, size, &length, "%s%04x%02x%02x%08x", i == 0 ? ",filter=" : "",
                    (unsigned)f->code, (unsigned)f->jt, (unsigned)f->jf, (unsigned)f->k);
    }
    const struct { bool on; const char *text; } flags[] = {
        {socket->cooked, ",cooked=1"}, {socket->promisc, ",promisc=1"},
        {socket->hdrincl, ",hdrincl=1"}, {socket->up, ",up=1"}, {socket->pi, ",pi=1"},
    };
    for (size_t i = 0; ok && i < COUNT(flags); i++)
        if (flags[i].on)
            ok = append(out, size, &length, "%s", flags[i].text);
    for (unsigned i = 0; ok && i < OPTION_COUNT; i++) {
        if (!(socket->options & OPTION(i)))
            continue;
        if (options[i].value == VALUE_NAME)
            ok = append(out, size, &length, ",%s=%.*s", options[i].name, IFNAMSIZ, socket->device);
        else
            ok = append(out, size, &length, ",%s=%u", options[i].name,
                        (unsigned)socket->values[i]);
    }
    return ok;
}

static bool fuzz_same_socket(const struct socket_request *a, const struct socket_request *b)
{
    return a->kind == b->kind && a->address.family == b->address.family &&
           memcmp(a->address.bytes, b->address.bytes, sizeof a->address.bytes) == 0 &&
           a->has_address == b->has_address && a->port == b->port && a->backlog == b->backlog &&
           a->proto == b->proto && a->ethertype == b->ethertype && a->prefixlen == b->prefixlen &&
           a->cooked == b->cooked && a->promisc == b->promisc && a->hdrincl == b->hdrincl &&
           a->up == b->up && a->pi == b->pi && a->filter_length == b->filter_length &&
           memcmp(a->filter, b->filter, sizeof a->filter[0] * a->filter_length) == 0 &&
           a->options == b->options && memcmp(a->values, b->values, sizeof a->values) == 0 &&
           strncmp(a->device, b->device, IFNAMSIZ) == 0;
}

static void fuzz_check_spec_round_trip(const struct socket_request *socket)
{
    static char text[MAX_SPEC_LEN + 1];
    static struct socket_request again;
    reason why;
    if (!fuzz_format_spec(socket, text, sizeof text))
        return;                       /* longer than a spec may be (e.g. backlog=128 added) */
    CHECK(parse_spec(text, &again, why), "the canonical spec '%s' does not parse: %s", text, why);
    CHECK(fuzz_same_socket(socket, &again), "the canonical spec '%s' parses to another socket",
          text);
}

/*
 * The grant filters of a parsed socket: within their room, ending in a return, every jump
 * landing inside the program, and the caller's own program (packet) kept at the end unchanged.
 */
static void fuzz_check_grant_filters(const struct socket_request *socket)
{
    struct sock_filter program[MAX_GRANT_FILTER];
    unsigned length = socket->kind == KIND_PACKET ? packet_grant_filter(socket, 7, program)
                    : socket->kind == KIND_RAW    ? raw_grant_filter(socket, program)
                                                  : 0;
    CHECK(length <= MAX_GRANT_FILTER, "a grant filter of %u instructions", length);
    if (length == 0) {
        CHECK(socket->kind != KIND_PACKET || (socket->ethertype == 3 && socket->filter_length == 0),
              "no grant filter for a packet socket of ethertype 0x%x",
              (unsigned)socket->ethertype);
        return;
    }
    bool callers = socket->kind == KIND_PACKET && socket->filter_length > 0;
    CHECK(callers || BPF_CLASS(program[length - 1].code) == BPF_RET,
          "the grant filter does not end in a return");
    unsigned own = length - (socket->kind == KIND_PACKET ? socket->filter_length : 0);
    for (unsigned i = 0; i < own; i++)   /* the caller's program is the kernel's to check */
        if (BPF_CLASS(program[i].code) == BPF_JMP)
            CHECK(i + 1u + program[i].jt < length && i + 1u + program[i].jf < length,
                  "a jump of the grant's checks leaves the program");
    if (socket->kind == KIND_PACKET && socket->filter_length > 0)
        CHECK(memcmp(program + length - socket->filter_length, socket->filter,
                     sizeof socket->filter[0] * socket->filter_length) == 0,
              "the caller's filter is not kept at the end");
}

/* Every harness starts the same way: the fixed policy and callers it compares against. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_make_fixed();
    return 0;
}

#endif /* PROCKET_FUZZ_COMMON_H */
