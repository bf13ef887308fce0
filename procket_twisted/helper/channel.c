/*
 * The channel: fd 0, an AF_UNIX socket the caller holds the other end of. Every answer is one
 * message: "ok N\n" carrying all N descriptors in request order; "check N DECISION... PATH\n";
 * or "error INDEX STEP ERRNO TEXT\n" (INDEX: the 1-based socket, or 0), after which the helper
 * exits with the step's number; an error is first handed to the audit trail (audit.c). No
 * descriptor is ever sent with an error.
 */
#include "helper.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

bool channel_ready;                   /* fd 0 checked: errors go there, else to fd 2 */

_Noreturn void fail(unsigned index, enum step step, int err, const char *fmt, ...)
{
    char message[768];
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
    audit_failed(index, step, err, message + head);   /* logged before the caller hears it */
    message[length++] = '\n';
    ssize_t ignored = channel_ready ? send(0, message, length, MSG_NOSIGNAL)
                                    : write(2, message, length);
    (void)ignored;                    /* nothing more can be done: the exit status still tells */
    _exit(step);
}

void send_sockets(const int *fds, unsigned count)
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

/*
 * The "check" request: which rule decides each socket for this caller, and nothing else (no
 * socket is created). Replies "check N DECISION... PATH" where DECISION is allow:LINE or
 * deny:LINE (line 0: no rule matched).
 */
_Noreturn void report_decisions(const struct policy *policy, const char *path,
                                const struct caller *caller, const struct request *request)
{
    static char reply[MAX_SOCKETS * 16 + PATH_MAX + 32];
    size_t used = (size_t)snprintf(reply, sizeof reply, "check %u", request->count);
    for (unsigned i = 0; i < request->count; i++) {
        struct decision decision = policy_decision(policy, caller, &request->sockets[i]);
        used += (size_t)snprintf(reply + used, sizeof reply - used, " %s:%u",
                                 decision.allowed ? "allow" : "deny",
                                 decision.rule != NULL ? decision.rule->line : 0);
    }
    used += (size_t)snprintf(reply + used, sizeof reply - used, " %.4000s\n", path);
    if (send(0, reply, used, MSG_NOSIGNAL) != (ssize_t)used)
        fail(0, STEP_SEND, errno, "cannot send the policy's decisions");
    _exit(0);
}
