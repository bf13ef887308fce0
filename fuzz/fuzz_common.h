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

/* Socket options (options= and device= in the policy): in the helper since its OPTION_* bits. */
#ifdef UNPRIVILEGED_OPTIONS
#define FUZZ_HAS_OPTIONS 1
#else
#define FUZZ_HAS_OPTIONS 0
#endif

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

static bool fuzz_address_is_valid(const struct address *address)
{
    if (address->family == FAMILY_INET) {
        for (size_t i = 4; i < sizeof address->bytes; i++)
            if (address->bytes[i] != 0)
                return false;
        return true;
    }
    return address->family == FAMILY_INET6;
}

#if FUZZ_HAS_OPTIONS
static unsigned all_options(void)
{
    unsigned all = 0;
    for (size_t i = 0; i < COUNT(option_names); i++)
        all |= option_names[i].bit;
    return all;
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
#endif

static void fuzz_check_socket(const struct socket_request *socket)
{
    CHECK(socket->kind == KIND_TCP || socket->kind == KIND_UDP, "kind %u", socket->kind);
    CHECK(fuzz_address_is_valid(&socket->address), "family %u", socket->address.family);
    CHECK(socket->port <= 65535, "port %u", (unsigned)socket->port);
    CHECK(socket->backlog <= 65535, "backlog %u", (unsigned)socket->backlog);
    CHECK(socket->kind == KIND_TCP || socket->backlog == DEFAULT_BACKLOG,
          "udp with backlog %u", (unsigned)socket->backlog);
#if FUZZ_HAS_OPTIONS
    unsigned options = socket->options;
    CHECK((options & ~all_options()) == 0, "options 0x%x", options);
    CHECK(socket->v6only <= 1, "v6only %u", (unsigned)socket->v6only);
    CHECK(!(options & OPTION_V6ONLY) || socket->address.family == FAMILY_INET6,
          "v6only on an inet socket");
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
        CHECK(socket->device[0] == '\0', "a device without the option");
#else
    CHECK(socket->v6only >= -1 && socket->v6only <= 1, "v6only %d", socket->v6only);
    CHECK(socket->v6only == -1 || socket->address.family == FAMILY_INET6,
          "v6only on an inet socket");
#endif
}

static void fuzz_check_rule(const struct rule *rule)
{
    CHECK(rule->n_users <= MAX_VALUES && rule->n_groups <= MAX_VALUES &&
          rule->n_ports <= MAX_VALUES && rule->n_addresses <= MAX_VALUES,
          "value counts %u %u %u %u", rule->n_users, rule->n_groups, rule->n_ports,
          rule->n_addresses);
    CHECK((rule->kinds & ~(unsigned)(KIND_TCP | KIND_UDP)) == 0, "kinds 0x%x", rule->kinds);
    CHECK((rule->families & ~(unsigned)(FAMILY_INET | FAMILY_INET6)) == 0, "families 0x%x",
          rule->families);
    for (unsigned i = 0; i < rule->n_users; i++)
        CHECK(rule->users[i] != UINT32_MAX, "user -1 (no one's uid)");
    for (unsigned i = 0; i < rule->n_groups; i++)
        CHECK(rule->groups[i] != UINT32_MAX, "group -1 (no one's gid)");
    for (unsigned i = 0; i < rule->n_ports; i++)
        CHECK(rule->ports[i].low <= rule->ports[i].high && rule->ports[i].high <= 65535,
              "port range %u-%u", (unsigned)rule->ports[i].low, (unsigned)rule->ports[i].high);
    for (unsigned i = 0; i < rule->n_addresses; i++) {
        const struct prefix *prefix = &rule->addresses[i];
        CHECK(fuzz_address_is_valid(&prefix->address), "prefix family %u", prefix->address.family);
        CHECK(prefix->bits <= (prefix->address.family == FAMILY_INET ? 32u : 128u),
              "prefix of %u bits", prefix->bits);
    }
#if FUZZ_HAS_OPTIONS
    CHECK(rule->n_devices <= MAX_VALUES, "%u devices", rule->n_devices);
    for (unsigned i = 0; i < rule->n_devices; i++)
        CHECK(device_is_valid(rule->devices[i]), "device '%.*s'", IFNAMSIZ, rule->devices[i]);
    CHECK((rule->options & ~all_options()) == 0, "options 0x%x", rule->options);
    CHECK(rule->has_options == (rule->options != 0), "has_options %d with options 0x%x",
          rule->has_options, rule->options);
#endif
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

/* ---- an independent reference of the matching, bit by bit ----------------------------------- */

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

static bool fuzz_reference_rule_matches(const struct rule *rule, const struct caller *caller,
                                   const struct socket_request *socket)
{
    if (rule->kinds != 0 && (rule->kinds & socket->kind) == 0)
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
    any = rule->n_ports == 0;
    for (unsigned i = 0; i < rule->n_ports; i++)
        any |= rule->ports[i].low <= socket->port && socket->port <= rule->ports[i].high;
    if (!any)
        return false;
    any = rule->n_addresses == 0;
    for (unsigned i = 0; i < rule->n_addresses; i++)
        any |= fuzz_reference_in_prefix(&socket->address, &rule->addresses[i]);
#if FUZZ_HAS_OPTIONS
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
     * them. */
    unsigned granted = rule->has_options ? rule->options : (unsigned)UNPRIVILEGED_OPTIONS;
    if (rule->allow)
        return (socket->options | granted) == granted;
    return !rule->has_options || (socket->options & rule->options) != 0;
#else
    return any;
#endif
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
          "(uid %u, kind %u, family %u, port %u)",
          decided != NULL ? (long)(decided - policy->rules) : -1L,
          expected != NULL ? (long)(expected - policy->rules) : -1L, (unsigned)caller->uid,
          socket->kind, socket->address.family, (unsigned)socket->port);
    for (unsigned i = 0; i < policy->count; i++)
        CHECK(rule_matches(&policy->rules[i], caller, socket) ==
              fuzz_reference_rule_matches(&policy->rules[i], caller, socket),
              "rule_matches disagrees with the reference on rule %u", i);
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
#if FUZZ_HAS_OPTIONS
    "kind=tcp,family=inet6,addr=::,port=80,v6only=1,reuseport=1",
    "kind=udp,family=inet,addr=0.0.0.0,port=67,device=eth0,freebind=1",
    "kind=tcp,family=inet,addr=10.0.0.1,port=443,mark=7,priority=6,rcvbuf=65536,sndbuf=65536",
    "kind=tcp,family=inet,addr=192.168.1.77,port=80,transparent=1,device=lo",
#endif
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

/* Every key, both families, prefixes and ranges, so that matching a fuzzed request covers it all. */
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
#if FUZZ_HAS_OPTIONS
    "deny options=transparent,mark\n"
    "allow device=eth0,lo,br-0.1 kind=udp options=device,freebind,v6only\n"
    "allow user=1000 options=rcvbuf,sndbuf,priority,reuseport\n"
#endif
    ;
static struct policy fixed_policy;

static void fuzz_make_policy(void)
{
    reason why;
    CHECK(parse_policy(fixed_policy_text, strlen(fixed_policy_text), &fixed_policy, why),
          "the fixed policy: %s", why);
    CHECK(fixed_policy.count == (FUZZ_HAS_OPTIONS ? 13 : 10), "the fixed policy has %u rules",
          fixed_policy.count);
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

/* The spec that should parse back to SOCKET. */
static int fuzz_format_spec(const struct socket_request *socket, char *out, size_t size)
{
    char address[INET6_ADDRSTRLEN];
    fuzz_format_address(&socket->address, address, sizeof address);
    int length = snprintf(out, size, "kind=%s,family=%s,addr=%s,port=%u",
                          fuzz_name_of(socket->kind, kind_names, COUNT(kind_names)),
                          fuzz_name_of(socket->address.family, family_names, COUNT(family_names)),
                          address, (unsigned)socket->port);
    if (socket->kind == KIND_TCP)
        length += snprintf(out + length, size - (size_t)length, ",backlog=%u",
                           (unsigned)socket->backlog);
#if FUZZ_HAS_OPTIONS
    for (size_t i = 0; i < COUNT(option_names); i++) {
        unsigned bit = option_names[i].bit;
        if (!(socket->options & bit))
            continue;
        char value[IFNAMSIZ + 16];
        switch (bit) {
        case OPTION_V6ONLY: snprintf(value, sizeof value, "%u", (unsigned)socket->v6only); break;
        case OPTION_MARK: snprintf(value, sizeof value, "%u", (unsigned)socket->mark); break;
        case OPTION_PRIORITY: snprintf(value, sizeof value, "%u", (unsigned)socket->priority); break;
        case OPTION_RCVBUF: snprintf(value, sizeof value, "%u", (unsigned)socket->rcvbuf); break;
        case OPTION_SNDBUF: snprintf(value, sizeof value, "%u", (unsigned)socket->sndbuf); break;
        case OPTION_DEVICE: snprintf(value, sizeof value, "%.*s", IFNAMSIZ, socket->device); break;
        default: snprintf(value, sizeof value, "1"); break;
        }
        length += snprintf(out + length, size - (size_t)length, ",%s=%s", option_names[i].name,
                           value);
    }
#else
    if (socket->v6only >= 0)
        length += snprintf(out + length, size - (size_t)length, ",v6only=%d", socket->v6only);
#endif
    return length;
}

static bool fuzz_same_socket(const struct socket_request *a, const struct socket_request *b)
{
    return a->kind == b->kind && a->address.family == b->address.family &&
           memcmp(a->address.bytes, b->address.bytes, sizeof a->address.bytes) == 0 &&
           a->port == b->port && a->backlog == b->backlog && a->v6only == b->v6only
#if FUZZ_HAS_OPTIONS
           && a->options == b->options && a->mark == b->mark && a->priority == b->priority &&
           a->rcvbuf == b->rcvbuf && a->sndbuf == b->sndbuf &&
           strncmp(a->device, b->device, IFNAMSIZ) == 0
#endif
        ;
}

static void fuzz_check_spec_round_trip(const struct socket_request *socket)
{
    char text[512];
    struct socket_request again;
    reason why;
    if (fuzz_format_spec(socket, text, sizeof text) > MAX_SPEC_LEN)
        return;                       /* longer than a spec may be (e.g. backlog=128 added) */
    CHECK(parse_spec(text, &again, why), "the canonical spec '%s' does not parse: %s", text, why);
    CHECK(fuzz_same_socket(socket, &again), "the canonical spec '%s' parses to another socket", text);
}

#endif /* PROCKET_FUZZ_COMMON_H */
