/*
 * procket-helper: opens sockets that need privilege for an unprivileged caller and passes them
 * back over the AF_UNIX socket that is its standard input (SCM_RIGHTS). It is installed setuid
 * root, or with file capabilities, or run through sudo; it never execs anything, never reads a
 * path or a setting from its caller's environment, and lives for one request.
 *
 * The order of the steps (every call is checked; the first failure sends one error message and
 * exits with the number of its step, enum step in helper.h):
 *   0. argc >= 1, or exit at once (an empty argv would make argv[1] the environment).
 *   1. setup (process.c): signals reset and a watchdog; fds 0-2 open and fd 0 the channel; every
 *      other fd closed; no core dumps, not dumpable; no_new_privs; chdir("/").
 *   2. the caller (process.c): real uid, gid and groups (SUDO_UID/SUDO_GID only when the real uid
 *      is 0, and then the groups are unknown); the environment cleared; root refused.
 *   3. the helper's own path and its policy file (files.c), still with the helper's privilege:
 *      read, not yet parsed; what went wrong is reported at the policy step.
 *   4. become the caller (privilege.c): setgroups(0), setresgid, setresuid, keeping in the
 *      permitted set only what some request could need, nothing effective.
 *   5. parse (request.c): the caller's arguments, strictly, holding no effective capability.
 *      "v1 check SPEC..." only reports which rule decides each socket, and exits (logging
 *      nothing: it opens nothing). From here on (audit.c), every failure (refused, denied, or
 *      an error at a later step) is logged before the caller is answered.
 *   6. privilege: the helper started with every capability the request needs.
 *   7. policy (policy.c): every socket allowed, as every address it will accept, before any is
 *      created; then only what this request needs stays permitted, and each grant is logged
 *      (audit.c): after the policy, before anything is opened for the caller, as the caller with
 *      nothing effective (sending to /dev/log needs no capability), on a socket closed again
 *      before step 8, so it is never among the fds sent. The log is best effort: no /dev/log
 *      or a full one changes nothing.
 *   8. open (open_*.c), each socket in turn, raising a capability only around the call that
 *      needs it: /dev/net/tun for each tun or tap (CAP_DAC_OVERRIDE, then dropped); socket, the
 *      locked grant filter (raw, packet), the options, bind, listen; a tun or tap's interface.
 *   9. drop (privilege.c): every capability cleared; ids, groups and capabilities verified, and
 *      regaining root must fail.
 *  10. send (channel.c): one message "ok N\n" carrying all N descriptors; exit 0.
 */
#include "helper.h"

#include <errno.h>
#include <linux/capability.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
/* The sanitizer build for the tests: LeakSanitizer cannot inspect a non-dumpable process. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}
#endif

/* What some request could need: every row's capabilities, and /dev/net/tun's mode 600. */
static capabilities any_request_needs(void)
{
    capabilities all = CAP_BIT(CAP_DAC_OVERRIDE);
    for (size_t i = 0; i < COUNT(kinds); i++)
        all |= kinds[i].create | kinds[i].bind;
    for (unsigned i = 0; i < OPTION_COUNT; i++)
        all |= options[i].needs;
    return all;
}

static void parse_policy_file(const struct policy_file *file, struct policy *policy)
{
    reason problem;
    if (file->error == ENOENT)
        fail(0, STEP_POLICY, ENOENT, "%s", file->problem);
    if (file->error != 0)
        fail(0, STEP_POLICY, file->error, "policy refused, so nothing is allowed: %s",
             file->problem);
    if (!parse_policy(file->text, file->length, policy, problem))
        fail(0, STEP_POLICY, EINVAL, "policy %.96s has an error, so nothing is allowed: %s",
             file->path, problem);
}

/*
 * The client names the refused socket itself; the reason and the deciding line are ours. LINES
 * gets each allowed socket's deciding line, for the audit trail.
 */
static void check_policy(const struct policy *policy, const char *path,
                         const struct caller *caller, const struct request *request,
                         unsigned lines[MAX_SOCKETS])
{
    for (unsigned i = 0; i < request->count; i++) {
        struct decision decision = policy_decision(policy, caller, &request->sockets[i]);
        lines[i] = decision.rule != NULL ? decision.rule->line : 0;
        if (decision.allowed)
            continue;
        audit_deciding_line(lines[i]);
        if (decision.rule != NULL)
            fail(i + 1, STEP_POLICY, EACCES, "denied for uid %u by line %u of %.96s",
                 (unsigned)caller->uid, decision.rule->line, path);
        fail(i + 1, STEP_POLICY, EACCES, "no rule allows it for uid %u in %.96s",
             (unsigned)caller->uid, path);
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

int main(int argc, char *argv[])
{
    static struct request request;
    static struct policy policy;
    static struct caller caller;
    static struct policy_file file;
    int fds[MAX_SOCKETS], devices[MAX_SOCKETS];
    unsigned lines[MAX_SOCKETS];
    reason why;
    unsigned bad;

    if (argc < 1 || argv[0] == NULL)
        _exit(STEP_PARSE);
    setup();
    identify_caller(&caller);
    read_policy_file(&file);
    capabilities available = permitted_capabilities();
    become_caller(&caller, any_request_needs());

    bool parsed = parse_request(argc, argv, &request, &bad, why);
    if (!request.check)
        audit_start(&caller, file.path, argc, argv);
    if (!parsed)
        fail(bad, STEP_PARSE, EINVAL, "%s", why);
    if (request.check) {
        parse_policy_file(&file, &policy);
        report_decisions(&policy, file.path, &caller, &request);
    }
    capabilities needed = 0;
    bool any_device = false;
    for (unsigned i = 0; i < request.count; i++) {
        needed |= socket_capabilities(&request.sockets[i]);
        any_device = any_device || (request.sockets[i].kind & KIND_DEVICE) != 0;
    }
    check_privilege(needed, available);
    parse_policy_file(&file, &policy);
    check_policy(&policy, file.path, &caller, &request, lines);

    bool dac = any_device && (available & CAP_BIT(CAP_DAC_OVERRIDE)) != 0;
    keep_only(needed | (dac ? CAP_BIT(CAP_DAC_OVERRIDE) : 0));
    audit_granted(lines);
    for (unsigned i = 0; i < request.count; i++)
        devices[i] = request.sockets[i].kind & KIND_DEVICE ? open_tun_device(i + 1, dac) : -1;
    keep_only(needed);
    for (unsigned i = 0; i < request.count; i++)
        fds[i] = open_one(i + 1, &request.sockets[i], &caller, devices[i]);
    drop_for_good(&caller);
    send_sockets(fds, request.count);
    return 0;
}
