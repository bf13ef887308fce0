/*
 * procket-grant: the procket-helper policy's TCP and UDP rules, enforced by the kernel. It
 * compiles them into two cgroup BPF bind hooks that let a bind() the policy allows skip the
 * CAP_NET_BIND_SERVICE check (Linux 5.12 and later), so an unprivileged program binds a
 * privileged port itself, with no helper, under no_new_privs, in any language; and it installs,
 * replaces, removes and describes those hooks. Run by root; never setuid.
 *
 *   procket-grant compile POLICY-FILE
 *       Print what each rule became in each program ("rule LINE: TEXT", then one line per
 *       program: "  inet4 FATE[: why]", FATE one of exact, narrowed (an allow held for fewer
 *       sockets than the helper grants), fail-closed (a deny matched as more sockets),
 *       fallback (an allow the program cannot evaluate: it matches nothing, the helper still
 *       grants it), ignored (no tcp or udp socket: the helper's alone)), then both programs, one
 *       instruction a line, under a comment naming the policy line each rule's code is from.
 *       Loads nothing; any user may run it.
 *   procket-grant apply POLICY-FILE [--cgroup PATH] [--bpffs DIR]
 *       Load both programs (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, for BPF_CGROUP_INET4_BIND and
 *       BPF_CGROUP_INET6_BIND) and attach them to the cgroup v2 directory PATH (default: the
 *       root of the cgroup v2 hierarchy, found in /proc/self/mountinfo) with bpf links, which
 *       run beside every other program attached there (a cgroup's links are multi-attach),
 *       pinned in the bpffs DIR (default /sys/fs/bpf; a bpffs is mounted there when there is
 *       none) as DIR/procket-grant/cgroup-ID/inet4 and .../inet6, ID being the cgroup's id (its
 *       inode number). When those pins exist, each link's program is replaced in one step
 *       (BPF_LINK_UPDATE): every bind runs the old program or the new one, never none, and the
 *       cgroup keeps one link per hook. The policy file must be root's (owned by root, written
 *       by no one else); a policy with an error changes nothing.
 *   procket-grant remove [--cgroup PATH] [--bpffs DIR]
 *       Detach both links (BPF_LINK_DETACH) and remove their pins.
 *   procket-grant status [--cgroup PATH] [--bpffs DIR]
 *       One "key value..." line each: the cgroup and its id; per program, the pinned link and
 *       its program (id, name); per hook, the programs attached to the cgroup itself and those
 *       that run for its sockets, its ancestors' included (BPF_PROG_QUERY); last, "state
 *       installed", "state absent" or "state partial".
 *
 * Exit status: 0 done (status: both programs pinned and attached); 1 usage; 2 the policy file
 * cannot be read, is not root's, or has an error (the message names its line, in the helper's own
 * words); 3 a system call failed (the message names it; a refused program comes with the end of
 * the verifier's log); 4 nothing is installed for that cgroup (status, remove); 5 status: it is
 * installed only in part (run apply again).
 *
 * The toolchain, chosen: the instructions are generated here, from the rules that the helper's
 * own policy.c parsed, and loaded with the bpf(2) system call. Nothing else is needed at run time:
 * no clang or LLVM, no libbpf, no ELF or BTF, no kernel headers; the tool is one small C program
 * built like the helper, from the helper's files. A BPF C program compiled by clang would have
 * needed either the policy translated into C source at apply time (a second writer of the
 * policy's meaning, and a compiler on every machine that applies a policy) or a fixed program
 * that reads the rules from BPF maps (a second matcher written in BPF C, and a policy change
 * that updates many map entries one by one, where a new program replaces the old one in one
 * step). The programs read only fields of the stable uapi contexts (struct bpf_sock_addr,
 * struct bpf_sock), which the kernel rewrites itself, so they need no CO-RE relocation; and
 * they are small enough to print and audit (compile).
 */
#include "grant.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

enum { EXIT_USAGE = 1, EXIT_POLICY, EXIT_SYSTEM, EXIT_ABSENT, EXIT_PARTIAL };

#define DEFAULT_BPFFS "/sys/fs/bpf"
#define PIN_DIRECTORY "procket-grant"
#define MAX_IDS 64

static const char *const attach_names[GRANT_FAMILIES] = {
    "BPF_CGROUP_INET4_BIND", "BPF_CGROUP_INET6_BIND",
};

struct arguments {
    const char *command, *policy, *cgroup, *bpffs;
};

static _Noreturn void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static _Noreturn void die(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("procket-grant: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(status);
}

static _Noreturn void usage(void)
{
    fputs("usage: procket-grant compile POLICY-FILE\n"
          "       procket-grant apply POLICY-FILE [--cgroup PATH] [--bpffs DIR]\n"
          "       procket-grant remove [--cgroup PATH] [--bpffs DIR]\n"
          "       procket-grant status [--cgroup PATH] [--bpffs DIR]\n", stderr);
    exit(EXIT_USAGE);
}

static void parse_arguments(int argc, char *argv[], struct arguments *out)
{
    memset(out, 0, sizeof *out);
    if (argc < 2)
        usage();
    out->command = argv[1];
    bool compile = strcmp(out->command, "compile") == 0, apply = strcmp(out->command, "apply") == 0;
    if (!compile && !apply && strcmp(out->command, "remove") != 0 &&
        strcmp(out->command, "status") != 0)
        usage();
    for (int i = 2; i < argc; i++) {
        const char **option = NULL;
        if (strcmp(argv[i], "--cgroup") == 0 && !compile)
            option = &out->cgroup;
        else if (strcmp(argv[i], "--bpffs") == 0 && !compile)
            option = &out->bpffs;
        if (option != NULL) {
            if (i + 1 == argc || *option != NULL)
                usage();
            *option = argv[++i];
        } else if ((compile || apply) && out->policy == NULL && argv[i][0] != '-') {
            out->policy = argv[i];
        } else {
            usage();
        }
    }
    if ((compile || apply) && out->policy == NULL)
        usage();
}

/* ---- the policy ------------------------------------------------------------------------------ */

static char policy_text[MAX_POLICY_BYTES + 1];
static size_t policy_length;
static struct policy policy;

/* Read and parse PATH; for apply (ROOTS_ONLY), only a file that root alone can write. */
static void read_policy(const char *path, bool roots_only)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct stat info;
    if (fd < 0)
        die(EXIT_POLICY, "cannot open the policy %s: %s", path, strerror(errno));
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode))
        die(EXIT_POLICY, "the policy %s is not a regular file", path);
    if (roots_only && (info.st_uid != 0 || (info.st_mode & 022) != 0))
        die(EXIT_POLICY, "the policy %s is not root's alone (owner %u, mode %03o): whoever can "
            "write it would decide who binds privileged ports", path, (unsigned)info.st_uid,
            (unsigned)(info.st_mode & 0777));
    policy_length = 0;
    for (;;) {
        ssize_t got = read(fd, policy_text + policy_length, sizeof policy_text - policy_length);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            die(EXIT_POLICY, "cannot read the policy %s: %s", path, strerror(errno));
        if (got == 0)
            break;
        policy_length += (size_t)got;
        if (policy_length > MAX_POLICY_BYTES)
            die(EXIT_POLICY, "the policy %s is longer than %d bytes", path, MAX_POLICY_BYTES);
    }
    close(fd);
    reason why;
    if (!parse_policy(policy_text, policy_length, &policy, why))
        die(EXIT_POLICY, "policy %s has an error, so nothing was changed: %s", path, why);
}

/* The text of line NUMBER of the policy, without the blanks around it. */
static void line_text(unsigned number, char *out, size_t size)
{
    size_t start = 0;
    for (unsigned line = 1; line < number && start < policy_length; line++) {
        const char *end = memchr(policy_text + start, '\n', policy_length - start);
        start = end != NULL ? (size_t)(end - policy_text) + 1 : policy_length;
    }
    const char *end = memchr(policy_text + start, '\n', policy_length - start);
    size_t length = (end != NULL ? (size_t)(end - policy_text) : policy_length) - start;
    while (length > 0 && (policy_text[start] == ' ' || policy_text[start] == '\t')) {
        start++;
        length--;
    }
    while (length > 0 && (policy_text[start + length - 1] == '\r' ||
                          policy_text[start + length - 1] == ' ' ||
                          policy_text[start + length - 1] == '\t'))
        length--;
    if (length >= size)
        length = size - 1;
    memcpy(out, policy_text + start, length);
    out[length] = '\0';
}

static void compile_programs(struct grant_program programs[GRANT_FAMILIES])
{
    for (unsigned f = 0; f < GRANT_FAMILIES; f++) {
        if (!grant_program_new(&programs[f], (enum grant_family)f))
            die(EXIT_SYSTEM, "out of memory");
        if (!compile_policy(&policy, &programs[f]))
            die(EXIT_POLICY, "the %s program does not fit in %u instructions",
                grant_family_names[f], GRANT_MAX_INSNS);
    }
}

static const char *fate(const struct rule *rule, const struct rule_plan *plan)
{
    if (plan->notes & NOTE_NOT_INET)
        return "ignored";
    if (!plan->matches)
        return rule->allow ? "fallback" : "exact";
    if (plan->notes & NOTE_PRIMARY_GROUP)
        return "narrowed";
    if (plan->notes & (NOTE_DENY_GROUP | NOTE_DENY_UNSEEN))
        return "fail-closed";
    return "exact";
}

static void print_rules(void)
{
    for (unsigned i = 0; i < policy.count; i++) {
        const struct rule *rule = &policy.rules[i];
        char text[MAX_POLICY_LINE + 1];
        line_text(rule->line, text, sizeof text);
        printf("rule %u: %s\n", rule->line, text);
        for (unsigned f = 0; f < GRANT_FAMILIES; f++) {
            struct rule_plan plan = plan_rule(rule, (enum grant_family)f);
            printf("  %s %s", grant_family_names[f], fate(rule, &plan));
            const char *separator = ": ";
            for (unsigned note = 1; note != 0 && note <= plan.notes; note <<= 1) {
                if (!(plan.notes & note))
                    continue;
                printf("%s%s", separator, note_text(note));
                separator = "; ";
                if (note == NOTE_ALLOW_UNSEEN) {
                    const char *comma = " (not granted: ";
                    for (unsigned o = 0; o < OPTION_COUNT; o++)
                        if (plan.missing & OPTION(o)) {
                            printf("%s%s", comma, options[o].name);
                            comma = ",";
                        }
                    printf(")");
                }
            }
            printf("\n");
        }
    }
}

static void print_program(const struct grant_program *program)
{
    printf("program %s %s %s %u instructions\n", grant_family_names[program->family],
           attach_names[program->family], program->name, program->count);
    for (unsigned i = 0; i < program->count; i++) {
        if (i == 0 || program->lines[i] != program->lines[i - 1]) {
            if (program->lines[i] == 0) {
                printf("  ; the program's own code\n");
            } else {
                char text[MAX_POLICY_LINE + 1];
                line_text(program->lines[i], text, sizeof text);
                printf("  ; line %u: %s\n", program->lines[i], text);
            }
        }
        char line[160];
        format_insn(&program->insns[i], i, line, sizeof line);
        printf("%s\n", line);
    }
}

static int compile_command(const struct arguments *arguments)
{
    struct grant_program programs[GRANT_FAMILIES];
    read_policy(arguments->policy, false);
    compile_programs(programs);
    printf("policy %s: %u rules\n", arguments->policy, policy.count);
    print_rules();
    for (unsigned f = 0; f < GRANT_FAMILIES; f++) {
        print_program(&programs[f]);
        grant_program_free(&programs[f]);
    }
    return 0;
}

/* ---- the cgroup and the pins ----------------------------------------------------------------- */

struct target {
    char cgroup[PATH_MAX];
    int cgroup_fd;
    unsigned long long id;
    char bpffs[PATH_MAX];
    bool have_bpffs;                   /* false: no bpffs there, so nothing is pinned */
    char root[PATH_MAX];               /* BPFFS/procket-grant */
    char directory[PATH_MAX];          /* BPFFS/procket-grant/cgroup-ID */
    char pins[GRANT_FAMILIES][PATH_MAX];
    int lock_fd;
};

static void path_join(char *out, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void path_join(char *out, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    int length = vsnprintf(out, PATH_MAX, format, ap);
    va_end(ap);
    if (length < 0 || length >= PATH_MAX)
        die(EXIT_USAGE, "a path is longer than %d bytes", PATH_MAX - 1);
}

static void make_directory(const char *path)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        die(EXIT_SYSTEM, "cannot create %s: %s", path, strerror(errno));
}

/* The cgroup, the pins' names; with CREATE, the bpffs (mounted if need be) and the directories.
   Concurrent runs take turns: the pins' root directory is locked (flock) while one works. */
static void open_target(const struct arguments *arguments, bool create, struct target *t)
{
    reason why;
    memset(t, 0, sizeof *t);
    t->lock_fd = -1;
    if (arguments->cgroup != NULL)
        path_join(t->cgroup, "%s", arguments->cgroup);
    else if (!cgroup2_mount(t->cgroup, sizeof t->cgroup, why))
        die(EXIT_SYSTEM, "%s", why);
    t->cgroup_fd = open(t->cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct statfs fs;
    struct stat info;
    if (t->cgroup_fd < 0)
        die(EXIT_SYSTEM, "cannot open the cgroup %s: %s", t->cgroup, strerror(errno));
    if (fstatfs(t->cgroup_fd, &fs) != 0 || fstat(t->cgroup_fd, &info) != 0 ||
        (unsigned long)fs.f_type != (unsigned long)CGROUP2_SUPER_MAGIC)
        die(EXIT_SYSTEM, "%s is not a directory of the cgroup v2 hierarchy", t->cgroup);
    t->id = (unsigned long long)info.st_ino;
    path_join(t->bpffs, "%s", arguments->bpffs != NULL ? arguments->bpffs : DEFAULT_BPFFS);
    bool mounted;
    t->have_bpffs = ensure_bpffs(t->bpffs, create, &mounted, why);
    if (!t->have_bpffs && create)
        die(EXIT_SYSTEM, "%s", why);
    if (mounted)
        printf("mounted a bpffs on %s\n", t->bpffs);
    path_join(t->root, "%s/" PIN_DIRECTORY, t->bpffs);
    path_join(t->directory, "%s/cgroup-%llu", t->root, t->id);
    for (unsigned f = 0; f < GRANT_FAMILIES; f++)
        path_join(t->pins[f], "%s/%s", t->directory, grant_family_names[f]);
    if (!t->have_bpffs)
        return;
    if (create)
        make_directory(t->root);
    t->lock_fd = open(t->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (t->lock_fd < 0 && (create || errno != ENOENT))
        die(EXIT_SYSTEM, "cannot open %s: %s", t->root, strerror(errno));
    if (t->lock_fd >= 0 && flock(t->lock_fd, LOCK_EX) != 0)
        die(EXIT_SYSTEM, "cannot lock %s: %s", t->root, strerror(errno));
    if (create)
        make_directory(t->directory);
}

/* The pinned link of FAMILY (-1: none), checked to be this cgroup's link on that hook. */
static int pinned_link(const struct target *t, unsigned f, struct bpf_link_info *info)
{
    if (!t->have_bpffs)
        return -1;
    int fd = grant_pinned(t->pins[f]);
    if (fd < 0) {
        if (errno == ENOENT)
            return -1;
        die(EXIT_SYSTEM, "cannot open the pin %s: %s", t->pins[f], strerror(errno));
    }
    if (grant_link_info(fd, info) != 0)
        die(EXIT_SYSTEM, "%s is not a bpf link (%s): remove it", t->pins[f], strerror(errno));
    if (info->type != BPF_LINK_TYPE_CGROUP || info->cgroup.attach_type != grant_attach_types[f])
        die(EXIT_SYSTEM, "%s is not a cgroup link on %s: remove it", t->pins[f], attach_names[f]);
    return fd;
}

/* ---- apply, remove, status ------------------------------------------------------------------- */

static char verifier_log[1 << 20];

static int apply_command(const struct arguments *arguments)
{
    struct grant_program programs[GRANT_FAMILIES];
    struct target t;
    int program_fds[GRANT_FAMILIES], links[GRANT_FAMILIES];
    bool created[GRANT_FAMILIES];
    read_policy(arguments->policy, true);
    compile_programs(programs);
    open_target(arguments, true, &t);
    /* Both programs are loaded (and so verified) before anything attached changes. */
    for (unsigned f = 0; f < GRANT_FAMILIES; f++) {
        program_fds[f] = grant_load(&programs[f], verifier_log, sizeof verifier_log);
        if (program_fds[f] < 0) {
            int error = errno;
            size_t length = strlen(verifier_log);
            const char *tail = verifier_log + (length > 4000 ? length - 4000 : 0);
            die(EXIT_SYSTEM, "the kernel refused the %s program (BPF_PROG_LOAD: %s; Linux 5.12 "
                "or later is needed)%s%s", grant_family_names[f], strerror(error),
                length > 0 ? "; the end of the verifier's log:\n" : "", tail);
        }
    }
    for (unsigned f = 0; f < GRANT_FAMILIES; f++) {
        struct bpf_link_info info;
        links[f] = pinned_link(&t, f, &info);
        created[f] = links[f] < 0;
        if (!created[f] && info.cgroup.cgroup_id != t.id)
            die(EXIT_SYSTEM, "%s is the link of another cgroup (id %llu): remove it",
                t.pins[f], (unsigned long long)info.cgroup.cgroup_id);
        if (created[f]) {
            links[f] = grant_link_create(program_fds[f], t.cgroup_fd, (enum grant_family)f);
            if (links[f] < 0)
                die(EXIT_SYSTEM, "cannot attach the %s program to %s (BPF_LINK_CREATE: %s)",
                    grant_family_names[f], t.cgroup, strerror(errno));
        }
    }
    /* Replace, each in one step; then pin what is new (until pinned, a new link lives only as
       long as this process: a failure below leaves nothing new attached). */
    for (unsigned f = 0; f < GRANT_FAMILIES; f++)
        if (!created[f] && grant_link_update(links[f], program_fds[f]) != 0)
            die(EXIT_SYSTEM, "cannot replace the %s program of %s (BPF_LINK_UPDATE: %s)%s",
                grant_family_names[f], t.cgroup, strerror(errno),
                f == 1 ? "; the inet4 program was replaced: run apply again" : "");
    for (unsigned f = 0; f < GRANT_FAMILIES; f++)
        if (created[f] && grant_pin(links[f], t.pins[f]) != 0) {
            int error = errno;
            if (f == 1 && created[0])
                (void)unlink(t.pins[0]);
            die(EXIT_SYSTEM, "cannot pin %s (BPF_OBJ_PIN: %s)", t.pins[f], strerror(error));
        }
    for (unsigned f = 0; f < GRANT_FAMILIES; f++) {
        printf("%s %s %s %u instructions %s %s\n", grant_family_names[f],
               created[f] ? "attached" : "replaced", programs[f].name, programs[f].count,
               t.cgroup, t.pins[f]);
        close(links[f]);
        close(program_fds[f]);
        grant_program_free(&programs[f]);
    }
    return 0;
}

static int remove_command(const struct arguments *arguments)
{
    struct target t;
    bool removed = false;
    open_target(arguments, false, &t);
    for (unsigned f = 0; f < GRANT_FAMILIES; f++) {
        struct bpf_link_info info;
        int fd = pinned_link(&t, f, &info);
        if (fd < 0)
            continue;
        if (grant_link_detach(fd) != 0)
            die(EXIT_SYSTEM, "cannot detach %s (BPF_LINK_DETACH: %s)", t.pins[f], strerror(errno));
        if (unlink(t.pins[f]) != 0)
            die(EXIT_SYSTEM, "cannot remove %s: %s", t.pins[f], strerror(errno));
        close(fd);
        printf("%s detached %s\n", grant_family_names[f], t.pins[f]);
        removed = true;
    }
    if (t.have_bpffs && rmdir(t.directory) != 0 && errno != ENOENT)
        die(EXIT_SYSTEM, "cannot remove %s: %s", t.directory, strerror(errno));
    if (!removed) {
        printf("absent: nothing is installed for %s\n", t.cgroup);
        return EXIT_ABSENT;
    }
    return 0;
}

/* "inet4 attached 2 17 18": the ids of the programs on one hook; whether ID is among them. */
static bool print_query(const struct target *t, unsigned f, bool effective, uint32_t id)
{
    uint32_t ids[MAX_IDS], count = MAX_IDS;
    bool found = false;
    if (grant_query(t->cgroup_fd, (enum grant_family)f, effective, ids, &count) != 0 &&
        errno != ENOSPC)
        die(EXIT_SYSTEM, "cannot query %s (BPF_PROG_QUERY: %s)", t->cgroup, strerror(errno));
    printf("%s %s %u", grant_family_names[f], effective ? "effective" : "attached",
           (unsigned)count);
    for (uint32_t i = 0; i < count && i < MAX_IDS; i++) {
        printf(" %u", (unsigned)ids[i]);
        found = found || (id != 0 && ids[i] == id);
    }
    printf("\n");
    return found;
}

static int status_command(const struct arguments *arguments)
{
    struct target t;
    unsigned installed = 0, pinned = 0;
    open_target(arguments, false, &t);
    printf("cgroup %s\ncgroup-id %llu\n", t.cgroup, t.id);
    printf("pins %s%s\n", t.directory, t.have_bpffs ? "" : " (no bpffs there)");
    for (unsigned f = 0; f < GRANT_FAMILIES; f++) {
        struct bpf_link_info info;
        struct bpf_prog_info program;
        uint32_t program_id = 0;
        int fd = pinned_link(&t, f, &info);
        if (fd < 0) {
            printf("%s link none\n", grant_family_names[f]);
        } else {
            pinned++;
            program_id = info.prog_id;
            const char *name = "?";
            if (grant_program_info(program_id, &program) == 0)
                name = program.name;
            printf("%s link %u program %u %s cgroup-id %llu\n", grant_family_names[f],
                   (unsigned)info.id, (unsigned)program_id, name,
                   (unsigned long long)info.cgroup.cgroup_id);
            close(fd);
        }
        bool attached = print_query(&t, f, false, program_id);
        (void)print_query(&t, f, true, program_id);
        if (fd >= 0 && attached && info.cgroup.cgroup_id == t.id)
            installed++;
    }
    if (installed == GRANT_FAMILIES) {
        printf("state installed\n");
        return 0;
    }
    printf("state %s\n", pinned == 0 ? "absent" : "partial");
    return pinned == 0 ? EXIT_ABSENT : EXIT_PARTIAL;
}

int main(int argc, char *argv[])
{
    struct arguments arguments;
    parse_arguments(argc, argv, &arguments);
    if (strcmp(arguments.command, "compile") == 0)
        return compile_command(&arguments);
    if (strcmp(arguments.command, "apply") == 0)
        return apply_command(&arguments);
    if (strcmp(arguments.command, "remove") == 0)
        return remove_command(&arguments);
    return status_command(&arguments);
}
