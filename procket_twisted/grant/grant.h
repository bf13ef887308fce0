/*
 * procket-grant: the policy's TCP and UDP rules, compiled into two cgroup BPF bind hooks
 * (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_BIND and BPF_CGROUP_INET6_BIND) that let a
 * bind() the policy allows skip the kernel's CAP_NET_BIND_SERVICE check (Linux 5.12 and later).
 *
 * The files, in reading order:
 *   grant.h    this: what the files share;
 *   compile.c  the policy's meaning in a bind hook: what each rule becomes, and the instructions
 *              (pure: no I/O, no system call; it reads the structures of the helper's policy.c);
 *   show.c     the instructions as text, for `procket-grant compile` (pure);
 *   bpf.c      the bpf(2) calls, the cgroup v2 and bpffs mounts (the only file with system calls
 *              besides main.c's reading of the policy file);
 *   main.c     the command line (its usage is at its top).
 * The policy is parsed by the helper's own policy.c (linked, with kinds.c, text.c and request.c,
 * exactly as the helper and the fuzzers link them): its grammar and its matching exist once.
 *
 * procket-grant is run by root and is never setuid: it reads no environment, and a policy file
 * it loads must be root's (main.c).
 */
#ifndef PROCKET_GRANT_H
#define PROCKET_GRANT_H

#include "helper.h"

#include <linux/bpf.h>

/* The two programs: one per bind hook (a program is loaded for one attach type only). */
enum grant_family { GRANT_INET4, GRANT_INET6, GRANT_FAMILIES };
extern const char *const grant_family_names[GRANT_FAMILIES];   /* "inet4", "inet6" */
extern const unsigned grant_attach_types[GRANT_FAMILIES];

/* The program's answers: the only two values it ever returns (never 0, which refuses a bind). */
#define GRANT_NOT_GRANTED 1  /* go on with the kernel's own checks */
#define GRANT_GRANTED 3      /* allowed, and this bind skips the CAP_NET_BIND_SERVICE check */

/*
 * How a rule differs from the helper's meaning in a bind hook (compile.c says why for each).
 * A rule is compiled to match FEWER sockets than the helper's rule when it allows, and MORE when
 * it denies; so the program grants a bind only when the helper would allow it.
 */
enum {
    NOTE_NOT_INET = 1u << 0,          /* it names no tcp or udp kind, or proto=, ethertype= */
    NOTE_PRIMARY_GROUP = 1u << 1,     /* allow group=: the primary group only */
    NOTE_DENY_GROUP = 1u << 2,        /* deny group=: matched as every group (fail closed) */
    NOTE_ALLOW_DEVICE = 1u << 3,      /* allow device=: matches nothing (falls back) */
    NOTE_DENY_SEEN = 1u << 4,         /* deny device=, or options=/bounds only of mark,
                                         priority, device: matches no socket the program grants */
    NOTE_ALLOW_UNSEEN = 1u << 5,      /* allow options= without v6only, reuseport, freebind:
                                         matches nothing (falls back) */
    NOTE_DENY_UNSEEN = 1u << 6,       /* deny options= or bounds naming what the program cannot
                                         see: matched as asked for (fail closed) */
};

/* What one rule becomes in one program. */
struct rule_plan {
    bool matches;                     /* false: compiled to match no socket of this program */
    unsigned kinds;                   /* KIND_TCP, KIND_UDP or both */
    bool check_groups;                /* allow group=: the primary gid must be one of them */
    unsigned notes;                   /* NOTE_* */
    unsigned missing;                 /* NOTE_ALLOW_UNSEEN: the OPTION() bits not granted */
};

struct grant_program {
    enum grant_family family;
    struct bpf_insn *insns;           /* capacity GRANT_MAX_INSNS (grant_program_new) */
    unsigned *lines;                  /* per instruction: the policy line it is code of, or 0 */
    unsigned count;
    bool overflow;                    /* more than the capacity, or a jump out of range */
    char name[BPF_OBJ_NAME_LEN];      /* "grant4_" and 8 hex digits of a hash of the code */
};

/*
 * The largest program (compile.c: the bound of one rule, times the rules, times the chains of
 * the inet6 program): under the kernel's 1,000,000 instructions for a privileged loader.
 */
#define GRANT_RULE_MAX_INSNS 576u
#define GRANT_CHAINS 4u
#define GRANT_MAX_INSNS (GRANT_RULE_MAX_INSNS * MAX_RULES * GRANT_CHAINS + 128u)

/* compile.c */
struct rule_plan plan_rule(const struct rule *rule, enum grant_family family);
bool grant_program_new(struct grant_program *program, enum grant_family family);
void grant_program_free(struct grant_program *program);
bool compile_policy(const struct policy *policy, struct grant_program *program);
const char *note_text(unsigned note);

/* show.c */
void format_insn(const struct bpf_insn *insn, unsigned index, char *out, size_t size);

/* bpf.c: each returns -1 with errno set on failure (and, for loading, the verifier's log). */
int grant_load(const struct grant_program *program, char *log, size_t log_size);
int grant_link_create(int program_fd, int cgroup_fd, enum grant_family family);
int grant_link_update(int link_fd, int program_fd);
int grant_link_detach(int link_fd);
int grant_pin(int fd, const char *path);
int grant_pinned(const char *path);
int grant_query(int cgroup_fd, enum grant_family family, bool effective, uint32_t *ids,
                uint32_t *count);
int grant_link_info(int link_fd, struct bpf_link_info *info);
int grant_program_info(uint32_t id, struct bpf_prog_info *info);
bool cgroup2_mount(char *out, size_t size, reason why);
bool ensure_bpffs(const char *directory, bool mount_it, bool *mounted, reason why);

#endif /* PROCKET_GRANT_H */
