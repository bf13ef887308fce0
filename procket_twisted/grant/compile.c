/*
 * The policy's meaning in a bind hook, and the instructions that hold it. Pure: no I/O, no
 * system call. It reads the rules the helper's own policy.c parsed, and restates rule_matches()
 * and policy_decision() (policy.c) for what the kernel shows a BPF_CGROUP_INET4_BIND or
 * BPF_CGROUP_INET6_BIND program: the caller's real uid and primary gid
 * (bpf_get_current_uid_gid), the socket's type and protocol, the address and port of the bind,
 * and the socket's bound device, mark and priority (struct bpf_sock).
 *
 * What a bind is, as a request to the helper: kind tcp (SOCK_STREAM, IPPROTO_TCP) or udp
 * (SOCK_DGRAM, IPPROTO_UDP), the socket's family, the address and port asked for, and the options
 * the socket set. Every other socket is never granted (the program returns 1: the kernel's own
 * checks decide). A socket is matched as every address it will accept, as socket_views() does:
 * "::ffff:a.b.c.d" is IPv4 a.b.c.d; "0.0.0.0" and "::" are wildcards (/0 networks); "::" is
 * matched as "::" and as "0.0.0.0", both must be allowed, because the program cannot see
 * IPV6_V6ONLY (a v6only socket is refused what a dual-stack one would be refused).
 *
 * Where the kernel hides what the helper reads, a rule is compiled to fail closed: an allow rule
 * matches fewer sockets than the helper's, a deny rule more. So the program grants a bind only
 * when the helper would allow it. Each case is a NOTE_* (grant.h) and is reported by `compile`:
 *   - uid 0 is never granted (the helper refuses root as a caller; root binds by itself);
 *   - group=: only the primary gid is visible. An allow rule matches the primary group only; a
 *     deny rule's group= is matched as every group, so it stops every grant below it that its
 *     other conditions cover;
 *   - device, mark, priority are visible, and the program grants only sockets bound to no device,
 *     with mark 0 and priority 0 (a value of 0 is the same as not asked: the kernel keeps no
 *     difference). So an allow rule with device= matches nothing (the helper still grants it); a
 *     deny rule with device=, or with options= or bounds only of device, mark and priority,
 *     matches no socket the program grants;
 *   - v6only, reuseport, freebind (which any process may set itself) are not visible. An allow
 *     rule without options= grants them all, so it matches whatever they are; an allow rule with
 *     options= that does not grant every one of them (v6only only for inet6 sockets) cannot be
 *     evaluated and matches nothing (the helper still grants it);
 *   - transparent, rcvbuf and sndbuf (SO_RCVBUFFORCE, SO_SNDBUFFORCE) are not visible, and only a
 *     process that holds CAP_NET_ADMIN can set them: it set them with its own privilege, and the
 *     grant lends it nothing but the port. An allow rule is compiled as if they were not asked
 *     for. A deny rule that names any option the program cannot see, in options= or as a bound
 *     (rcvbuf=, sndbuf=), is matched as if the socket asked for it (fail closed);
 *   - a link-local address (fe80::/10) and an interface- or link-local multicast one (ffx1::,
 *     ffx2::) are never granted: binding one binds the socket to the device of its scope id,
 *     which the program cannot see;
 *   - a bind whose address family is not the socket's (the kernel's old AF_UNSPEC form of
 *     0.0.0.0) is never granted.
 * Two consequences of reading the socket itself: where something else gives every socket a
 * device, a mark or a priority when it is created (a VRF's "ip vrf exec", which binds each
 * socket of its cgroup to the VRF device), the program grants nothing; and an MPTCP socket,
 * which the kernel binds through its first subflow (a TCP socket), is decided by the tcp rules.
 * Rules about other kinds only (raw, packet, tun, tap), or with proto= or ethertype=, match no
 * tcp or udp socket, in the helper as here: they are the helper's alone.
 *
 * The code. The prologue reads what the program needs, refuses (returns 1) what it never grants
 * and names the socket's view class: HOST4 (an IPv4 address, mapped or not), ANY4 (0.0.0.0, or
 * ::ffff:0.0.0.0), HOST6, or DUAL ("::": first as the IPv6 wildcard, then as the IPv4 one). Then
 * come chains of rules, one chain per view class; every rule is self-contained: it starts with
 * two guards (a decision was made; not this chain's view), which skip to its own end, and every
 * jump stays inside it, so no jump offset ever nears its 16-bit limit. A rule that matches sets
 * the decision (r6: 1 allow, 2 deny). In the inet6 program, the DUAL chain is followed by a step
 * that makes an "allow" of "::" go on to the ANY4 chain (both must be allowed), and a refusal
 * final. The epilogue returns 3 for an allow, 1 for everything else. The program never returns 0.
 *
 * The verifier. Each value a rule compares (a uid, a port range, an address's words) is tested
 * without a branch, and ORed into r3; one branch per condition then leaves the rule when none
 * matched. So a path through 256 rules holds a few branches per rule (the verifier keeps at most
 * 8192 pending ones), and the registers that hold the socket's facts are never narrowed by a
 * comparison (each test works on a copy in r0, changed by an ALU operation, which unlinks it):
 * the states of the verifier's paths differ only in the decision and the view class, which keeps
 * its work near the program's length. No rule's code is longer than GRANT_RULE_MAX_INSNS, so no
 * program can be longer than GRANT_MAX_INSNS (under 600,000, for 256 rules of 16 values of each
 * kind, which no 64 KiB policy file can hold); the kernel takes up to a million from a
 * privileged loader. Measured on Linux 6.18: a policy file of 50 KiB (256 rules of 8 users, 8
 * groups, 8 port ranges and 10 networks) gives 49,582 and 110,670 instructions, which the
 * verifier checks in 141,849 processed instructions (of its 1,000,000) and about a second.
 */
#include "grant.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const grant_family_names[GRANT_FAMILIES] = {"inet4", "inet6"};
const unsigned grant_attach_types[GRANT_FAMILIES] = {BPF_CGROUP_INET4_BIND, BPF_CGROUP_INET6_BIND};

/* ---- what each rule becomes ------------------------------------------------------------------ */

/* The options the program sees: it grants only sockets that have none of them (0 is none). */
#define SEEN_OPTIONS (OPTION(OPT_DEVICE) | OPTION(OPT_MARK) | OPTION(OPT_PRIORITY))
#define ALL_OPTIONS ((1u << OPTION_COUNT) - 1u)

/* Options the program cannot see that any process may set on its own socket. */
static unsigned unseen_free(enum grant_family family)
{
    unsigned bits = unprivileged_options() & ~SEEN_OPTIONS;
    return family == GRANT_INET4 ? bits & ~OPTION(OPT_V6ONLY) : bits; /* v6only: inet6 only */
}

/* Options the program cannot see that only a process holding CAP_NET_ADMIN can set. */
static unsigned unseen_privileged(void)
{
    return ALL_OPTIONS & ~SEEN_OPTIONS & ~unprivileged_options();
}

struct rule_plan plan_rule(const struct rule *rule, enum grant_family family)
{
    struct rule_plan plan = {true, 0, false, 0, 0};
    plan.kinds = (rule->kinds != 0 ? rule->kinds : (unsigned)KIND_INET) & (unsigned)KIND_INET;
    if (plan.kinds == 0 || rule->n_protos != 0 || rule->n_ethertypes != 0) {
        plan.matches = false;                 /* as in rule_matches: no tcp or udp socket */
        plan.notes = NOTE_NOT_INET;
        return plan;
    }
    if (rule->n_devices != 0) {               /* device_matches: only a socket bound to one */
        plan.matches = false;
        plan.notes |= rule->allow ? NOTE_ALLOW_DEVICE : NOTE_DENY_SEEN;
    }
    for (unsigned i = 0; i < OPTION_COUNT; i++) {
        if (rule->n_bounds[i] == 0 || rule->allow)
            continue;                         /* an allow's bound holds for an option not asked */
        if (OPTION(i) & SEEN_OPTIONS) {       /* a deny's bound matches only the option asked */
            plan.matches = false;
            plan.notes |= NOTE_DENY_SEEN;
        } else {
            plan.notes |= NOTE_DENY_UNSEEN;
        }
    }
    if (rule->allow) {
        unsigned granted = rule->has_options ? rule->options : unprivileged_options();
        plan.missing = unseen_free(family) & ~granted;
        if (plan.missing != 0) {
            plan.matches = false;
            plan.notes |= NOTE_ALLOW_UNSEEN;
        }
        if (rule->n_groups != 0) {
            plan.check_groups = true;
            plan.notes |= NOTE_PRIMARY_GROUP;
        }
    } else {
        if (rule->has_options) {
            if (rule->options & (unseen_free(family) | unseen_privileged())) {
                plan.notes |= NOTE_DENY_UNSEEN;
            } else {
                plan.matches = false;
                plan.notes |= NOTE_DENY_SEEN;
            }
        }
        if (rule->n_groups != 0)
            plan.notes |= NOTE_DENY_GROUP;
    }
    return plan;
}

const char *note_text(unsigned note)
{
    switch (note) {
    case NOTE_NOT_INET:
        return "it names no tcp or udp socket (kind=, proto=, ethertype=): the helper's alone";
    case NOTE_PRIMARY_GROUP:
        return "group= matches the primary group only (supplementary groups are not visible to "
               "the program; the helper grants them)";
    case NOTE_DENY_GROUP:
        return "group= is matched as every group (supplementary groups are not visible to the "
               "program), so the rule stops every grant below it that its other conditions cover";
    case NOTE_ALLOW_DEVICE:
        return "device=: the program grants only sockets bound to no device (the helper grants "
               "these)";
    case NOTE_DENY_SEEN:
        return "it matches only sockets the program never grants (bound to a device, with a mark "
               "or a priority, or v6only on an IPv4 socket)";
    case NOTE_ALLOW_UNSEEN:
        return "options= does not grant every option the program cannot see (v6only, reuseport, "
               "freebind; the helper grants these)";
    case NOTE_DENY_UNSEEN:
        return "it names an option the program cannot see (options=, rcvbuf=, sndbuf=), matched "
               "as if asked for";
    default:
        return "";
    }
}

/* ---- emitting instructions ------------------------------------------------------------------- */

enum { R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 };
#define R_PORT R1       /* the port of the bind, host order */
#define R_TYPE R2       /* the socket's type: SOCK_STREAM (tcp) or SOCK_DGRAM (udp) */
#define R_ANY R3        /* one of a condition's values matched: nonzero */
#define R_WORDS R4      /* an address's words that differ from a prefix's: 0 when none */
#define R_DECIDED R6    /* 0, DECIDED_ALLOW or DECIDED_DENY (r6 is the context until then) */
#define R_VIEW R7       /* the view class being decided */
#define R_UID R8        /* the caller's real uid */
#define R_GID R9        /* the caller's real (primary) gid */
#define DECIDED_ALLOW 1
#define DECIDED_DENY 2

/* The stack: the address of the bind, host order (zeroed first: every slot is written). */
#define SLOT_V4 (-4)                      /* the IPv4 address (also a mapped one's) */
#define SLOT_V6 (-8)                      /* the IPv6 address's word 0; word i at -8 - 4i */

enum view_class { VIEW_HOST4 = 1, VIEW_ANY4, VIEW_HOST6, VIEW_DUAL };

struct chain {
    unsigned view;
    unsigned family;                      /* FAMILY_INET or FAMILY_INET6: the view's family */
    bool wildcard;                        /* its network is /0 */
    int slot;                             /* host views: where the address's word 0 is */
};

#define MAX_PENDING 64
struct label {
    unsigned pending[MAX_PENDING];
    unsigned count;
};

struct emitter {
    struct grant_program *program;
    unsigned line;                        /* the policy line being compiled (0: the program's) */
};

static void put(struct emitter *e, uint8_t code, unsigned dst, unsigned src, int16_t off,
                int32_t imm)
{
    struct grant_program *p = e->program;
    if (p->count >= GRANT_MAX_INSNS) {
        p->overflow = true;
        return;
    }
    struct bpf_insn insn;
    memset(&insn, 0, sizeof insn);
    insn.code = code;
    insn.dst_reg = dst & 0xfu;
    insn.src_reg = src & 0xfu;
    insn.off = off;
    insn.imm = imm;
    p->insns[p->count] = insn;
    p->lines[p->count++] = e->line;
}

static void jump_to(struct emitter *e, struct label *label, uint8_t code, unsigned dst,
                    int32_t imm)
{
    if (label->count == MAX_PENDING) {
        e->program->overflow = true;
        return;
    }
    label->pending[label->count++] = e->program->count;
    put(e, code, dst, 0, 0, imm);
}

static void place(struct emitter *e, struct label *label)
{
    struct grant_program *p = e->program;
    for (unsigned i = 0; i < label->count; i++) {
        unsigned at = label->pending[i];
        unsigned distance = p->count - at - 1;
        if (at >= p->count || distance > INT16_MAX) {
            p->overflow = true;
            continue;
        }
        p->insns[at].off = (int16_t)distance;
    }
    label->count = 0;
}

static void mov64_reg(struct emitter *e, unsigned dst, unsigned src)
{
    put(e, BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0);
}
static void mov64_imm(struct emitter *e, unsigned dst, int32_t imm)
{
    put(e, BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm);
}
static void mov32_reg(struct emitter *e, unsigned dst, unsigned src)
{
    put(e, BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0);
}
static void mov32_imm(struct emitter *e, unsigned dst, int32_t imm)
{
    put(e, BPF_ALU | BPF_MOV | BPF_K, dst, 0, 0, imm);
}
static void alu32_imm(struct emitter *e, uint8_t op, unsigned dst, uint32_t imm)
{
    put(e, (uint8_t)(BPF_ALU | op | BPF_K), dst, 0, 0, (int32_t)imm);
}
static void alu64_imm(struct emitter *e, uint8_t op, unsigned dst, int32_t imm)
{
    put(e, (uint8_t)(BPF_ALU64 | op | BPF_K), dst, 0, 0, imm);
}
static void alu64_reg(struct emitter *e, uint8_t op, unsigned dst, unsigned src)
{
    put(e, (uint8_t)(BPF_ALU64 | op | BPF_X), dst, src, 0, 0);
}
/* DST = the big-endian value of its low BITS bits: network order to a number. */
static void from_network(struct emitter *e, unsigned dst, int32_t bits)
{
    put(e, BPF_ALU | BPF_END | BPF_TO_BE, dst, 0, 0, bits);
}
static void load(struct emitter *e, uint8_t size, unsigned dst, unsigned src, size_t offset)
{
    put(e, (uint8_t)(BPF_LDX | BPF_MEM | size), dst, src, (int16_t)offset, 0);
}
static void load_stack(struct emitter *e, unsigned dst, int slot)
{
    put(e, BPF_LDX | BPF_MEM | BPF_W, dst, R10, (int16_t)slot, 0);
}
static void store_stack(struct emitter *e, int slot, unsigned src)
{
    put(e, BPF_STX | BPF_MEM | BPF_W, R10, src, (int16_t)slot, 0);
}
static void zero_stack(struct emitter *e, int slot)
{
    put(e, BPF_ST | BPF_MEM | BPF_W, R10, 0, (int16_t)slot, 0);
}
/* if (u32) DST OP IMM goto LABEL */
static void if32(struct emitter *e, uint8_t op, unsigned dst, uint32_t imm, struct label *label)
{
    jump_to(e, label, (uint8_t)(BPF_JMP32 | op | BPF_K), dst, (int32_t)imm);
}
/* if DST OP IMM goto LABEL (64 bits) */
static void if64(struct emitter *e, uint8_t op, unsigned dst, int32_t imm, struct label *label)
{
    jump_to(e, label, (uint8_t)(BPF_JMP | op | BPF_K), dst, imm);
}
static void go(struct emitter *e, struct label *label)
{
    jump_to(e, label, BPF_JMP | BPF_JA, 0, 0);
}
static void leave(struct emitter *e, int32_t value)
{
    mov64_imm(e, R0, value);
    put(e, BPF_JMP | BPF_EXIT, 0, 0, 0, 0);
}

/* ---- the code of the rules ------------------------------------------------------------------- */

/* R_ANY |= (LOW <= wREG <= HIGH), without a branch: r0 = (u32)(REG - LOW) zero-extended, which
   is below HIGH - LOW + 1 exactly when REG is in the range; its difference with that bound is
   negative then, and its sign bit is the answer. */
static void or_in_range(struct emitter *e, unsigned reg, uint32_t low, uint32_t high)
{
    mov32_reg(e, R0, reg);
    alu32_imm(e, BPF_SUB, R0, low);
    alu64_imm(e, BPF_SUB, R0, (int32_t)(high - low + 1u));
    alu64_imm(e, BPF_RSH, R0, 63);
    alu64_reg(e, BPF_OR, R_ANY, R0);
}

static uint32_t word_of(const struct address *address, unsigned word)
{
    const unsigned char *b = address->bytes + 4 * word;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* R_ANY |= (the view's host address is in PREFIX), PREFIX of the view's family, 1 bit or more:
   each word the prefix covers, masked, XOR its value, ORed into R_WORDS (0: all equal). */
static void or_in_prefix(struct emitter *e, const struct chain *chain, const struct prefix *prefix)
{
    mov64_imm(e, R_WORDS, 0);
    for (unsigned word = 0; word * 32 < prefix->bits; word++) {
        unsigned covered = prefix->bits - word * 32 >= 32 ? 32 : prefix->bits - word * 32;
        uint32_t mask = covered == 32 ? 0xffffffffu : ~(0xffffffffu >> covered);
        load_stack(e, R0, chain->slot - 4 * (int)word);
        if (mask != 0xffffffffu)
            alu32_imm(e, BPF_AND, R0, mask);
        alu32_imm(e, BPF_XOR, R0, word_of(&prefix->address, word) & mask);
        alu64_reg(e, BPF_OR, R_WORDS, R0);
    }
    alu64_imm(e, BPF_SUB, R_WORDS, 1);
    alu64_imm(e, BPF_RSH, R_WORDS, 63);
    alu64_reg(e, BPF_OR, R_ANY, R_WORDS);
}

/*
 * One rule, for one view: rule_matches() of policy.c, for a tcp or udp socket whose options are
 * what plan_rule() says. Emits nothing when the rule cannot match this view.
 */
static void compile_rule(struct emitter *e, const struct rule *rule, const struct chain *chain,
                         enum grant_family family)
{
    struct rule_plan plan = plan_rule(rule, family);
    if (!plan.matches || (rule->families != 0 && !(rule->families & chain->family)))
        return;
    bool check_addresses = false;
    if (rule->n_addresses != 0) {
        /* address_matches: an allow's prefix must contain the view's network, a deny's overlap
           it. A wildcard view (/0) is contained only by a /0, and overlaps every prefix of its
           family; a host view is in a prefix, or not, the same for allow and deny. */
        bool some = false, every = false;
        for (unsigned i = 0; i < rule->n_addresses; i++) {
            const struct prefix *prefix = &rule->addresses[i];
            if (prefix->address.family != chain->family)
                continue;
            some = true;
            if (prefix->bits == 0 || (chain->wildcard && !rule->allow))
                every = true;
        }
        if (!some || (chain->wildcard && !every))
            return;
        check_addresses = !every;
    }
    struct label end = {{0}, 0};
    e->line = rule->line;
    if64(e, BPF_JNE, R_DECIDED, 0, &end);
    if32(e, BPF_JNE, R_VIEW, chain->view, &end);
    if (plan.kinds != KIND_INET) {
        mov32_reg(e, R0, R_TYPE);
        alu32_imm(e, BPF_SUB, R0, plan.kinds == KIND_TCP ? SOCK_STREAM : SOCK_DGRAM);
        if32(e, BPF_JNE, R0, 0, &end);
    }
    if (rule->n_users != 0) {
        mov64_imm(e, R_ANY, 0);
        for (unsigned i = 0; i < rule->n_users; i++)
            or_in_range(e, R_UID, rule->users[i], rule->users[i]);
        if64(e, BPF_JEQ, R_ANY, 0, &end);
    }
    if (plan.check_groups) {
        mov64_imm(e, R_ANY, 0);
        for (unsigned i = 0; i < rule->n_groups; i++)
            or_in_range(e, R_GID, rule->groups[i], rule->groups[i]);
        if64(e, BPF_JEQ, R_ANY, 0, &end);
    }
    if (rule->n_ports != 0) {
        mov64_imm(e, R_ANY, 0);
        for (unsigned i = 0; i < rule->n_ports; i++)
            or_in_range(e, R_PORT, rule->ports[i].low, rule->ports[i].high);
        if64(e, BPF_JEQ, R_ANY, 0, &end);
    }
    if (check_addresses) {
        mov64_imm(e, R_ANY, 0);
        for (unsigned i = 0; i < rule->n_addresses; i++)
            if (rule->addresses[i].address.family == chain->family)
                or_in_prefix(e, chain, &rule->addresses[i]);
        if64(e, BPF_JEQ, R_ANY, 0, &end);
    }
    mov64_imm(e, R_DECIDED, rule->allow ? DECIDED_ALLOW : DECIDED_DENY);
    place(e, &end);
    e->line = 0;
}

/* ---- the program ----------------------------------------------------------------------------- */

static void prologue(struct emitter *e, enum grant_family family, struct label *refuse)
{
    struct label stream = {{0}, 0}, inet = {{0}, 0}, classed = {{0}, 0};
    mov64_reg(e, R6, R1);                                 /* the context */
    for (int slot = SLOT_V4; slot >= SLOT_V6 - 12; slot -= 4)
        zero_stack(e, slot);
    put(e, BPF_JMP | BPF_CALL, 0, 0, 0, BPF_FUNC_get_current_uid_gid);
    mov32_reg(e, R_UID, R0);                              /* real uid: the low half */
    mov64_reg(e, R_GID, R0);
    alu64_imm(e, BPF_RSH, R_GID, 32);                     /* real gid: the high half */
    if32(e, BPF_JEQ, R_UID, 0, refuse);                   /* root: the helper refuses root */
    load(e, BPF_W, R0, R6, offsetof(struct bpf_sock_addr, user_family));
    if32(e, BPF_JNE, R0, family == GRANT_INET4 ? AF_INET : AF_INET6, refuse);
    /* tcp: SOCK_STREAM with IPPROTO_TCP; udp: SOCK_DGRAM with IPPROTO_UDP (0: the default) */
    load(e, BPF_W, R0, R6, offsetof(struct bpf_sock_addr, type));
    load(e, BPF_W, R1, R6, offsetof(struct bpf_sock_addr, protocol));
    if32(e, BPF_JEQ, R0, SOCK_STREAM, &stream);
    if32(e, BPF_JNE, R0, SOCK_DGRAM, refuse);
    if32(e, BPF_JEQ, R1, 0, &inet);
    if32(e, BPF_JNE, R1, IPPROTO_UDP, refuse);
    go(e, &inet);
    place(e, &stream);
    if32(e, BPF_JEQ, R1, 0, &inet);
    if32(e, BPF_JNE, R1, IPPROTO_TCP, refuse);
    place(e, &inet);
    /* read again: a value the checks above have not narrowed (see the verifier, at the top) */
    load(e, BPF_W, R_TYPE, R6, offsetof(struct bpf_sock_addr, type));
    /* what the program sees of the options: it grants none of them */
    load(e, BPF_DW, R0, R6, offsetof(struct bpf_sock_addr, sk));
    load(e, BPF_W, R1, R0, offsetof(struct bpf_sock, bound_dev_if));
    if32(e, BPF_JNE, R1, 0, refuse);
    load(e, BPF_W, R1, R0, offsetof(struct bpf_sock, mark));
    if32(e, BPF_JNE, R1, 0, refuse);
    load(e, BPF_W, R1, R0, offsetof(struct bpf_sock, priority));
    if32(e, BPF_JNE, R1, 0, refuse);
    load(e, BPF_W, R_PORT, R6, offsetof(struct bpf_sock_addr, user_port));
    from_network(e, R_PORT, 16);
    if (family == GRANT_INET4) {
        load(e, BPF_W, R0, R6, offsetof(struct bpf_sock_addr, user_ip4));
        from_network(e, R0, 32);
        store_stack(e, SLOT_V4, R0);
        mov32_imm(e, R_VIEW, VIEW_HOST4);
        if32(e, BPF_JNE, R0, 0, &classed);
        mov32_imm(e, R_VIEW, VIEW_ANY4);
    } else {
        struct label mapped = {{0}, 0}, unicast = {{0}, 0};
        static const unsigned into[4] = {R3, R4, R5, R0};  /* words 0 to 3 */
        for (unsigned word = 0; word < 4; word++) {
            load(e, BPF_W, into[word], R6, offsetof(struct bpf_sock_addr, user_ip6) + 4 * word);
            from_network(e, into[word], 32);
            store_stack(e, SLOT_V6 - 4 * (int)word, into[word]);
        }
        store_stack(e, SLOT_V4, R0);                      /* a mapped address's IPv4 address */
        if32(e, BPF_JNE, R3, 0, &unicast);
        if32(e, BPF_JNE, R4, 0, &unicast);
        if32(e, BPF_JEQ, R5, 0xffff, &mapped);
        if32(e, BPF_JNE, R5, 0, &unicast);
        if32(e, BPF_JNE, R0, 0, &unicast);
        mov32_imm(e, R_VIEW, VIEW_DUAL);                  /* "::" */
        go(e, &classed);
        place(e, &mapped);                                /* "::ffff:a.b.c.d" is IPv4 */
        mov32_imm(e, R_VIEW, VIEW_HOST4);
        if32(e, BPF_JNE, R0, 0, &classed);
        mov32_imm(e, R_VIEW, VIEW_ANY4);
        go(e, &classed);
        place(e, &unicast);                               /* scoped: the scope id is a device */
        mov32_reg(e, R0, R3);
        alu32_imm(e, BPF_AND, R0, 0xffc00000u);
        if32(e, BPF_JEQ, R0, 0xfe800000u, refuse);        /* fe80::/10 */
        mov32_reg(e, R0, R3);
        alu32_imm(e, BPF_AND, R0, 0xff0f0000u);
        if32(e, BPF_JEQ, R0, 0xff010000u, refuse);        /* ffx1:: interface-local */
        if32(e, BPF_JEQ, R0, 0xff020000u, refuse);        /* ffx2:: link-local */
        mov32_imm(e, R_VIEW, VIEW_HOST6);
    }
    place(e, &classed);
    mov64_imm(e, R_DECIDED, 0);
}

/* "::" is allowed only when both of its views are: an allow of the IPv6 wildcard goes on to the
   IPv4 wildcard's chain; anything else refuses it. */
static void dual_second_view(struct emitter *e)
{
    struct label done = {{0}, 0}, allowed = {{0}, 0};
    if32(e, BPF_JNE, R_VIEW, VIEW_DUAL, &done);
    if64(e, BPF_JEQ, R_DECIDED, DECIDED_ALLOW, &allowed);
    mov64_imm(e, R_DECIDED, DECIDED_DENY);
    go(e, &done);
    place(e, &allowed);
    mov64_imm(e, R_DECIDED, 0);
    mov32_imm(e, R_VIEW, VIEW_ANY4);
    place(e, &done);
}

bool grant_program_new(struct grant_program *program, enum grant_family family)
{
    memset(program, 0, sizeof *program);
    program->family = family;
    program->insns = calloc(GRANT_MAX_INSNS, sizeof *program->insns);
    program->lines = calloc(GRANT_MAX_INSNS, sizeof *program->lines);
    if (program->insns == NULL || program->lines == NULL) {
        grant_program_free(program);
        return false;
    }
    return true;
}

void grant_program_free(struct grant_program *program)
{
    free(program->insns);
    free(program->lines);
    program->insns = NULL;
    program->lines = NULL;
}

bool compile_policy(const struct policy *policy, struct grant_program *program)
{
    static const struct chain chains4[] = {
        {VIEW_ANY4, FAMILY_INET, true, 0},
        {VIEW_HOST4, FAMILY_INET, false, SLOT_V4},
    };
    static const struct chain chains6[] = {
        {VIEW_HOST6, FAMILY_INET6, false, SLOT_V6},
        {VIEW_DUAL, FAMILY_INET6, true, 0},
        {VIEW_ANY4, FAMILY_INET, true, 0},
        {VIEW_HOST4, FAMILY_INET, false, SLOT_V4},
    };
    bool six = program->family == GRANT_INET6;
    const struct chain *chains = six ? chains6 : chains4;
    size_t n_chains = six ? COUNT(chains6) : COUNT(chains4);
    struct emitter e = {program, 0};
    struct label refuse = {{0}, 0}, body = {{0}, 0}, refused = {{0}, 0};
    program->count = 0;
    program->overflow = false;

    prologue(&e, program->family, &refuse);
    go(&e, &body);
    place(&e, &refuse);
    leave(&e, GRANT_NOT_GRANTED);
    place(&e, &body);
    for (size_t c = 0; c < n_chains; c++) {
        for (unsigned i = 0; i < policy->count; i++)
            compile_rule(&e, &policy->rules[i], &chains[c], program->family);
        if (chains[c].view == VIEW_DUAL)
            dual_second_view(&e);
    }
    mov64_imm(&e, R0, GRANT_NOT_GRANTED);
    if64(&e, BPF_JNE, R_DECIDED, DECIDED_ALLOW, &refused);
    mov64_imm(&e, R0, GRANT_GRANTED);
    place(&e, &refused);
    put(&e, BPF_JMP | BPF_EXIT, 0, 0, 0, 0);

    uint32_t hash = 2166136261u;                          /* FNV-1a of the code: its name */
    const unsigned char *bytes = (const unsigned char *)program->insns;
    for (size_t i = 0; i < sizeof *program->insns * program->count; i++)
        hash = (hash ^ bytes[i]) * 16777619u;
    (void)snprintf(program->name, sizeof program->name, "grant%c_%08x", six ? '6' : '4',
                   (unsigned)hash);
    return !program->overflow;
}
