/*
 * Privilege: which capabilities each socket needs, becoming the caller, raising a capability only
 * around the call that needs it, and the drop for good. No libcap: two raw system calls.
 *
 * The helper starts as root (setuid, or under sudo) or with file capabilities in its permitted
 * set (setcap). Before it reads the caller's request it becomes the caller (setgroups(0),
 * setresgid, setresuid) keeping in its permitted set only what some request could need and none
 * effective; once the request is allowed it keeps only what that request needs; each privileged
 * call raises only its own capability and lowers it again; at the end everything is dropped and
 * the drop is verified.
 */
#include "helper.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static capabilities permitted_now;    /* what raise_capabilities() may raise */
static bool ids_changed;              /* the helper ran as another user (root) */

capabilities permitted_capabilities(void)
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &header, data) != 0)
        fail(0, STEP_PRIVILEGE, errno, "capget failed");
    return (capabilities)data[0].permitted | (capabilities)data[1].permitted << 32;
}

/* Permitted PERMITTED, effective EFFECTIVE, inheritable none. */
static int set_capabilities(capabilities permitted, capabilities effective)
{
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {{0, 0, 0}, {0, 0, 0}};
    data[0].permitted = (uint32_t)permitted;
    data[1].permitted = (uint32_t)(permitted >> 32);
    data[0].effective = (uint32_t)effective;
    data[1].effective = (uint32_t)(effective >> 32);
    return (int)syscall(SYS_capset, &header, data);
}

static bool is_caller(const struct caller *caller)
{
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    return getresuid(&ruid, &euid, &suid) == 0 && getresgid(&rgid, &egid, &sgid) == 0 &&
           ruid == caller->uid && euid == caller->uid && suid == caller->uid &&
           rgid == caller->gid && egid == caller->gid && sgid == caller->gid;
}

/*
 * Become the caller (when the helper runs as another user), keeping KEEP (as far as the helper
 * has it) in the permitted set and nothing effective. The sockets are then created by the
 * caller's uid (rule 7: SO_REUSEPORT groups never span users).
 */
void become_caller(const struct caller *caller, capabilities keep)
{
    keep &= permitted_capabilities();
    ids_changed = !is_caller(caller);
    if (ids_changed &&
        (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 || setgroups(0, NULL) != 0 ||
         setresgid(caller->gid, caller->gid, caller->gid) != 0 ||
         setresuid(caller->uid, caller->uid, caller->uid) != 0))
        fail(0, STEP_DROP, errno, "cannot switch to uid %u gid %u", (unsigned)caller->uid,
             (unsigned)caller->gid);
    permitted_now = keep;
    /* A change of ids makes the process dumpable again: not while it holds capabilities. */
    if (set_capabilities(keep, 0) != 0 || prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0 ||
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        fail(0, STEP_DROP, errno, "cannot limit the capabilities");
    if (!is_caller(caller))
        fail(0, STEP_DROP, EPERM, "ids are not the caller's after the switch");
}

/* Keep only KEEP in the permitted set (nothing effective). */
void keep_only(capabilities keep)
{
    permitted_now &= keep;
    if (set_capabilities(permitted_now, 0) != 0)
        fail(0, STEP_DROP, errno, "cannot limit the capabilities to what the sockets need");
}

void raise_capabilities(capabilities caps)
{
    if ((caps & ~permitted_now) != 0)
        fail(0, STEP_PRIVILEGE, EPERM, "capability mask 0x%llx was not kept",
             (unsigned long long)(caps & ~permitted_now));
    if (set_capabilities(permitted_now, caps) != 0)
        fail(0, STEP_PRIVILEGE, errno, "cannot raise capability mask 0x%llx",
             (unsigned long long)caps);
}

void lower_capabilities(void)
{
    if (set_capabilities(permitted_now, 0) != 0)
        fail(0, STEP_DROP, errno, "cannot lower the capabilities");
}

/* What opening SOCKET needs: its kind's row, and what its options need. */
capabilities socket_capabilities(const struct socket_request *socket)
{
    const struct kind *kind = kind_of(socket->kind);
    capabilities needed = kind->create | kind->bind;
    unsigned asked = socket->options;
    if (socket->kind & (KIND_PACKET | KIND_DEVICE))   /* their device is what they are */
        asked &= ~OPTION(OPT_DEVICE);
    for (unsigned i = 0; i < OPTION_COUNT; i++)
        if (asked & OPTION(i))
            needed |= options[i].needs;
    return needed;
}

/* Step 3: AVAILABLE (the helper's permitted set when it started) holds what NEEDED names. */
void check_privilege(capabilities needed, capabilities available)
{
    capabilities missing = needed & ~available;
    if (missing == 0)
        return;
    if (caller_set_no_new_privs)
        fail(0, STEP_PRIVILEGE, EPERM, "the helper is not privileged because the caller runs "
             "with no_new_privs set, so the kernel ignored its setuid bit and file capabilities "
             "(for TCP and UDP ports a kernel grant needs neither: procket-twisted grant)");
    fail(0, STEP_PRIVILEGE, EPERM, "the helper is not privileged (euid %u, missing capability "
         "mask 0x%llx): install it with 'procket-twisted install-helper' (setuid root or file "
         "capabilities) on a filesystem not mounted nosuid", (unsigned)geteuid(),
         (unsigned long long)missing);
}

/* Step 8: no capability at all, the caller's ids, no groups, and root cannot be regained. */
void drop_for_good(const struct caller *caller)
{
    permitted_now = 0;
    if (set_capabilities(0, 0) != 0 || prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
        fail(0, STEP_DROP, errno, "cannot clear the capabilities");
    if (!is_caller(caller))
        fail(0, STEP_DROP, EPERM, "ids are not the caller's after the drop");
    if (ids_changed && getgroups(0, NULL) != 0)
        fail(0, STEP_DROP, EPERM, "supplementary groups remain after the drop");
    if (permitted_capabilities() != 0)
        fail(0, STEP_DROP, EPERM, "capabilities remain after the drop");
    if (setuid(0) == 0 || setgid(0) == 0)
        fail(0, STEP_DROP, EPERM, "root could be regained after the drop");
}
