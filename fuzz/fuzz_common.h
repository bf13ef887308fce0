/*
 * Shared by the libFuzzer harnesses: the helper's pure parsers (included with PROCKET_FUZZ, which
 * leaves out everything privileged), an independent reference of the policy matching, invariant
 * checks, and a few fixed callers, requests and a fixed policy.
 *
 * Build (scripts/fuzz does this):
 *   clang -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -g -O1 -DPROCKET_FUZZ \
 *         -Wno-unused-function fuzz/fuzz_request.c -o fuzz_request
 * PROCKET_HELPER_SOURCE="path" includes another copy of the helper (scripts/fuzz --self-test
 * builds mutants that way).
 *
 * The invariants and the reference restate what the helper's header and docs/policy.md promise,
 * field by field: a change to struct socket_request, struct rule or the matching rules needs the
 * same change here (scripts/fuzz fails to build, or reports the disagreement, until it is made).
 */
#ifndef PROCKET_FUZZ_COMMON_H
#define PROCKET_FUZZ_COMMON_H

#ifndef PROCKET_FUZZ
#error "build the harnesses with -DPROCKET_FUZZ"
#endif

#ifdef PROCKET_HELPER_SOURCE
#include PROCKET_HELPER_SOURCE
#else
#include "../procket_twisted/helper/procket-helper.c"
#endif

#include <stddef.h>
#include <stdint.h>

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

static unsigned union_of(const struct name_bit *names, size_t n)
{
    unsigned all = 0;
    for (size_t i = 0; i < n; i++)
        all |= names[i].bit;
    return all;
}
#define ALL_KINDS union_of(kind_names, COUNT(kind_names))
#define ALL_FAMILIES union_of(family_names, COUNT(family_names))
#define ALL_OPTIONS union_of(option_names, COUNT(option_names))

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

static unsigned option_kinds_of(unsigned bit)
{
    for (size_t i = 0; i < COUNT(option_names); i++)
        if (option_names[i].bit == bit)
            return option_kinds[i];
    return 0;
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
    if (kind == KIND_RAW)
        CHECK(family != 0 && socket->proto >= 1 && socket->proto <= 255, "raw: family %u proto %u",
              family, (unsigned)socket->proto);
    else
        CHECK(socket->proto == 0, "proto %u for kind 0x%x", (unsigned)socket->proto, kind);
    if (kind == KIND_PACKET)
        CHECK(family == 0 && !socket->has_address && socket->ethertype <= 0xffff,
              "packet: family %u ethertype 0x%x", family, (unsigned)socket->ethertype);
    else
        CHECK(socket->ethertype == 0 && socket->filter_length == 0 && !socket->cooked,
              "packet keys for kind 0x%x", kind);
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

    unsigned options = socket->options;
    CHECK((options & ~ALL_OPTIONS) == 0, "options 0x%x", options);
    for (unsigned bit = 1; bit != 0 && bit <= options; bit <<= 1)
        if (options & bit)
            CHECK(option_kinds_of(bit) & kind, "option 0x%x for kind 0x%x", bit, kind);
    CHECK(!(options & OPTION_V6ONLY) || family == FAMILY_INET6, "v6only on family %u", family);
    CHECK(!(options & OPTION_HDRINCL) || family == FAMILY_INET, "hdrincl on family %u", family);
    CHECK(!(options & OPTION_PROMISC) || (options & OPTION_DEVICE), "promisc without a device");
    CHECK(socket->v6only <= 1, "v6only %u", (unsigned)socket->v6only);
    CHECK(socket->priority <= INT32_MAX, "priority %u", (unsigned)socket->priority);
    CHECK(socket->rcvbuf <= INT32_MAX / 2 && socket->sndbuf <= INT32_MAX / 2,
          "buffers %u %u", (unsigned)socket->rcvbuf, (unsigned)socket->sndbuf);
    /* A value is set only with its option (parse_spec zeroes the request first). */
    CHECK((options & OPTION_V6ONLY) || socket->v6only == 0, "v6only without the option");
    CHECK((options & OPTION_MARK) || socket->mark == 0, "mark without the option");
    CHECK((options & OPTION_PRIORITY) || socket->priority == 0, "priority without the option");
    CHECK((options & OPTION_RCVBUF) || socket->rcvbuf == 0, "rcvbuf without the option");
    CHECK((options & OPTION_SNDBUF) || socket->sndbuf == 0, "sndbuf without the option");
    if (options & OPTION_DEVICE)
        CHECK(device_is_valid(socket->device), "device '%.*s'", IFNAMSIZ, socket->device);
    else
        CHECK(is_zero(socket->device, IFNAMSIZ), "a device without the option");
}

static void check_ranges(const struct port_range *ranges, unsigned count, uint32_t max,
                         const char *what)
{
    CHECK(count <= MAX_VALUES, "%u %s values", count, what);
    for (unsigned i = 0; i < count; i++)
        CHECK(ranges[i].low <= ranges[i].high && ranges[i].high <= max, "%s range %u-%u", what,
              (unsigned)ranges[i].low, (unsigned)ranges[i].high);
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
    for (unsigned i = 0; i < rule->n_users; i++)
        CHECK(rule->users[i] != UINT32_MAX, "user -1 (no one's uid)");
    for (unsigned i = 0; i < rule->n_groups; i++)
        CHECK(rule->groups[i] != UINT32_MAX, "group -1 (no one's gid)");
    check_ranges(rule->ports, rule->n_ports, 65535, "port");
    check_ranges(rule->protos, rule->n_protos, 255, "proto");
    check_ranges(rule->ethertypes, rule->n_ethertypes, 0xffff, "ethertype");
    for (unsigned i = 0; i < rule->n_addresses; i++) {
        const struct prefix *prefix = &rule->addresses[i];
        CHECK(fuzz_address_is_valid(&prefix->address), "prefix family %u", prefix->address.family);
        CHECK(prefix->bits <= (prefix->address.family == FAMILY_INET ? 32u : 128u),
              "prefix of %u bits", prefix->bits);
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

/* ---- an independent reference of the matching (docs/policy.md), prefixes bit by bit --------- */

static bool fuzz_reference_in_prefix(const struct address *address, const struct prefix *prefix)
{
    if (address->family != prefix->address.family)
        return false;
    for (unsigned bit = 0; bit < prefix->bits; bit++) {
        unsigned byte = bit / 8, shift = 7 - bit % 8;
        if (((address->bytes[byte] >> shift) & 1u) != ((prefix->address.bytes[byte] >> shift) & 1u))
            return false;
    }
    return true;
}

/* No ranges: any value. Ranges: the socket has such a value (WITH) and it is in one of them. */
static bool reference_in_ranges(uint32_t value, bool with, const struct port_range *ranges,
                                unsigned count)
{
    bool any = count == 0;
    for (unsigned i = 0; i < count; i++)
        any |= with && ranges[i].low <= value && value <= ranges[i].high;
    return any;
}

static bool fuzz_reference_rule_matches(const struct rule *rule, const struct caller *caller,
                                        const struct socket_request *socket)
{
    /* A rule without kind= is about tcp and udp only: raw, packet, tun and tap must be named. */
    unsigned kinds = rule->kinds != 0 ? rule->kinds : (unsigned)(KIND_TCP | KIND_UDP);
    if ((kinds & socket->kind) == 0)
        return false;
    if (rule->families != 0 && (rule->families & socket->address.family) == 0)
        return false;
    bool any = rule->n_users == 0;
    for (unsigned i = 0; i < rule->n_users; i++)
        any |= rule->users[i] == caller->uid;
    if (!any)
        return false;
    any = rule->n_groups == 0;
    for (unsigned i = 0; i < rule->n_groups; i++) {
        any |= rule->groups[i] == caller->gid;
        for (int g = 0; g < caller->n_groups; g++)
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
    bool addressed = socket->has_address || socket->kind == KIND_TCP || socket->kind == KIND_UDP ||
                     socket->kind == KIND_RAW;
    any = rule->n_addresses == 0;
    for (unsigned i = 0; i < rule->n_addresses; i++)
        any |= addressed && fuzz_reference_in_prefix(&socket->address, &rule->addresses[i]);
    if (!any)
        return false;
    any = rule->n_devices == 0;
    for (unsigned i = 0; i < rule->n_devices; i++)
        any |= (socket->options & OPTION_DEVICE) != 0 &&
               strncmp(socket->device, rule->devices[i], IFNAMSIZ) == 0;
    if (!any)
        return false;
    /* An allow rule grants what its options= names, or, without options=, the options any
     * process may set itself; a deny rule with options= matches a socket that asks for any of
     * them. A packet socket's interface and a tun or tap's name are what is asked for (device=
     * decides them), not an option to grant. */
    unsigned options = socket->options;
    if (socket->kind & (KIND_PACKET | KIND_TUN | KIND_TAP))
        options &= ~(unsigned)OPTION_DEVICE;
    unsigned granted = rule->has_options ? rule->options : (unsigned)UNPRIVILEGED_OPTIONS;
    if (rule->allow)
        return (options | granted) == granted;
    return !rule->has_options || (options & rule->options) != 0;
}

/* policy_decision() must return the first rule that the reference says matches, or NULL. */
static void fuzz_check_decision(const struct policy *policy, const struct caller *caller,
                                const struct socket_request *socket)
{
    const struct rule *decided = policy_decision(policy, caller, socket);
    const struct rule *expected = NULL;
    for (unsigned i = 0; i < policy->count && expected == NULL; i++)
        if (fuzz_reference_rule_matches(&policy->rules[i], caller, socket))
            expected = &policy->rules[i];
    CHECK(decided == expected, "policy_decision chose rule %ld, the reference rule %ld "
          "(uid %u, kind 0x%x, family %u, port %u)",
          decided != NULL ? (long)(decided - policy->rules) : -1L,
          expected != NULL ? (long)(expected - policy->rules) : -1L, (unsigned)caller->uid,
          socket->kind, socket->address.family, (unsigned)socket->port);
    for (unsigned i = 0; i < policy->count; i++) {
        const struct rule *rule = &policy->rules[i];
        CHECK(rule_matches(rule, caller, socket) == fuzz_reference_rule_matches(rule, caller, socket),
              "rule_matches disagrees with the reference on rule %u (line %u)", i, rule->line);
        for (unsigned a = 0; a < rule->n_addresses; a++)
            CHECK(in_prefix(&socket->address, &rule->addresses[a]) ==
                  fuzz_reference_in_prefix(&socket->address, &rule->addresses[a]),
                  "in_prefix disagrees with the reference: rule %u prefix %u", i, a);
    }
}

/* ---- fixed callers, sockets and policy ------------------------------------------------------ */

static struct caller fixed_callers[5];

static void fuzz_make_callers(void)
{
    struct caller *c = fixed_callers;
    memset(fixed_callers, 0, sizeof fixed_callers);
    c[0].uid = 1000; c[0].gid = 1000;
    c[1].uid = 33; c[1].gid = 33; c[1].n_groups = 1; c[1].groups[0] = 33;
    c[2].uid = 65534; c[2].gid = 65534; c[2].n_groups = 2; c[2].groups[0] = 100;
    c[2].groups[1] = 4294967294u;
    c[3].uid = 4294967294u; c[3].gid = 0; c[3].n_groups = MAX_GROUPS;
    for (int g = 0; g < MAX_GROUPS; g++)
        c[3].groups[g] = (gid_t)(g * 7);
    c[4].uid = 0; c[4].gid = 0;       /* the helper refuses root before, but matching must hold */
}

static const char *const fixed_specs[] = {
    "kind=tcp,family=inet,addr=0.0.0.0,port=80",
    "kind=tcp,family=inet,addr=127.0.0.1,port=443,backlog=5",
    "kind=udp,family=inet,addr=10.1.2.3,port=53",
    "kind=tcp,family=inet,addr=255.255.255.255,port=0",
    "kind=tcp,family=inet,addr=192.168.1.77,port=8080",
    "kind=udp,family=inet,addr=0.0.0.0,port=1023",
    "kind=tcp,family=inet6,addr=::,port=80,v6only=1",
    "kind=tcp,family=inet6,addr=::1,port=1,backlog=65535",
    "kind=udp,family=inet6,addr=fe80::1,port=65535,v6only=0",
    "kind=tcp,family=inet6,addr=2001:db8::ff,port=8000",
    "kind=udp,family=inet6,addr=::ffff:127.0.0.1,port=123",
    "kind=tcp,family=inet6,addr=ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff,port=65535",
    "kind=tcp,family=inet6,addr=::,port=80,v6only=1,reuseport=1",
    "kind=udp,family=inet,addr=0.0.0.0,port=67,device=eth0,freebind=1",
    "kind=tcp,family=inet,addr=10.0.0.1,port=443,mark=7,priority=6,rcvbuf=65536,sndbuf=65536",
    "kind=tcp,family=inet,addr=192.168.1.77,port=80,transparent=1,device=lo",
    "kind=raw,family=inet,proto=1",
    "kind=raw,family=inet,proto=17,addr=10.1.2.3,hdrincl=1",
    "kind=raw,family=inet6,proto=58,addr=fe80::1,device=eth0",
    "kind=packet,ethertype=0x806",
    ("kind=packet,ethertype=0x800,device=eth0,promisc=1,cooked=1,"
     "filter=0028000000000000001500010000080600060000000000000006000000040000"),
    "kind=tun,device=tun7,family=inet,addr=10.9.0.1,prefixlen=24,up=1",
    "kind=tap",
    "kind=tap,device=tap0,family=inet6,addr=fd00::1,pi=1",
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
    "allow group=100 addr=192.168.1.76/31,192.168.1.0/25,10.1.2.3/32 kind=tcp,udp\n"
    "deny family=inet6 addr=ff00::/8,2001:db8::80/121,::/1\n"
    "\tallow kind=udp,tcp family=inet,inet6 port=1024-65535\r\n"
    "allow port=8000-8080 addr=8000::/1,0.0.0.0/1 # a comment\n"
    "deny options=transparent,mark\n"
    "allow device=eth0,lo,br-0.1 kind=udp options=device,freebind,v6only\n"
    "allow user=1000 options=rcvbuf,sndbuf,priority,reuseport\n"
    "allow kind=raw proto=1,58,17-17 family=inet,inet6 options=hdrincl,device device=eth0\n"
    "deny kind=packet ethertype=0x800-0x86dd options=promisc\n"
    "allow kind=packet ethertype=0x806,0x800-0x800 device=eth0\n"
    "allow kind=tun,tap device=tun7,tap0 addr=10.9.0.0/16,fd00::/8\n"
    "allow kind=tap user=1000\n"
    "deny kind=raw,packet,tun,tap\n"
    "allow\n";
static struct policy fixed_policy;

static void fuzz_make_policy(void)
{
    reason why;
    CHECK(parse_policy(fixed_policy_text, strlen(fixed_policy_text), &fixed_policy, why),
          "the fixed policy: %s", why);
    CHECK(fixed_policy.count == 20, "the fixed policy has %u rules", fixed_policy.count);
    fuzz_check_policy(&fixed_policy, fuzz_count_lines((const uint8_t *)fixed_policy_text,
                                                      strlen(fixed_policy_text)));
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
}

/* ---- canonical text, for round trips -------------------------------------------------------- */

static const char *fuzz_name_of(unsigned bit, const struct name_bit *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (names[i].bit == bit)
            return names[i].name;
    return "?";
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
    bool ok = append(out, size, &length, "kind=%s", fuzz_name_of(kind, kind_names,
                                                                 COUNT(kind_names)));
    if (ok && socket->address.family != 0)
        ok = append(out, size, &length, ",family=%s", fuzz_name_of(socket->address.family,
                                                                   family_names,
                                                                   COUNT(family_names)));
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
    if (ok && socket->cooked)
        ok = append(out, size, &length, ",cooked=1");
    if (ok && socket->up)
        ok = append(out, size, &length, ",up=1");
    if (ok && socket->pi)
        ok = append(out, size, &length, ",pi=1");
    for (size_t i = 0; ok && i < COUNT(option_names); i++) {
        unsigned bit = option_names[i].bit;
        if (!(socket->options & bit))
            continue;
        const char *name = option_names[i].name;
        switch (bit) {
        case OPTION_V6ONLY: ok = append(out, size, &length, ",%s=%u", name, (unsigned)socket->v6only); break;
        case OPTION_MARK: ok = append(out, size, &length, ",%s=%u", name, (unsigned)socket->mark); break;
        case OPTION_PRIORITY: ok = append(out, size, &length, ",%s=%u", name, (unsigned)socket->priority); break;
        case OPTION_RCVBUF: ok = append(out, size, &length, ",%s=%u", name, (unsigned)socket->rcvbuf); break;
        case OPTION_SNDBUF: ok = append(out, size, &length, ",%s=%u", name, (unsigned)socket->sndbuf); break;
        case OPTION_DEVICE: ok = append(out, size, &length, ",%s=%.*s", name, IFNAMSIZ, socket->device); break;
        default: ok = append(out, size, &length, ",%s=1", name); break;
        }
    }
    return ok;
}

static bool fuzz_same_socket(const struct socket_request *a, const struct socket_request *b)
{
    return a->kind == b->kind && a->address.family == b->address.family &&
           memcmp(a->address.bytes, b->address.bytes, sizeof a->address.bytes) == 0 &&
           a->has_address == b->has_address && a->port == b->port && a->backlog == b->backlog &&
           a->proto == b->proto && a->ethertype == b->ethertype && a->prefixlen == b->prefixlen &&
           a->cooked == b->cooked && a->up == b->up && a->pi == b->pi &&
           a->filter_length == b->filter_length &&
           memcmp(a->filter, b->filter, sizeof a->filter[0] * a->filter_length) == 0 &&
           a->options == b->options && a->v6only == b->v6only && a->mark == b->mark &&
           a->priority == b->priority && a->rcvbuf == b->rcvbuf && a->sndbuf == b->sndbuf &&
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
