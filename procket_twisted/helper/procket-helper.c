/*
 * procket-helper: opens sockets that need privilege for an unprivileged caller and passes them
 * back over the AF_UNIX socket that is its standard input (SCM_RIGHTS).
 *
 * It is installed setuid root, or with file capabilities, or run through sudo. It never execs
 * anything, never reads a path or a setting from its caller's environment, and lives for one request.
 *
 * Order of the steps (every call is checked; the first failure sends one error message and exits):
 *   0. argc >= 1, or exit at once (an empty argv would make argv[1] the environment).
 *   1. setup: reset the signal mask and every signal disposition, start a watchdog alarm; fds 0-2
 *      must be open and fd 0 an AF_UNIX stream or seqpacket socket; close every other fd; no core
 *      dumps (PR_SET_DUMPABLE 0, RLIMIT_CORE 0); PR_SET_NO_NEW_PRIVS; chdir("/").
 *   2. caller: real uid and gid (SUDO_UID and SUDO_GID only when the real uid is 0), supplementary
 *      groups from getgroups(); then the environment is cleared.
 *   3. parse: argv is "v1 SPEC...", one SPEC per socket, each parsed strictly (allowlisted keys
 *      and names, decimal numbers without sign or leading zeros, numeric addresses, bounded lengths).
 *      "v1 check SPEC..." only reports which policy rule decides each socket (after step 5's
 *      checks of the policy file) and exits: no privileged step is taken.
 *   4. privilege: the permitted capability set holds every capability the request needs.
 *   5. policy: the helper's own path and its policy file (PATH-OF-HELPER-DIR/policy) are reached
 *      without following symlinks through directories owned by root that group and others cannot
 *      write (sticky directories excepted); the file must be a root-owned regular file that group
 *      and others cannot write. No file: the built-in default (TCP and UDP only). A bad file: nothing.
 *      Every socket must be allowed before any is created. No NSS: ids in the policy are numeric.
 *   6. open /dev/net/tun for each tun or tap request (it may be mode 600); then become the
 *      caller, keeping only the capabilities the sockets need (CAP_NET_BIND_SERVICE for tcp and
 *      udp, CAP_NET_RAW for raw and packet sockets and for a device binding, CAP_NET_ADMIN for
 *      tun and tap and for mark, transparent, priority and forced buffer sizes): PR_SET_KEEPCAPS,
 *      setgroups(0), setresgid, setresuid, then capset to exactly that set (rule 7: the sockets
 *      are created by the caller's uid, so SO_REUSEPORT groups never span users).
 *   7. for each socket: socket, setsockopt (SO_REUSEADDR for streams, then the requested
 *      options: v6only, reuseport, freebind, transparent, device, mark, priority, rcvbuf, sndbuf),
 *      bind, listen (streams). A raw socket: socket, IP_HDRINCL, options, bind if an addr was
 *      given. A packet socket: socket with protocol 0, the filter attached and locked, options,
 *      bind to the ethertype and interface, promiscuous mode. A tun or tap: TUNSETIFF with
 *      IFF_TUN_EXCL (a new interface only), TUNSETOWNER and TUNSETGROUP to the caller, then its
 *      address and up.
 *   8. drop: clear every capability and PR_SET_KEEPCAPS; verify getresuid, getresgid, no groups,
 *      no capabilities, and that setuid(0) and setgid(0) fail.
 *   9. send: one message "ok N\n" carrying all N fds in request order; exit 0.
 *
 * An error is one message on fd 0, "error INDEX STEP ERRNO TEXT\n" (INDEX is the 1-based socket, or
 * 0), and the exit status is the step's number (setup 1, parse 2, privilege 3, policy 4, socket 5,
 * setsockopt 6, bind 7, listen 8, drop 9, send 10). No fd is ever sent with an error.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <linux/ipv6.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#define PROTOCOL_VERSION "v1"
#define MAX_SOCKETS 253          /* SCM_MAX_FD: what one message can carry */
#define MAX_SPEC_LEN 1400         /* room for a packet filter of MAX_FILTER instructions */
#define MAX_FILTER 64
#define MAX_POLICY_BYTES 65536
#define MAX_POLICY_LINE 512
#define MAX_RULES 256
#define MAX_VALUES 16            /* values in one policy list, e.g. port=80,443,8000-8080 */
#define MAX_GROUPS 256           /* supplementary groups considered for group= rules */
#define WATCHDOG_SECONDS 10
#define DEFAULT_BACKLOG 128
#ifndef PROCKET_POLICY_PATH      /* a packager may fix an absolute path at build time */
#define PROCKET_POLICY_NAME "policy"
#endif

enum step {
    STEP_SETUP = 1, STEP_PARSE, STEP_PRIVILEGE, STEP_POLICY, STEP_SOCKET,
    STEP_SETSOCKOPT, STEP_BIND, STEP_LISTEN, STEP_DROP, STEP_SEND
};
static const char *const step_names[] = {
    [STEP_SETUP] = "setup", [STEP_PARSE] = "parse", [STEP_PRIVILEGE] = "privilege",
    [STEP_POLICY] = "policy", [STEP_SOCKET] = "socket", [STEP_SETSOCKOPT] = "setsockopt",
    [STEP_BIND] = "bind", [STEP_LISTEN] = "listen", [STEP_DROP] = "drop", [STEP_SEND] = "send",
};

/* Kinds and families are bits so that a policy rule can hold a set of them. */
enum {
    KIND_TCP = 1u << 0, KIND_UDP = 1u << 1, KIND_RAW = 1u << 2, KIND_PACKET = 1u << 3,
    KIND_TUN = 1u << 4, KIND_TAP = 1u << 5,
};
#define KIND_INET (KIND_TCP | KIND_UDP)
#define KIND_DEVICE (KIND_TUN | KIND_TAP)
#define KIND_SOCKET (KIND_INET | KIND_RAW | KIND_PACKET)
#define KIND_ANY (KIND_SOCKET | KIND_DEVICE)
static const struct name_bit { const char *name; unsigned bit; } kind_names[] = {
    {"tcp", KIND_TCP}, {"udp", KIND_UDP}, {"raw", KIND_RAW}, {"packet", KIND_PACKET},
    {"tun", KIND_TUN}, {"tap", KIND_TAP},
};
enum { FAMILY_INET = 1u << 0, FAMILY_INET6 = 1u << 1 };
static const struct name_bit family_names[] = {
    {"inet", FAMILY_INET}, {"inet6", FAMILY_INET6},
};
/* Socket options, set before bind: each is a feature a policy rule can grant by name. */
enum {
    OPTION_V6ONLY = 1u << 0, OPTION_REUSEPORT = 1u << 1, OPTION_FREEBIND = 1u << 2,
    OPTION_DEVICE = 1u << 3, OPTION_MARK = 1u << 4, OPTION_TRANSPARENT = 1u << 5,
    OPTION_PRIORITY = 1u << 6, OPTION_RCVBUF = 1u << 7, OPTION_SNDBUF = 1u << 8,
    OPTION_HDRINCL = 1u << 9, OPTION_PROMISC = 1u << 10,
};
static const struct name_bit option_names[] = {
    {"v6only", OPTION_V6ONLY}, {"reuseport", OPTION_REUSEPORT}, {"freebind", OPTION_FREEBIND},
    {"device", OPTION_DEVICE}, {"mark", OPTION_MARK}, {"transparent", OPTION_TRANSPARENT},
    {"priority", OPTION_PRIORITY}, {"rcvbuf", OPTION_RCVBUF}, {"sndbuf", OPTION_SNDBUF},
    {"hdrincl", OPTION_HDRINCL}, {"promisc", OPTION_PROMISC},
};
/* Which kinds each option applies to, in option_names' order. */
static const unsigned option_kinds[] = {
    KIND_INET, KIND_INET, KIND_INET, KIND_ANY, KIND_SOCKET, KIND_INET,
    KIND_SOCKET, KIND_SOCKET, KIND_SOCKET, KIND_RAW, KIND_PACKET,
};
/* What an allow rule grants when it names no options: those any process may set itself. */
#define UNPRIVILEGED_OPTIONS (OPTION_V6ONLY | OPTION_REUSEPORT | OPTION_FREEBIND)
/* The options the kernel checks CAP_NET_ADMIN for (or CAP_NET_RAW, for some). */
#define NET_ADMIN_OPTIONS \
    (OPTION_MARK | OPTION_TRANSPARENT | OPTION_PRIORITY | OPTION_RCVBUF | OPTION_SNDBUF)

struct address {
    unsigned family;                  /* FAMILY_INET or FAMILY_INET6 */
    unsigned char bytes[16];          /* network order; 4 used for inet */
};

struct socket_request {
    unsigned kind;
    struct address address;           /* family 0: none (packet; raw, tun and tap may omit it) */
    uint32_t port;
    uint32_t backlog;
    uint32_t proto;                   /* raw: the IP protocol number */
    uint32_t ethertype;               /* packet: the ethertype it receives */
    uint32_t prefixlen;               /* tun, tap: of the address given to the interface */
    bool has_address;                 /* an addr was given (raw: bind it; tun, tap: assign it) */
    bool cooked, up, pi;              /* packet: SOCK_DGRAM; tun, tap: bring it up, keep PI */
    unsigned filter_length;           /* packet: a classic BPF filter, attached and locked */
    struct sock_filter filter[MAX_FILTER];
    unsigned options;                 /* OPTION_* bits: which of the values below are set */
    uint32_t v6only, mark, priority, rcvbuf, sndbuf;
    char device[IFNAMSIZ];
};

struct request {
    bool check;                       /* "v1 check SPEC...": report the policy's decisions only */
    unsigned count;
    struct socket_request sockets[MAX_SOCKETS];
};

struct port_range { uint32_t low, high; };
struct prefix { struct address address; unsigned bits; };

struct rule {
    bool allow;
    unsigned line;
    unsigned kinds, families;         /* 0: any */
    bool has_options;                 /* options= given: allow grants them, deny matches them */
    unsigned options;
    unsigned n_users, n_groups, n_ports, n_addresses, n_devices, n_protos, n_ethertypes; /* 0: any */
    uint32_t users[MAX_VALUES];
    uint32_t groups[MAX_VALUES];
    struct port_range ports[MAX_VALUES];
    struct port_range protos[MAX_VALUES];     /* raw: IP protocol numbers */
    struct port_range ethertypes[MAX_VALUES]; /* packet */
    struct prefix addresses[MAX_VALUES];
    char devices[MAX_VALUES][IFNAMSIZ];
};

struct policy {
    unsigned count;
    struct rule rules[MAX_RULES];
};

struct caller {
    uid_t uid;
    gid_t gid;
    int n_groups;
    gid_t groups[MAX_GROUPS];
};

typedef char reason[160];             /* why a parse or check failed, for the error message */

#if defined(__SANITIZE_ADDRESS__) && !defined(PROCKET_FUZZ)
/* The sanitizer build for the tests: LeakSanitizer cannot inspect a non-dumpable process. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}
#endif

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

static bool channel_ready;            /* fd 0 checked: errors go there, else to fd 2 */
static bool caller_set_no_new_privs;  /* read before setup() sets it for ourselves */

static void say(reason why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(reason why, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(why, sizeof(reason), fmt, ap);
    va_end(ap);
}

static _Noreturn void fail(unsigned index, enum step step, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static _Noreturn void fail(unsigned index, enum step step, int err, const char *fmt, ...)
{
    char message[512];
    int head = snprintf(message, sizeof message, "error %u %s %d ", index, step_names[step], err);
    if (head < 0)
        _exit(step);
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(message + head, sizeof message - (size_t)head - 1, fmt, ap);
    va_end(ap);
    size_t length = strlen(message);
    for (size_t i = (size_t)head; i < length; i++)     /* one line, printable */
        if (message[i] < 0x20 || message[i] > 0x7e)
            message[i] = '?';
    message[length++] = '\n';
    ssize_t ignored = channel_ready ? send(0, message, length, MSG_NOSIGNAL)
                                    : write(2, message, length);
    (void)ignored;                    /* nothing more can be done: the exit status still tells */
    _exit(step);
}

/* ---- strict parsing, shared by the request and the policy ---------------------------------- */

/* Decimal, no sign, no leading zero, at most MAX. */
static bool parse_number(const char *text, uint32_t max, uint32_t *out)
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

static bool parse_name(const char *text, const struct name_bit *names, size_t n, unsigned *out)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(text, names[i].name) == 0) {
            *out = names[i].bit;
            return true;
        }
    return false;
}

/* A numeric address; FAMILY 0 means "either, by its form". */
static bool parse_address(const char *text, unsigned family, struct address *out)
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
    return false;
}

/* Splits "key=value" in place. */
static bool split_pair(char *item, char **key, char **value)
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
static bool parse_device(const char *text, char out[IFNAMSIZ])
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

/* ---- the request ---------------------------------------------------------------------------- */

/* The value of one socket option of a spec; OPTION is one OPTION_* bit. */
static bool parse_option(unsigned option, const char *value, struct socket_request *out)
{
    switch (option) {
    case OPTION_V6ONLY: return parse_number(value, 1, &out->v6only);
    case OPTION_MARK: return parse_number(value, UINT32_MAX, &out->mark);
    case OPTION_PRIORITY: return parse_number(value, INT32_MAX, &out->priority);
    case OPTION_RCVBUF: return parse_number(value, INT32_MAX / 2, &out->rcvbuf);
    case OPTION_SNDBUF: return parse_number(value, INT32_MAX / 2, &out->sndbuf);
    case OPTION_DEVICE: return parse_device(value, out->device);
    default: return strcmp(value, "1") == 0;  /* reuseport, freebind, transparent, hdrincl, promisc */
    }
}

static bool is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* "0x" and 1 to 4 lowercase hex digits, no leading zero: an ethertype such as 0x806. */
static bool parse_ethertype(const char *text, uint32_t *out)
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

/* A classic BPF program: 16 lowercase hex digits per instruction (code 4, jt 2, jf 2, k 8). */
static bool parse_filter(const char *text, struct socket_request *out)
{
    size_t length = strlen(text);
    if (length == 0 || length % 16 != 0 || length / 16 > MAX_FILTER)
        return false;
    for (size_t i = 0; i < length; i++)
        if (!is_hex(text[i]))
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

/* The keys of a spec besides the options, and the kinds that take each. */
enum key {
    KEY_KIND, KEY_FAMILY, KEY_ADDR, KEY_PORT, KEY_BACKLOG, KEY_PROTO, KEY_ETHERTYPE,
    KEY_FILTER, KEY_COOKED, KEY_PREFIXLEN, KEY_UP, KEY_PI, KEY_COUNT
};
static const struct { const char *name; unsigned kinds; } spec_keys[KEY_COUNT] = {
    [KEY_KIND] = {"kind", KIND_ANY},          [KEY_FAMILY] = {"family", KIND_ANY & ~KIND_PACKET},
    [KEY_ADDR] = {"addr", KIND_ANY & ~KIND_PACKET}, [KEY_PORT] = {"port", KIND_INET},
    [KEY_BACKLOG] = {"backlog", KIND_TCP},    [KEY_PROTO] = {"proto", KIND_RAW},
    [KEY_ETHERTYPE] = {"ethertype", KIND_PACKET}, [KEY_FILTER] = {"filter", KIND_PACKET},
    [KEY_COOKED] = {"cooked", KIND_PACKET},   [KEY_PREFIXLEN] = {"prefixlen", KIND_DEVICE},
    [KEY_UP] = {"up", KIND_DEVICE},           [KEY_PI] = {"pi", KIND_DEVICE},
};

static bool parse_key(unsigned key, const char *value, struct socket_request *out,
                      unsigned *family, const char **address)
{
    switch (key) {
    case KEY_KIND: return parse_name(value, kind_names, COUNT(kind_names), &out->kind);
    case KEY_FAMILY: return parse_name(value, family_names, COUNT(family_names), family);
    case KEY_ADDR: *address = value; return true;
    case KEY_PORT: return parse_number(value, 65535, &out->port);
    case KEY_BACKLOG: return parse_number(value, 65535, &out->backlog);
    case KEY_PROTO: return parse_number(value, 255, &out->proto) && out->proto != 0;
    case KEY_ETHERTYPE: return parse_ethertype(value, &out->ethertype);
    case KEY_FILTER: return parse_filter(value, out);
    case KEY_PREFIXLEN: return parse_number(value, 128, &out->prefixlen);
    case KEY_COOKED: out->cooked = true; return strcmp(value, "1") == 0;
    case KEY_UP: out->up = true; return strcmp(value, "1") == 0;
    default: out->pi = true; return strcmp(value, "1") == 0;
    }
}

/* What each kind needs and allows beyond its keys; SEEN holds the KEY_* bits given. */
static bool check_spec(struct socket_request *out, unsigned seen, unsigned family,
                       const char *address, reason why)
{
    static const unsigned required[] = {
        [0] = 1u << KEY_FAMILY | 1u << KEY_ADDR | 1u << KEY_PORT,    /* tcp, udp */
        [1] = 1u << KEY_FAMILY | 1u << KEY_PROTO,                    /* raw */
        [2] = 1u << KEY_ETHERTYPE,                                   /* packet */
        [3] = 0,                                                     /* tun, tap */
    };
    unsigned kind = out->kind;
    unsigned need = required[kind & KIND_INET ? 0 : kind == KIND_RAW ? 1 : kind == KIND_PACKET ? 2 : 3];
    if ((seen & need) != need) {
        say(why, "%s needs %s", kind_names[__builtin_ctz(kind)].name,
            kind & KIND_INET ? "family, addr and port" : kind == KIND_RAW ? "family and proto"
                                                                         : "ethertype");
        return false;
    }
    for (unsigned key = 0; key < KEY_COUNT; key++)
        if ((seen & (1u << key)) && !(spec_keys[key].kinds & kind)) {
            say(why, "%s does not apply to kind %s", spec_keys[key].name,
                kind_names[__builtin_ctz(kind)].name);
            return false;
        }
    for (size_t i = 0; i < COUNT(option_names); i++)
        if ((out->options & option_names[i].bit) && !(option_kinds[i] & kind)) {
            say(why, "option %s does not apply to kind %s", option_names[i].name,
                kind_names[__builtin_ctz(kind)].name);
            return false;
        }
    if ((seen & (1u << KEY_ADDR)) && family == 0) {
        say(why, "addr needs a family");
        return false;
    }
    if (address != NULL && !parse_address(address, family, &out->address)) {
        say(why, "addr '%.48s' is not a numeric %s address", address,
            family == FAMILY_INET ? "IPv4" : "IPv6");
        return false;
    }
    out->has_address = address != NULL;
    if (address == NULL)
        out->address.family = family;  /* raw, tun, tap: the family, and no address */
    if ((out->options & OPTION_V6ONLY) && family != FAMILY_INET6) {
        say(why, "v6only applies to family=inet6 only");
        return false;
    }
    if ((out->options & OPTION_HDRINCL) && family != FAMILY_INET) {
        say(why, "hdrincl applies to family=inet only");
        return false;
    }
    if ((out->options & OPTION_PROMISC) && !(out->options & OPTION_DEVICE)) {
        say(why, "promisc needs a device");
        return false;
    }
    uint32_t longest = family == FAMILY_INET ? 32 : 128;
    if (seen & (1u << KEY_PREFIXLEN) && (address == NULL || out->prefixlen > longest)) {
        say(why, "prefixlen needs an addr, and at most %u bits", (unsigned)longest);
        return false;
    }
    if (!(seen & (1u << KEY_PREFIXLEN)))
        out->prefixlen = longest;
    return true;
}

/*
 * One socket or device: "kind=tcp,family=inet6,addr=::1,port=80,backlog=50,v6only=1",
 * "kind=raw,family=inet,proto=1", "kind=packet,ethertype=0x806,device=eth0",
 * "kind=tun,device=tun7,family=inet,addr=10.9.0.1,prefixlen=24,up=1". Keys come in any order,
 * each at most once; which keys a kind needs and takes is checked once all are read.
 */
static bool parse_spec(const char *spec, struct socket_request *out, reason why)
{
    char copy[MAX_SPEC_LEN + 1];
    if (strlen(spec) > MAX_SPEC_LEN) {
        say(why, "longer than %d bytes", MAX_SPEC_LEN);
        return false;
    }
    strcpy(copy, spec);
    const char *address = NULL;
    unsigned family = 0, seen = 0, seen_options = 0;
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
        while (key < KEY_COUNT && strcmp(name, spec_keys[key].name) != 0)
            key++;
        if (key == KEY_COUNT && !parse_name(name, option_names, COUNT(option_names), &option)) {
            say(why, "unknown key '%.32s'", name);
            return false;
        }
        unsigned *mark = option != 0 ? &seen_options : &seen;
        unsigned bit = option != 0 ? option : 1u << key;
        if (*mark & bit) {
            say(why, "key '%s' given twice", name);
            return false;
        }
        *mark |= bit;
        bool ok = option != 0 ? parse_option(option, value, out)
                              : parse_key(key, value, out, &family, &address);
        out->options |= option;
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

static bool parse_request(int argc, char *const argv[], struct request *out, unsigned *bad,
                          reason why)
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

/* ---- the policy ----------------------------------------------------------------------------- */

static bool parse_prefix(const char *text, struct prefix *out)
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
    return true;
}

/* A number or range of numbers up to MAX: "80", "1000-1023"; ethertypes in hex: "0x806". */
static bool parse_range(const char *text, uint32_t max, bool hex, struct port_range *out)
{
    char copy[16];
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

/* One "key=v1,v2" condition of a rule. */
static bool parse_condition(char *item, struct rule *rule, reason why)
{
    static const char *const keys[] = {"user", "group", "kind", "family", "port", "addr",
                                       "options", "device", "proto", "ethertype"};
    char *key, *list;
    unsigned which = 0;
    if (!split_pair(item, &key, &list)) {
        say(why, "'%.32s' is not key=value", item);
        return false;
    }
    while (which < COUNT(keys) && strcmp(key, keys[which]) != 0)
        which++;
    if (which == COUNT(keys)) {
        say(why, "unknown key '%.32s' (known: user group kind family port addr options device "
            "proto ethertype)", key);
        return false;
    }
    unsigned *counts[] = {&rule->n_users, &rule->n_groups, NULL, NULL, &rule->n_ports,
                          &rule->n_addresses, NULL, &rule->n_devices, &rule->n_protos,
                          &rule->n_ethertypes};
    unsigned *bits[] = {NULL, NULL, &rule->kinds, &rule->families, NULL, NULL, &rule->options,
                        NULL, NULL, NULL};
    if ((counts[which] != NULL && *counts[which] != 0) || (bits[which] != NULL && *bits[which] != 0)) {
        say(why, "key '%s' given twice", key);
        return false;
    }
    rule->has_options = rule->has_options || which == 6;
    for (char *value = strsep(&list, ","); value != NULL; value = strsep(&list, ",")) {
        bool ok;
        unsigned bit = 0;
        if (counts[which] != NULL && *counts[which] == MAX_VALUES) {
            say(why, "more than %d values for '%s'", MAX_VALUES, key);
            return false;
        }
        switch (which) {
        case 0: ok = parse_number(value, UINT32_MAX - 1, &rule->users[rule->n_users++]); break;
        case 1: ok = parse_number(value, UINT32_MAX - 1, &rule->groups[rule->n_groups++]); break;
        case 2: ok = parse_name(value, kind_names, COUNT(kind_names), &bit); rule->kinds |= bit; break;
        case 3: ok = parse_name(value, family_names, COUNT(family_names), &bit); rule->families |= bit; break;
        case 4: ok = parse_range(value, 65535, false, &rule->ports[rule->n_ports++]); break;
        case 5: ok = parse_prefix(value, &rule->addresses[rule->n_addresses++]); break;
        case 6: ok = parse_name(value, option_names, COUNT(option_names), &bit); rule->options |= bit; break;
        case 7: ok = parse_device(value, rule->devices[rule->n_devices++]); break;
        case 8: ok = parse_range(value, 255, false, &rule->protos[rule->n_protos++]); break;
        default: ok = parse_range(value, 65535, true, &rule->ethertypes[rule->n_ethertypes++]); break;
        }
        if (!ok) {
            say(why, "bad value '%.48s' for '%s'", value, key);
            return false;
        }
    }
    return true;
}

/* The whole file: lines of "allow|deny [key=value[,value...]]..."; '#' starts a comment. */
static bool parse_policy(const char *text, size_t length, struct policy *out, reason why)
{
    out->count = 0;       /* each rule is cleared as it starts: the whole table is 300 KiB */
    if (memchr(text, '\0', length) != NULL) {
        say(why, "the file contains a NUL byte");
        return false;
    }
    unsigned line_number = 0;
    size_t start = 0;
    while (start < length) {
        const char *end = memchr(text + start, '\n', length - start);
        size_t line_length = end != NULL ? (size_t)(end - (text + start)) : length - start;
        char line[MAX_POLICY_LINE + 1];
        line_number++;
        if (line_length > MAX_POLICY_LINE) {
            say(why, "line %u: longer than %d bytes", line_number, MAX_POLICY_LINE);
            return false;
        }
        memcpy(line, text + start, line_length);
        line[line_length] = '\0';
        start += line_length + 1;
        struct rule *rule = NULL;
        char *cursor = line;
        for (char *word = strsep(&cursor, " \t\r"); word != NULL; word = strsep(&cursor, " \t\r")) {
            if (word[0] == '\0')
                continue;
            if (word[0] == '#')
                break;
            if (rule == NULL) {
                if (out->count == MAX_RULES) {
                    say(why, "line %u: more than %d rules", line_number, MAX_RULES);
                    return false;
                }
                rule = &out->rules[out->count++];
                memset(rule, 0, sizeof *rule);
                rule->line = line_number;
                rule->allow = strcmp(word, "allow") == 0;
                if (!rule->allow && strcmp(word, "deny") != 0) {
                    say(why, "line %u: a rule starts with allow or deny, not '%.32s'",
                        line_number, word);
                    return false;
                }
            } else if (!parse_condition(word, rule, why)) {
                reason detail;
                memcpy(detail, why, sizeof detail);
                say(why, "line %u: %s", line_number, detail);
                return false;
            }
        }
    }
    return true;
}

static bool in_prefix(const struct address *address, const struct prefix *prefix)
{
    if (address->family != prefix->address.family)
        return false;
    unsigned whole = prefix->bits / 8, rest = prefix->bits % 8;
    if (memcmp(address->bytes, prefix->address.bytes, whole) != 0)
        return false;
    if (rest == 0)
        return true;
    unsigned mask = (0xffu << (8 - rest)) & 0xffu;
    return (address->bytes[whole] & mask) == (prefix->address.bytes[whole] & mask);
}

/* Whether VALUE is in one of RANGES; no ranges: any value, but only for the kinds WITH it. */
static bool in_ranges(uint32_t value, const struct port_range *ranges, unsigned count, bool with)
{
    if (count == 0)
        return true;
    for (unsigned i = 0; with && i < count; i++)
        if (value >= ranges[i].low && value <= ranges[i].high)
            return true;
    return false;
}

static bool rule_matches(const struct rule *rule, const struct caller *caller,
                         const struct socket_request *socket)
{
    bool found;
    /* A rule that names no kind is about TCP and UDP only: raw, packet, tun and tap sockets
       must always be named, so that no older or broader rule grants them by accident. */
    if (!((rule->kinds != 0 ? rule->kinds : KIND_INET) & socket->kind))
        return false;
    if (rule->families != 0 && !(rule->families & socket->address.family))
        return false;
    found = rule->n_users == 0;
    for (unsigned i = 0; i < rule->n_users && !found; i++)
        found = rule->users[i] == caller->uid;
    if (!found)
        return false;
    found = rule->n_groups == 0;
    for (unsigned i = 0; i < rule->n_groups && !found; i++) {
        found = rule->groups[i] == caller->gid;
        for (int g = 0; g < caller->n_groups && !found; g++)
            found = rule->groups[i] == caller->groups[g];
    }
    if (!found)
        return false;
    if (!in_ranges(socket->port, rule->ports, rule->n_ports, socket->kind & KIND_INET) ||
        !in_ranges(socket->proto, rule->protos, rule->n_protos, socket->kind == KIND_RAW) ||
        !in_ranges(socket->ethertype, rule->ethertypes, rule->n_ethertypes,
                   socket->kind == KIND_PACKET))
        return false;
    /* addr= matches what is bound (an unbound raw socket is the wildcard, as 0.0.0.0 is for
       tcp and udp) and a tun or tap interface's given address; no address, no match. */
    bool addressed = socket->has_address || socket->kind & (KIND_INET | KIND_RAW);
    found = rule->n_addresses == 0;
    for (unsigned i = 0; i < rule->n_addresses && !found; i++)
        found = addressed && in_prefix(&socket->address, &rule->addresses[i]);
    if (!found)
        return false;
    found = rule->n_devices == 0;
    for (unsigned i = 0; i < rule->n_devices && !found; i++)
        found = (socket->options & OPTION_DEVICE) && strcmp(socket->device, rule->devices[i]) == 0;
    if (!found)
        return false;
    /* A packet socket's interface and a new tun or tap's name are part of what is asked for
       (device= decides them), not the SO_BINDTODEVICE option an allow rule must grant. */
    unsigned intrinsic = socket->kind & (KIND_PACKET | KIND_DEVICE) ? (unsigned)OPTION_DEVICE : 0u;
    unsigned options = socket->options & ~intrinsic;
    if (rule->allow)      /* it grants its options=, or those any process may set itself */
        return (options & ~(rule->has_options ? rule->options : UNPRIVILEGED_OPTIONS)) == 0;
    return !rule->has_options || (options & rule->options) != 0;
}

/* The first matching rule decides; no match denies. Returns the deciding rule or NULL. */
static const struct rule *policy_decision(const struct policy *policy, const struct caller *caller,
                                          const struct socket_request *socket)
{
    for (unsigned i = 0; i < policy->count; i++)
        if (rule_matches(&policy->rules[i], caller, socket))
            return &policy->rules[i];
    return NULL;
}

#ifndef PROCKET_FUZZ   /* the fuzzers include this file for the parsers above */

/* ---- trusted paths -------------------------------------------------------------------------- */

static bool trusted_directory(const struct stat *st)
{
    return S_ISDIR(st->st_mode) && st->st_uid == 0 &&
           ((st->st_mode & (S_IWGRP | S_IWOTH)) == 0 || (st->st_mode & S_ISVTX) != 0);
}

/*
 * Opens NAME in DIRECTORY without following a link (LAST_FLAGS added to O_NOFOLLOW): it must be
 * a regular file owned by root that group and others cannot write. SHOWN names it in messages.
 * Returns the fd, or -1 with errno set and WHY filled (ENOENT leaves WHY empty: a missing file
 * is not an error for the caller to report).
 */
static int open_file_at(int directory, const char *name, int last_flags, const char *shown,
                        reason why)
{
    why[0] = '\0';
    int fd = openat(directory, name, last_flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int saved = errno;
        if (saved != ENOENT)
            say(why, "cannot open '%.96s' without following links: %s", shown, strerror(saved));
        errno = saved;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 ||
        (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        say(why, "'%.96s' must be a regular file owned by root that group and others cannot "
            "write", shown);
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}

/*
 * Opens the absolute directory PATH one component at a time, never following a symlink, and
 * checks every directory on the way, PATH included, with trusted_directory(). Returns its fd, or
 * -1 with errno set and WHY filled.
 */
static int open_trusted_directory(const char *path, reason why)
{
    char copy[PATH_MAX];
    if (path[0] != '/' || strlen(path) >= sizeof copy) {
        say(why, "'%.64s' is not a short absolute path", path);
        errno = EINVAL;
        return -1;
    }
    strcpy(copy, path);
    int directory = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0) {
        say(why, "cannot open /");
        return -1;
    }
    char *cursor = copy + 1;
    int walked = 1;                   /* length of the prefix of PATH that DIRECTORY is */
    for (;;) {
        struct stat st;
        int saved = fstat(directory, &st) != 0 ? errno : EPERM;
        if (saved != EPERM || !trusted_directory(&st)) {
            say(why, "directory '%.*s' is not owned by root, or group or others can write it",
                walked, path);
            close(directory);
            errno = saved;
            return -1;
        }
        if (*cursor == '\0')
            return directory;
        char *slash = strchr(cursor, '/');
        if (slash != NULL)
            *slash = '\0';
        if (strcmp(cursor, ".") == 0 || strcmp(cursor, "..") == 0 || *cursor == '\0') {
            say(why, "'%.64s' is not a canonical path", path);
            close(directory);
            errno = EINVAL;
            return -1;
        }
        int next = openat(directory, cursor, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        saved = errno;
        close(directory);
        if (next < 0) {
            say(why, "cannot open '%.96s' without following links: %s", path, strerror(saved));
            errno = saved;
            return -1;
        }
        directory = next;
        walked = slash != NULL ? (int)(slash - copy) : (int)strlen(path);
        cursor = slash != NULL ? slash + 1 : cursor + strlen(cursor);
        if (slash != NULL)
            *slash = '/';
    }
}

/*
 * The file FILE_PATH (absolute) through a trusted directory: its parent is opened with
 * open_trusted_directory() and the file with open_file_at(). On success *PARENT keeps the
 * parent directory open when PARENT is not NULL.
 */
static int open_trusted(const char *file_path, int last_flags, int *parent, reason why)
{
    char directory_path[PATH_MAX];
    const char *slash = strrchr(file_path, '/');
    if (slash == NULL || (size_t)(slash - file_path) >= sizeof directory_path) {
        say(why, "'%.64s' is not a short absolute path", file_path);
        errno = EINVAL;
        return -1;
    }
    size_t length = slash == file_path ? 1 : (size_t)(slash - file_path);
    memcpy(directory_path, file_path, length);
    directory_path[length] = '\0';
    int directory = open_trusted_directory(directory_path, why);
    if (directory < 0)
        return -1;
    int fd = open_file_at(directory, slash + 1, last_flags, file_path, why);
    int saved = errno;
    if (fd >= 0 && parent != NULL)
        *parent = directory;
    else
        close(directory);
    errno = saved;
    return fd;
}

/* ---- step 1: setup -------------------------------------------------------------------------- */

static void setup(void)
{
    sigset_t none;
    for (int sig = 1; sig <= SIGRTMAX; sig++)       /* dispositions and mask are inherited */
        if (sig != SIGKILL && sig != SIGSTOP && signal(sig, SIG_DFL) == SIG_ERR &&
            !(errno == EINVAL && sig > 31 && sig < SIGRTMIN))   /* the C library's own */
            fail(0, STEP_SETUP, errno, "cannot reset signal %d", sig);
    if (signal(SIGTSTP, SIG_IGN) == SIG_ERR || signal(SIGTTIN, SIG_IGN) == SIG_ERR ||
        signal(SIGTTOU, SIG_IGN) == SIG_ERR || sigemptyset(&none) != 0 ||
        sigprocmask(SIG_SETMASK, &none, NULL) != 0)
        fail(0, STEP_SETUP, errno, "cannot reset the signal mask");
    alarm(WATCHDOG_SECONDS);

    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0)
            fail(0, STEP_SETUP, EBADF, "fd %d is closed; fds 0, 1 and 2 must be open", fd);
    int domain = 0, type = 0;
    socklen_t length = sizeof domain;
    if (getsockopt(0, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0 || domain != AF_UNIX ||
        getsockopt(0, SOL_SOCKET, SO_TYPE, &type, &length) != 0 ||
        (type != SOCK_STREAM && type != SOCK_SEQPACKET))
        fail(0, STEP_SETUP, ENOTSOCK, "procket-helper: standard input must be an AF_UNIX stream "
             "or seqpacket socket; the helper is run by procket_twisted, not by hand");
    channel_ready = true;

    if (syscall(SYS_close_range, 3u, ~0u, 0u) != 0) {
        struct rlimit files;
        if (errno != ENOSYS || getrlimit(RLIMIT_NOFILE, &files) != 0)
            fail(0, STEP_SETUP, errno, "cannot close inherited fds");
        for (rlim_t fd = 3; fd < files.rlim_cur && fd < INT_MAX; fd++)
            (void)close((int)fd);
    }
    struct rlimit no_core = {0, 0};
    caller_set_no_new_privs = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1;
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &no_core) != 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || chdir("/") != 0)
        fail(0, STEP_SETUP, errno, "cannot disable core dumps or set no_new_privs");
}

/* ---- step 2: the caller --------------------------------------------------------------------- */

static void identify_caller(struct caller *caller)
{
    caller->uid = getuid();
    caller->gid = getgid();
    caller->n_groups = getgroups(MAX_GROUPS, caller->groups);
    if (caller->n_groups < 0)
        fail(0, STEP_SETUP, errno, "cannot read the supplementary groups (more than %d?)",
             MAX_GROUPS);
    if (caller->uid == 0) {                /* only sudo (or root itself) has a real uid of 0 */
        const char *sudo_uid = getenv("SUDO_UID"), *sudo_gid = getenv("SUDO_GID");
        uint32_t uid, gid;
        if (sudo_uid != NULL && sudo_gid != NULL) {
            if (!parse_number(sudo_uid, UINT32_MAX - 1, &uid) ||
                !parse_number(sudo_gid, UINT32_MAX - 1, &gid))
                fail(0, STEP_SETUP, EINVAL, "SUDO_UID or SUDO_GID is not a number");
            caller->uid = uid;
            caller->gid = gid;
            caller->n_groups = 0;          /* sudo gave us root's groups, not the caller's */
        }
    }
    if (clearenv() != 0)
        fail(0, STEP_SETUP, errno, "cannot clear the environment");
    if (caller->uid == 0)
        fail(0, STEP_POLICY, EPERM, "the caller is root; root binds privileged ports itself and "
             "needs no helper");
}

/* ---- capabilities (no libcap: two raw syscalls) --------------------------------------------- */

typedef uint64_t capabilities;
#define CAP_BIT(cap) ((capabilities)1 << (cap))

static capabilities permitted_capabilities(void)
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0)
        fail(0, STEP_PRIVILEGE, errno, "capget failed");
    return (capabilities)data[0].permitted | (capabilities)data[1].permitted << 32;
}

static int set_capabilities(capabilities caps)   /* effective = permitted = CAPS, inheritable 0 */
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    data[0].effective = data[0].permitted = (uint32_t)caps;
    data[1].effective = data[1].permitted = (uint32_t)(caps >> 32);
    return (int)syscall(SYS_capset, &header, data);
}

/* What the sockets of REQUEST need: binding any port, and what their options need. */
static capabilities needed_capabilities(const struct request *request)
{
    capabilities needed = 0;
    for (unsigned i = 0; i < request->count; i++) {
        const struct socket_request *socket = &request->sockets[i];
        if (socket->kind & KIND_INET)
            needed |= CAP_BIT(CAP_NET_BIND_SERVICE);
        if (socket->kind & (KIND_RAW | KIND_PACKET) || (socket->options & OPTION_DEVICE &&
                                                          socket->kind & KIND_INET))
            needed |= CAP_BIT(CAP_NET_RAW);
        if (socket->kind & KIND_DEVICE || socket->options & NET_ADMIN_OPTIONS)
            needed |= CAP_BIT(CAP_NET_ADMIN);
    }
    return needed;
}

static bool is_caller(const struct caller *caller)
{
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    return getresuid(&ruid, &euid, &suid) == 0 && getresgid(&rgid, &egid, &sgid) == 0 &&
           ruid == caller->uid && euid == caller->uid && suid == caller->uid &&
           rgid == caller->gid && egid == caller->gid && sgid == caller->gid;
}

/* ---- steps 4 and 5: privilege and policy ---------------------------------------------------- */

static void check_privilege(capabilities needed)
{
    capabilities missing = needed & ~permitted_capabilities();
    if (missing == 0)
        return;
    if (caller_set_no_new_privs)
        fail(0, STEP_PRIVILEGE, EPERM, "the helper is not privileged because the caller runs "
             "with no_new_privs set, so the kernel ignored its setuid bit and file capabilities");
    fail(0, STEP_PRIVILEGE, EPERM, "the helper is not privileged (euid %u, missing capability "
         "mask 0x%llx): install it with 'procket-twisted install-helper' (setuid root or file "
         "capabilities) on a filesystem not mounted nosuid", (unsigned)geteuid(),
         (unsigned long long)missing);
}

static void load_policy(struct policy *policy, char *path, size_t path_size)
{
#ifdef PROCKET_POLICY_PATH
    if (strlen(PROCKET_POLICY_PATH) >= path_size)
        fail(0, STEP_POLICY, ENAMETOOLONG, "policy path too long");
    strcpy(path, PROCKET_POLICY_PATH);
#else
    ssize_t length = readlink("/proc/self/exe", path, path_size);
    if (length <= 0 || (size_t)length >= path_size)
        fail(0, STEP_POLICY, errno, "cannot read /proc/self/exe to find the policy");
    path[length] = '\0';
    reason why;
    int directory = -1;           /* one walk: the helper's directory holds its policy too */
    int self = open_trusted(path, O_PATH, &directory, why); /* refuses a hardlink elsewhere */
    if (self < 0)
        fail(0, STEP_POLICY, errno, "the helper's own path is not trusted: %s", why);
    close(self);
    char *slash = strrchr(path, '/');
    if (slash == NULL || (size_t)(slash - path) + sizeof "/" PROCKET_POLICY_NAME > path_size)
        fail(0, STEP_POLICY, ENAMETOOLONG, "policy path too long");
    strcpy(slash + 1, PROCKET_POLICY_NAME);
#endif
    static char text[MAX_POLICY_BYTES + 1];
    reason problem;
#ifdef PROCKET_POLICY_PATH
    int fd = open_trusted(path, O_RDONLY | O_NONBLOCK, NULL, problem);
#else
    int fd = open_file_at(directory, PROCKET_POLICY_NAME, O_RDONLY | O_NONBLOCK, path, problem);
    int saved = errno;
    close(directory);
    errno = saved;
#endif
    if (fd < 0 && errno == ENOENT && problem[0] == '\0') {
        /* No file: the built-in default, TCP and UDP for everyone. */
        memset(&policy->rules[0], 0, sizeof policy->rules[0]);
        policy->count = 1;
        policy->rules[0].allow = true;
        policy->rules[0].kinds = KIND_TCP | KIND_UDP;
        return;
    }
    if (fd < 0)
        fail(0, STEP_POLICY, errno, "policy refused, so nothing is allowed: %s", problem);
    size_t total = 0;
    for (;;) {
        ssize_t got = read(fd, text + total, sizeof text - total);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            fail(0, STEP_POLICY, errno, "cannot read the policy %.96s", path);
        if (got == 0)
            break;
        total += (size_t)got;
        if (total > MAX_POLICY_BYTES)
            fail(0, STEP_POLICY, EFBIG, "policy %.96s is larger than %d bytes", path,
                 MAX_POLICY_BYTES);
    }
    close(fd);
    if (!parse_policy(text, total, policy, problem))
        fail(0, STEP_POLICY, EINVAL, "policy %.96s has an error, so nothing is allowed: %s",
             path, problem);
}

/* The client names the refused socket itself; the reason and the deciding line are ours. */
static void check_policy(const struct policy *policy, const char *path, const struct caller *caller,
                         const struct request *request)
{
    for (unsigned i = 0; i < request->count; i++) {
        const struct rule *rule = policy_decision(policy, caller, &request->sockets[i]);
        if (rule != NULL && rule->allow)
            continue;
        if (rule != NULL)
            fail(i + 1, STEP_POLICY, EACCES, "denied for uid %u by line %u of %.96s",
                 (unsigned)caller->uid, rule->line, path);
        fail(i + 1, STEP_POLICY, EACCES, "no rule allows it for uid %u in %.96s",
             (unsigned)caller->uid, path);
    }
}

/*
 * The "check" request: which rule decides each socket for this caller, and nothing else (no
 * socket is created). Replies "check N DECISION... PATH" where DECISION is allow:LINE or
 * deny:LINE; line 0 is the built-in default when allowed, and "no rule matched" when denied.
 */
static _Noreturn void report_decisions(const struct policy *policy, const char *path,
                                       const struct caller *caller, const struct request *request)
{
    static char reply[MAX_SOCKETS * 16 + PATH_MAX + 32];
    size_t used = (size_t)snprintf(reply, sizeof reply, "check %u", request->count);
    for (unsigned i = 0; i < request->count; i++) {
        const struct rule *rule = policy_decision(policy, caller, &request->sockets[i]);
        used += (size_t)snprintf(reply + used, sizeof reply - used, " %s:%u",
                                 rule != NULL && rule->allow ? "allow" : "deny",
                                 rule != NULL ? rule->line : 0);
    }
    used += (size_t)snprintf(reply + used, sizeof reply - used, " %s\n", path);
    if (send(0, reply, used, MSG_NOSIGNAL) != (ssize_t)used)
        fail(0, STEP_SEND, errno, "cannot send the policy's decisions");
    _exit(0);
}

/* ---- steps 6 to 8: become the caller, open, drop -------------------------------------------- */

static void become_caller(const struct caller *caller, bool change_ids, capabilities keep)
{
    if (change_ids &&
        (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 || setgroups(0, NULL) != 0 ||
         setresgid(caller->gid, caller->gid, caller->gid) != 0 ||
         setresuid(caller->uid, caller->uid, caller->uid) != 0))
        fail(0, STEP_DROP, errno, "cannot switch to uid %u gid %u", (unsigned)caller->uid,
             (unsigned)caller->gid);
    if (set_capabilities(keep) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        fail(0, STEP_DROP, errno, "cannot limit the capabilities to what the sockets need");
}

static void set_option(unsigned index, int fd, int level, int name, const void *value,
                       socklen_t length, const char *what)
{
    if (setsockopt(fd, level, name, value, length) != 0)
        fail(index, STEP_SETSOCKOPT, errno, "%s failed", what);
}

/* The requested options, each set before bind (the kernel checks most of them now). */
static void set_options(unsigned index, int fd, int family, const struct socket_request *request)
{
    unsigned options = request->options;
    int one = 1, v6only = (int)request->v6only, priority = (int)request->priority;
    int rcvbuf = (int)request->rcvbuf, sndbuf = (int)request->sndbuf;
    bool inet6 = family == AF_INET6;
    if (options & OPTION_V6ONLY)
        set_option(index, fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only, "IPV6_V6ONLY");
    if (options & OPTION_REUSEPORT)
        set_option(index, fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one, "SO_REUSEPORT");
    if (options & OPTION_FREEBIND)
        set_option(index, fd, inet6 ? IPPROTO_IPV6 : IPPROTO_IP, inet6 ? IPV6_FREEBIND : IP_FREEBIND,
                   &one, sizeof one, "IP_FREEBIND");
    if (options & OPTION_TRANSPARENT)
        set_option(index, fd, inet6 ? IPPROTO_IPV6 : IPPROTO_IP,
                   inet6 ? IPV6_TRANSPARENT : IP_TRANSPARENT, &one, sizeof one, "IP_TRANSPARENT");
    if ((options & OPTION_DEVICE) && request->kind != KIND_PACKET)  /* packet: bind names it */
        set_option(index, fd, SOL_SOCKET, SO_BINDTODEVICE, request->device,
                   (socklen_t)strlen(request->device) + 1, "SO_BINDTODEVICE");
    if (options & OPTION_MARK)
        set_option(index, fd, SOL_SOCKET, SO_MARK, &request->mark, sizeof request->mark, "SO_MARK");
    if (options & OPTION_PRIORITY)
        set_option(index, fd, SOL_SOCKET, SO_PRIORITY, &priority, sizeof priority, "SO_PRIORITY");
    if (options & OPTION_RCVBUF)
        set_option(index, fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf, "SO_RCVBUFFORCE");
    if (options & OPTION_SNDBUF)
        set_option(index, fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf, "SO_SNDBUFFORCE");
}

/* ADDRESS and PORT as a sockaddr in STORAGE; returns its length. */
static socklen_t make_sockaddr(const struct address *address, uint32_t port,
                               struct sockaddr_storage *storage)
{
    memset(storage, 0, sizeof *storage);
    if (address->family == FAMILY_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)storage;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        memcpy(&in->sin_addr, address->bytes, 4);
        return sizeof *in;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)storage;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    memcpy(&in6->sin6_addr, address->bytes, 16);
    return sizeof *in6;
}

static int inet_family(const struct socket_request *request)
{
    return request->address.family == FAMILY_INET ? AF_INET : AF_INET6;
}

/* tcp, udp: socket, SO_REUSEADDR (streams), options, bind, listen (streams). */
static int open_inet(unsigned index, const struct socket_request *request)
{
    int family = inet_family(request);
    bool stream = request->kind == KIND_TCP;
    int fd = socket(family, (stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC,
                    stream ? IPPROTO_TCP : IPPROTO_UDP);
    if (fd < 0)
        fail(index, STEP_SOCKET, errno, "socket() failed");
    int one = 1;
    if (stream)
        set_option(index, fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one, "SO_REUSEADDR");
    set_options(index, fd, family, request);
    struct sockaddr_storage storage;
    socklen_t length = make_sockaddr(&request->address, request->port, &storage);
    if (bind(fd, (struct sockaddr *)&storage, length) != 0)
        fail(index, STEP_BIND, errno, "bind() to port %u failed", (unsigned)request->port);
    if (stream && listen(fd, (int)request->backlog) != 0)
        fail(index, STEP_LISTEN, errno, "listen() failed");
    return fd;
}

/* raw: socket(family, SOCK_RAW, proto), IP_HDRINCL, options, bind when an addr was given. */
static int open_raw(unsigned index, const struct socket_request *request)
{
    int family = inet_family(request);
    int fd = socket(family, SOCK_RAW | SOCK_CLOEXEC, (int)request->proto);
    if (fd < 0)
        fail(index, STEP_SOCKET, errno, "socket(SOCK_RAW, %u) failed", (unsigned)request->proto);
    int one = 1;
    if (request->options & OPTION_HDRINCL)
        set_option(index, fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof one, "IP_HDRINCL");
    set_options(index, fd, family, request);
    if (request->has_address) {
        struct sockaddr_storage storage;
        socklen_t length = make_sockaddr(&request->address, 0, &storage);
        if (bind(fd, (struct sockaddr *)&storage, length) != 0)
            fail(index, STEP_BIND, errno, "bind() failed");
    }
    return fd;
}

/*
 * packet: created with protocol 0, so that no frame arrives before the filter is attached and
 * locked (the caller cannot remove it); then options, then bind to the ethertype and interface
 * (which starts the traffic), then promiscuous mode.
 */
static int open_packet(unsigned index, const struct socket_request *request)
{
    int fd = socket(AF_PACKET, (request->cooked ? SOCK_DGRAM : SOCK_RAW) | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail(index, STEP_SOCKET, errno, "socket(AF_PACKET) failed");
    int one = 1;
    if (request->filter_length > 0) {
        struct sock_filter filter[MAX_FILTER];
        memcpy(filter, request->filter, sizeof filter);
        struct sock_fprog program = {(unsigned short)request->filter_length, filter};
        set_option(index, fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof program,
                   "SO_ATTACH_FILTER");
        set_option(index, fd, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof one, "SO_LOCK_FILTER");
    }
    set_options(index, fd, AF_PACKET, request);
    int interface = 0;
    if (request->options & OPTION_DEVICE) {
        interface = (int)if_nametoindex(request->device);
        if (interface == 0)
            fail(index, STEP_BIND, errno, "no interface %s", request->device);
    }
    struct sockaddr_ll link;
    memset(&link, 0, sizeof link);
    link.sll_family = AF_PACKET;
    link.sll_protocol = htons((uint16_t)request->ethertype);
    link.sll_ifindex = interface;
    if (bind(fd, (struct sockaddr *)&link, sizeof link) != 0)
        fail(index, STEP_BIND, errno, "bind() to ethertype 0x%x failed", (unsigned)request->ethertype);
    if (request->options & OPTION_PROMISC) {
        struct packet_mreq membership;
        memset(&membership, 0, sizeof membership);
        membership.mr_ifindex = interface;
        membership.mr_type = PACKET_MR_PROMISC;
        set_option(index, fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &membership, sizeof membership,
                   "PACKET_ADD_MEMBERSHIP");
    }
    return fd;
}

/* The address (and prefix) of a new tun or tap interface, and bringing it up. */
static void configure_interface(unsigned index, const char *name,
                                const struct socket_request *request)
{
    int family = inet_family(request);
    int fd = socket(request->has_address ? family : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail(index, STEP_SETSOCKOPT, errno, "cannot configure %s", name);
    struct ifreq interface;
    memset(&interface, 0, sizeof interface);
    memcpy(interface.ifr_name, name, IFNAMSIZ);
    if (request->up &&
        (ioctl(fd, SIOCGIFFLAGS, &interface) != 0 ||
         (interface.ifr_flags = (short)(interface.ifr_flags | IFF_UP), ioctl(fd, SIOCSIFFLAGS, &interface) != 0)))
        fail(index, STEP_SETSOCKOPT, errno, "cannot bring %s up", name);
    if (request->has_address && family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&interface.ifr_addr;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, request->address.bytes, 4);
        if (ioctl(fd, SIOCSIFADDR, &interface) != 0)
            fail(index, STEP_SETSOCKOPT, errno, "cannot give %s its address", name);
        uint32_t mask = request->prefixlen == 0 ? 0 : ~0u << (32 - request->prefixlen);
        in = (struct sockaddr_in *)&interface.ifr_netmask;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(mask);
        if (ioctl(fd, SIOCSIFNETMASK, &interface) != 0)
            fail(index, STEP_SETSOCKOPT, errno, "cannot give %s its netmask", name);
    } else if (request->has_address) {
        struct in6_ifreq address;
        memset(&address, 0, sizeof address);
        if (ioctl(fd, SIOCGIFINDEX, &interface) != 0)
            fail(index, STEP_SETSOCKOPT, errno, "no interface %s", name);
        address.ifr6_ifindex = interface.ifr_ifindex;
        address.ifr6_prefixlen = request->prefixlen;
        memcpy(&address.ifr6_addr, request->address.bytes, 16);
        if (ioctl(fd, SIOCSIFADDR, &address) != 0)
            fail(index, STEP_SETSOCKOPT, errno, "cannot give %s its address", name);
    }
    close(fd);
}

/*
 * tun, tap: a new interface (IFF_TUN_EXCL: never another's existing one), owned by the caller,
 * optionally with an address and up. The fd handed over is /dev/net/tun's, attached to it; the
 * interface goes away when the caller closes it.
 */
static int open_tun(unsigned index, const struct socket_request *request,
                    const struct caller *caller, int fd)
{
    struct ifreq interface;
    memset(&interface, 0, sizeof interface);
    interface.ifr_flags = (short)((request->kind == KIND_TUN ? IFF_TUN : IFF_TAP) |
                                  (request->pi ? 0 : IFF_NO_PI) | IFF_TUN_EXCL);
    if (request->options & OPTION_DEVICE)
        memcpy(interface.ifr_name, request->device, strlen(request->device) + 1);
    if (ioctl(fd, TUNSETIFF, &interface) != 0)
        fail(index, STEP_BIND, errno, "cannot create interface %s",
             interface.ifr_name[0] != '\0' ? interface.ifr_name : "(any)");
    if (ioctl(fd, TUNSETOWNER, (unsigned long)caller->uid) != 0 ||
        ioctl(fd, TUNSETGROUP, (unsigned long)caller->gid) != 0)
        fail(index, STEP_SETSOCKOPT, errno, "cannot give %s to the caller", interface.ifr_name);
    if (request->has_address || request->up)
        configure_interface(index, interface.ifr_name, request);
    return fd;
}

/*
 * Step 6's first part: /dev/net/tun for each tun and tap request, opened before the switch to
 * the caller, since the device may be mode 600 (a fixed path, no input from the caller in it).
 */
static void open_tun_devices(const struct request *request, int devices[])
{
    for (unsigned i = 0; i < request->count; i++) {
        devices[i] = -1;
        if (request->sockets[i].kind & KIND_DEVICE) {
            devices[i] = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NOCTTY);
            if (devices[i] < 0)
                fail(i + 1, STEP_SOCKET, errno, "cannot open /dev/net/tun");
        }
    }
}

static int open_one(unsigned index, const struct socket_request *request,
                    const struct caller *caller, int device)
{
    switch (request->kind) {
    case KIND_RAW: return open_raw(index, request);
    case KIND_PACKET: return open_packet(index, request);
    case KIND_TUN: case KIND_TAP: return open_tun(index, request, caller, device);
    default: return open_inet(index, request);
    }
}

static void drop_for_good(const struct caller *caller, bool changed_ids)
{
    if (set_capabilities(0) != 0 || prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
        fail(0, STEP_DROP, errno, "cannot clear the capabilities");
    if (!is_caller(caller))
        fail(0, STEP_DROP, EPERM, "ids are not the caller's after the drop");
    if (changed_ids && getgroups(0, NULL) != 0)
        fail(0, STEP_DROP, EPERM, "supplementary groups remain after the drop");
    if (permitted_capabilities() != 0)
        fail(0, STEP_DROP, EPERM, "capabilities remain after the drop");
    if (setuid(0) == 0 || setgid(0) == 0)
        fail(0, STEP_DROP, EPERM, "root could be regained after the drop");
}

static void send_sockets(const int *fds, unsigned count)
{
    char text[16];
    int length = snprintf(text, sizeof text, "ok %u\n", count);
    union {
        struct cmsghdr align;
        char buffer[CMSG_SPACE(sizeof(int) * MAX_SOCKETS)];
    } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {text, (size_t)length};
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    message.msg_control = control.buffer;
    /* The length fields are size_t in glibc and socklen_t in musl; the values are small. */
    message.msg_controllen = (__typeof__(message.msg_controllen))CMSG_SPACE(sizeof(int) * count);
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (header == NULL)
        fail(0, STEP_SEND, EINVAL, "no room for the sockets in the message");
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = (__typeof__(header->cmsg_len))CMSG_LEN(sizeof(int) * count);
    memcpy(CMSG_DATA(header), fds, sizeof(int) * count);
    /* The system call itself: musl's sendmsg() wrapper refuses more than 1024 bytes of control
     * data (ENOMEM), which 253 descriptors exceed. Both structures were zeroed, so their padding
     * (musl's, where the kernel has wider fields) reads as the kernel expects. */
    long sent = syscall(SYS_sendmsg, 0, &message, MSG_NOSIGNAL);
    if (sent != length)
        fail(0, STEP_SEND, sent < 0 ? errno : EIO, "cannot send the sockets to the caller");
}

int main(int argc, char *argv[])
{
    static struct request request;
    static struct policy policy;
    static struct caller caller;
    static char policy_path[PATH_MAX];
    int fds[MAX_SOCKETS], devices[MAX_SOCKETS];
    reason why;
    unsigned bad;

    if (argc < 1 || argv[0] == NULL)
        _exit(STEP_PARSE);
    setup();
    identify_caller(&caller);
    if (!parse_request(argc, argv, &request, &bad, why))
        fail(bad, STEP_PARSE, EINVAL, "%s", why);

    if (request.check) {
        load_policy(&policy, policy_path, sizeof policy_path);
        report_decisions(&policy, policy_path, &caller, &request);
    }
    capabilities sockets_need = needed_capabilities(&request);
    bool change_ids = !is_caller(&caller);
    check_privilege(sockets_need | (change_ids ? CAP_BIT(CAP_SETUID) | CAP_BIT(CAP_SETGID) : 0));
    load_policy(&policy, policy_path, sizeof policy_path);
    check_policy(&policy, policy_path, &caller, &request);

    open_tun_devices(&request, devices);
    become_caller(&caller, change_ids, sockets_need);
    for (unsigned i = 0; i < request.count; i++)
        fds[i] = open_one(i + 1, &request.sockets[i], &caller, devices[i]);
    drop_for_good(&caller, change_ids);
    send_sockets(fds, request.count);
    return 0;
}

#endif /* PROCKET_FUZZ */
