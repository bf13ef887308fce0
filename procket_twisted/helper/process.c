/*
 * Step 1 and the caller: everything the helper inherits from its caller is hostile (signal
 * dispositions and mask, descriptors, limits, the environment), so it is reset or checked before
 * anything else; then the caller is identified from the kernel's real ids.
 */
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

bool caller_set_no_new_privs;         /* read before setup() sets it for ourselves */

/*
 * Signals reset and a watchdog started; fds 0-2 open and fd 0 an AF_UNIX stream or seqpacket
 * socket (the channel); every other fd closed; no core dumps; no_new_privs; the working
 * directory "/".
 */
void setup(void)
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

/*
 * The caller: the real uid and gid and the supplementary groups from getgroups(); SUDO_UID and
 * SUDO_GID only when the real uid is 0 (really run by sudo, or by root itself), and then the
 * groups are unknown (sudo gave us root's). Then the environment is cleared. Root is refused: it
 * binds what it wants itself.
 */
void identify_caller(struct caller *caller)
{
    caller->uid = getuid();
    caller->gid = getgid();
    caller->groups_known = true;
    caller->n_groups = getgroups(MAX_GROUPS, caller->groups);
    if (caller->n_groups < 0)
        fail(0, STEP_SETUP, errno, "cannot read the supplementary groups (more than %d?)",
             MAX_GROUPS);
    if (caller->uid == 0) {
        const char *sudo_uid = getenv("SUDO_UID"), *sudo_gid = getenv("SUDO_GID");
        uint32_t uid, gid;
        if (sudo_uid != NULL && sudo_gid != NULL) {
            if (!parse_number(sudo_uid, UINT32_MAX - 1, &uid) ||
                !parse_number(sudo_gid, UINT32_MAX - 1, &gid))
                fail(0, STEP_SETUP, EINVAL, "SUDO_UID or SUDO_GID is not a number");
            caller->uid = uid;
            caller->gid = gid;
            caller->n_groups = 0;
            caller->groups_known = false;
        }
    }
    if (clearenv() != 0)
        fail(0, STEP_SETUP, errno, "cannot clear the environment");
    if (caller->uid == 0)
        fail(0, STEP_POLICY, EPERM, "the caller is root; root binds privileged ports itself and "
             "needs no helper");
}
