/*
 * procket-helper: what every file of the helper shares (limits, the numbering of the steps, the
 * request, the policy, the caller). AUDIT.md says in which order to read the files, which of them
 * see the caller's input and which run privileged.
 */
#ifndef PROCKET_HELPER_H
#define PROCKET_HELPER_H

#define _GNU_SOURCE
#include <linux/filter.h>
#include <net/if.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#define PROTOCOL_VERSION "v1"
#define MAX_SOCKETS 253          /* SCM_MAX_FD: what one message can carry */
#define MAX_SPEC_LEN 1400        /* room for a packet filter of MAX_FILTER instructions */
#define MAX_FILTER 64            /* the caller's own packet filter, in instructions */
#define MAX_GRANT_FILTER (MAX_FILTER + 16) /* the locked filter: the grant's checks, then the caller's */
#define MAX_POLICY_BYTES 65536
#define MAX_POLICY_LINE 512
#define MAX_RULES 256
#define MAX_VALUES 16            /* values in one policy list, e.g. port=80,443,8000-8080 */
#define MAX_GROUPS 256           /* supplementary groups considered for group= rules */
#define MAX_VIEWS 2              /* networks one socket accepts: "::" without v6only is two */
#define WATCHDOG_SECONDS 10
#define DEFAULT_BACKLOG 128
#define POLICY_NAME "policy"     /* beside the helper, unless PROCKET_POLICY_PATH fixes a path */

#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/*
 * The one numbering of the steps: error messages name them and the exit status is the number
 * (setup 1, parse 2, privilege 3, policy 4, socket 5, setsockopt 6, bind 7, listen 8, drop 9,
 * send 10). main.c gives the order in which the helper takes them.
 */
enum step {
    STEP_SETUP = 1, STEP_PARSE, STEP_PRIVILEGE, STEP_POLICY, STEP_SOCKET,
    STEP_SETSOCKOPT, STEP_BIND, STEP_LISTEN, STEP_DROP, STEP_SEND
};
extern const char *const step_names[];

typedef uint64_t capabilities;
#define CAP_BIT(cap) ((capabilities)1 << (cap))

/* Kinds and families are bits, so that a policy rule can hold a set of them. */
enum {
    KIND_TCP = 1u << 0, KIND_UDP = 1u << 1, KIND_RAW = 1u << 2, KIND_PACKET = 1u << 3,
    KIND_TUN = 1u << 4, KIND_TAP = 1u << 5,
};
#define KIND_INET (KIND_TCP | KIND_UDP)
#define KIND_DEVICE (KIND_TUN | KIND_TAP)
#define KIND_SOCKET (KIND_INET | KIND_RAW | KIND_PACKET)
#define KIND_ANY (KIND_SOCKET | KIND_DEVICE)
enum { FAMILY_INET = 1u << 0, FAMILY_INET6 = 1u << 1 };

struct name_bit { const char *name; unsigned bit; };
extern const struct name_bit family_names[2];

/* The keys of a spec besides the socket options (kinds.c says which kind takes which). */
enum key {
    KEY_KIND, KEY_FAMILY, KEY_ADDR, KEY_PORT, KEY_BACKLOG, KEY_PROTO, KEY_ETHERTYPE, KEY_FILTER,
    KEY_COOKED, KEY_PROMISC, KEY_HDRINCL, KEY_PREFIXLEN, KEY_UP, KEY_PI, KEY_COUNT
};
#define KEY(key) (1u << (key))
extern const char *const key_names[KEY_COUNT];

/* Socket options: set before bind, each a feature that a policy rule grants by name. */
enum option_index {
    OPT_V6ONLY, OPT_REUSEPORT, OPT_FREEBIND, OPT_DEVICE, OPT_MARK, OPT_TRANSPARENT, OPT_PRIORITY,
    OPT_RCVBUF, OPT_SNDBUF, OPTION_COUNT
};
#define OPTION(index) (1u << (index))

/* One row per kind: the whole of what the helper accepts, in one table (kinds.c). */
struct kind {
    const char *name;
    unsigned bit;
    unsigned required;            /* KEY() bits a spec of this kind must give */
    unsigned keys;                /* KEY() bits it may give */
    unsigned options;             /* OPTION() bits it may ask for */
    capabilities create;          /* raised for socket(), or for a new interface's set-up */
    capabilities bind;            /* raised for bind() */
    const char *required_text;    /* the required keys, for messages */
};
extern const struct kind kinds[6];

/* What an option's value is in a spec: "1" only, a decimal number up to its max, a name. */
enum value_kind { VALUE_FLAG, VALUE_NUMBER, VALUE_NAME };

/* One row per socket option (kinds.c). */
struct option {
    const char *name;             /* in specs and in a rule's options= */
    unsigned kinds;               /* the kinds it applies to */
    capabilities needs;           /* raised to set it; 0: any process may set it itself */
    enum value_kind value;
    uint32_t max;                 /* VALUE_NUMBER: from 0 to MAX */
    bool bounded;                 /* a rule may bound its value (mark=1-9 beside options=mark) */
};
extern const struct option options[OPTION_COUNT];
/* What an allow rule grants when it names no options: those any process may set itself. */
unsigned unprivileged_options(void);

struct address {
    unsigned family;              /* FAMILY_INET or FAMILY_INET6 (0: none) */
    unsigned char bytes[16];      /* network order; 4 used for inet */
};
struct prefix { struct address address; unsigned bits; };
struct range { uint32_t low, high; };

struct socket_request {
    unsigned kind;                /* one KIND_* bit */
    struct address address;       /* family 0: none (packet; raw, tun and tap may omit it) */
    uint32_t port;
    uint32_t backlog;
    uint32_t proto;               /* raw: the IP protocol number */
    uint32_t ethertype;           /* packet: the ethertype it receives */
    uint32_t prefixlen;           /* tun, tap: of the address given to the interface */
    bool has_address;             /* an addr was given (raw: bind it; tun, tap: assign it) */
    bool cooked, promisc, hdrincl;/* packet: SOCK_DGRAM, promiscuous; raw: IP_HDRINCL */
    bool up, pi;                  /* tun, tap: bring it up, keep packet information */
    unsigned filter_length;       /* packet: the caller's classic BPF filter */
    struct sock_filter filter[MAX_FILTER];
    unsigned options;             /* OPTION() bits asked for; their values below */
    uint32_t values[OPTION_COUNT];
    char device[IFNAMSIZ];        /* OPT_DEVICE: SO_BINDTODEVICE, a packet socket's interface,
                                     a new tun or tap's name */
};

struct request {
    bool check;                   /* "v1 check SPEC...": report the policy's decisions only */
    unsigned count;
    struct socket_request sockets[MAX_SOCKETS];
};

struct rule {
    bool allow;
    unsigned line;
    unsigned kinds, families;     /* 0: any (a rule without kinds is about tcp and udp) */
    bool has_options;             /* options= given: allow grants them, deny matches them */
    unsigned options;
    unsigned n_users, n_groups, n_ports, n_addresses, n_devices, n_protos, n_ethertypes;
    unsigned n_bounds[OPTION_COUNT];  /* 0: any value */
    uint32_t users[MAX_VALUES];
    uint32_t groups[MAX_VALUES];
    struct range ports[MAX_VALUES];
    struct range protos[MAX_VALUES];      /* raw: IP protocol numbers */
    struct range ethertypes[MAX_VALUES];  /* packet */
    struct range bounds[OPTION_COUNT][MAX_VALUES]; /* option values: mark=, priority=... */
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
    bool groups_known;            /* false under sudo: its supplementary groups are unknown */
    int n_groups;
    gid_t groups[MAX_GROUPS];
};

/* A network a socket accepts, as the policy matches it (policy.c: socket_views). */
struct view {
    unsigned family;              /* FAMILY_* or 0 (packet; an interface given no family) */
    bool addressed;               /* false: no address at all (packet, an interface without one) */
    struct prefix network;        /* a bound address is /32 or /128; a wildcard is /0 */
};

/* The policy's answer for one socket: the deciding rule (NULL: none matched). */
struct decision {
    bool allowed;
    const struct rule *rule;
};

typedef char reason[240];         /* why a parse or check failed, for the error message */

/* text.c: strict parsing shared by the request and the policy (no I/O, no privilege). */
void say(reason why, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool parse_number(const char *text, uint32_t max, uint32_t *out);
bool parse_name(const char *text, const struct name_bit *names, size_t n, unsigned *out);
bool parse_address(const char *text, unsigned family, struct address *out);
bool split_pair(char *item, char **key, char **value);
bool parse_device(const char *text, char out[IFNAMSIZ]);
bool parse_ethertype(const char *text, uint32_t *out);
bool parse_prefix(const char *text, struct prefix *out);
bool parse_range(const char *text, uint32_t max, bool hex, struct range *out);
bool is_v4_mapped(const struct address *address);
void unmap_v4(struct address *address);

/* kinds.c */
const struct kind *kind_of(unsigned bit);
bool parse_kind(const char *text, unsigned *bit);
bool parse_option_name(const char *text, unsigned *index);

/* request.c: the caller's arguments (no I/O, no privilege). */
bool parse_spec(const char *spec, struct socket_request *out, reason why);
bool parse_request(int argc, char *const argv[], struct request *out, unsigned *bad, reason why);

/* policy.c: the policy's text and its decisions (no I/O, no privilege). */
bool parse_policy(const char *text, size_t length, struct policy *out, reason why);
unsigned socket_views(const struct socket_request *socket, struct view views[MAX_VIEWS]);
bool prefix_contains(const struct prefix *outer, const struct prefix *inner);
bool prefixes_overlap(const struct prefix *a, const struct prefix *b);
bool rule_matches(const struct rule *rule, const struct caller *caller,
                  const struct socket_request *socket, const struct view *view);
struct decision policy_decision(const struct policy *policy, const struct caller *caller,
                                const struct socket_request *socket);

/* filters.c: the locked filters that keep a grant after the hand-over (no I/O). */
unsigned packet_grant_filter(const struct socket_request *request, int interface,
                             struct sock_filter out[MAX_GRANT_FILTER]);
unsigned raw_grant_filter(const struct socket_request *request,
                          struct sock_filter out[MAX_GRANT_FILTER]);

#ifndef PROCKET_FUZZ
/* channel.c: the answer on fd 0. */
extern bool channel_ready;
_Noreturn void fail(unsigned index, enum step step, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void send_sockets(const int *fds, unsigned count);
_Noreturn void report_decisions(const struct policy *policy, const char *path,
                                const struct caller *caller, const struct request *request);

/* audit.c: the audit trail on /dev/log (best effort: it never blocks, fails or changes a
 * request). From audit_start on (not in check mode), every grant and every failure is logged. */
void audit_start(const struct caller *caller, const char *policy, int argc, char *const argv[]);
void audit_deciding_line(unsigned line);
void audit_granted(const unsigned lines[]);
void audit_failed(unsigned index, enum step step, int err, const char *text);

/* process.c: step 1, and who the caller is. */
extern bool caller_set_no_new_privs;
void setup(void);
void identify_caller(struct caller *caller);

/* files.c: the helper's own path and its policy file. */
struct policy_file {
    char path[4096];
    char text[MAX_POLICY_BYTES + 1];
    size_t length;
    int error;                    /* 0: read; else why not (the errno) */
    reason problem;               /* and in words */
};
void read_policy_file(struct policy_file *file);

/* privilege.c: capabilities, becoming the caller, the drop. */
capabilities permitted_capabilities(void);
void become_caller(const struct caller *caller, capabilities keep);
void keep_only(capabilities keep);
void raise_capabilities(capabilities caps);
void lower_capabilities(void);
capabilities socket_capabilities(const struct socket_request *socket);
void check_privilege(capabilities needed, capabilities available);
void drop_for_good(const struct caller *caller);

/* open_*.c: one kind each; each raises only the capabilities of the call that needs them. */
void set_option(unsigned index, int fd, int level, int name, const void *value, socklen_t length,
                const char *what, capabilities needs);
void set_options(unsigned index, int fd, int family, const struct socket_request *request);
void bind_address(unsigned index, int fd, const struct address *address, uint32_t port,
                  capabilities needs);
void lock_filter(unsigned index, int fd, const struct sock_filter *program, unsigned length);
int open_inet(unsigned index, const struct socket_request *request);
int open_raw(unsigned index, const struct socket_request *request);
int open_packet(unsigned index, const struct socket_request *request);
int open_tun_device(unsigned index, bool raise_dac);
int open_tun(unsigned index, const struct socket_request *request, const struct caller *caller,
             int fd);
#endif

#endif /* PROCKET_HELPER_H */
