/*
 * The audit trail: what the helper decided for a request goes to the system log when there is
 * one, one datagram per message, in the syslog protocol as glibc's syslog() writes it (RFC 3164,
 * "<PRI>Mmm dd hh:mm:ss procket-helper[PID]: MESSAGE"), facility authpriv, on the Unix datagram
 * socket /dev/log. A grant is logged at info, one message per socket, before any socket is
 * opened; a refusal (parse), a denial (policy) or a later error (socket, bind... send) at notice,
 * before the caller is answered. So a caller cannot hold a socket, or hear its answer, unless its
 * message was handed to the log first (when the log takes it). "v1 check" logs nothing.
 *
 *   allow uid=U gid=G [sudo=1] ppid=P [exe="E"] socket=I/N line=L policy="PATH" spec="SPEC"
 *   deny|refuse|error uid=... socket=I/N step=STEP errno=E [line=L] policy="PATH" [spec="SPEC"]
 *       reason="TEXT"
 *
 * (I: the 1-based socket, 0 for the request as a whole; line=0: no rule matched; sudo=1: the
 * uid is SUDO_UID's.) Quoted values are bounded, and escaped: \" \\ and \xHH for every byte
 * outside printable ASCII; the caller's text is copied byte by byte, never used as a format.
 *
 * Best effort, by design: no /dev/log, a refused connection, a full queue (EAGAIN): the message
 * is dropped and the request goes on exactly as without it. The socket is non-blocking and
 * close-on-exec, sends use MSG_DONTWAIT | MSG_NOSIGNAL, the path is the fixed "/dev/log", and it
 * is opened and closed within one call: closed before step 8 creates the only fds ever sent (a
 * failure sends none), and never open across an exec (there is none) or a fork. It runs as the
 * caller with no effective capability (socket, connect and send need none; /dev/log's own
 * permissions apply as to the caller). The time is formatted here, in UTC: glibc's gmtime would
 * read /etc/localtime, and the syslog daemon records when it received the message anyway.
 * Nothing here opens a file or calls fail().
 */
#include "helper.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LOG_PATH "/dev/log"
#define AUTHPRIV (10 << 3)            /* LOG_AUTHPRIV, RFC 3164 facility 10 */
#define INFO 6
#define NOTICE 5

static struct {
    const struct caller *caller;      /* NULL: log nothing (before the request, or check mode) */
    const char *policy;
    char *const *specs;               /* argv's specs, as the caller gave them */
    unsigned count;
    bool decided;                     /* the policy decided a denial, by LINE (0: no rule) */
    unsigned line;
} trail = {NULL, NULL, NULL, 0, false, 0};

struct message {
    char text[3072];
    size_t used;
};

static void put(struct message *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct message *m, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m->text + m->used, sizeof m->text - m->used, fmt, ap);
    va_end(ap);
    if (n > 0)
        m->used += (size_t)n < sizeof m->text - m->used ? (size_t)n : sizeof m->text - m->used - 1;
}

/* KEY="VALUE", VALUE escaped and cut after MAX bytes of output ("..." after the quote). */
static void put_quoted(struct message *m, const char *key, const char *value, size_t max)
{
    static const char hex[] = "0123456789abcdef";
    put(m, " %s=\"", key);
    size_t start = m->used;
    for (const unsigned char *c = (const unsigned char *)value; *c != '\0'; c++) {
        char escaped[4] = {(char)*c, 0, 0, 0};
        size_t length = 1;
        if (*c == '"' || *c == '\\') {
            escaped[0] = '\\';
            escaped[1] = (char)*c;
            length = 2;
        } else if (*c < 0x20 || *c > 0x7e) {
            escaped[0] = '\\';
            escaped[1] = 'x';
            escaped[2] = hex[*c >> 4];
            escaped[3] = hex[*c & 15];
            length = 4;
        }
        if (m->used - start + length > max || m->used + length + 8 >= sizeof m->text) {
            put(m, "\"...");
            return;
        }
        memcpy(m->text + m->used, escaped, length);
        m->used += length;
        m->text[m->used] = '\0';
    }
    put(m, "\"");
}

/* RFC 3164's "Mmm dd hh:mm:ss", in UTC (the date: H. Hinnant's civil_from_days). */
static void put_time(struct message *m)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    struct timespec now;
    if (clock_gettime(CLOCK_REALTIME, &now) != 0 || now.tv_sec < 0)
        now.tv_sec = 0;
    uint64_t seconds = (uint64_t)now.tv_sec;
    uint64_t era_day = (seconds / 86400 + 719468) % 146097;    /* 400-year eras from 0000-03-01 */
    uint64_t year = (era_day - era_day / 1460 + era_day / 36524 - era_day / 146096) / 365;
    uint64_t year_day = era_day - (365 * year + year / 4 - year / 100);   /* from March 1st */
    uint64_t month = (5 * year_day + 2) / 153;                            /* 0: March */
    unsigned day = (unsigned)(year_day - (153 * month + 2) / 5 + 1);
    unsigned daytime = (unsigned)(seconds % 86400);
    put(m, "%.3s %2u %02u:%02u:%02u", months + 3 * (month < 10 ? month + 2 : month - 10), day,
        daytime / 3600, daytime / 60 % 60, daytime % 60);
}

/* Who asks: the parent's pid and, when the helper can read it, its executable ("" if not). */
static struct {
    int parent;
    char exe[PATH_MAX];
} who;

/* "<PRI>TIME procket-helper[PID]: WORD uid=U gid=G [sudo=1] ppid=P [exe="E"]". */
static void begin(struct message *m, int severity, const char *word)
{
    m->used = 0;
    put(m, "<%d>", AUTHPRIV | severity);
    put_time(m);
    put(m, " procket-helper[%d]: %s uid=%u gid=%u%s ppid=%d", (int)getpid(), word,
        (unsigned)trail.caller->uid, (unsigned)trail.caller->gid,
        trail.caller->groups_known ? "" : " sudo=1", who.parent);
    if (who.exe[0] != '\0')
        put_quoted(m, "exe", who.exe, 256);
}

/*
 * The log's socket, connected (-1: no log), and WHO: the executable is the link /proc/PPID/exe
 * of the helper's parent, read with readlink (nothing is opened; the path is built from the
 * number getppid() gives, nothing from the caller). The helper is the caller by now, with no
 * effective capability, so the kernel allows this only where the caller could read the link
 * itself (its own, dumpable process); under sudo (the parent is root's), or once the parent is
 * gone, it is unknown. It is what the parent runs, and the caller chose its parent: a hint, not
 * an identity (the uid is that).
 */
static int open_log(void)
{
    struct sockaddr_un address = {.sun_family = AF_UNIX, .sun_path = LOG_PATH};
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)&address, sizeof address) != 0) {
        (void)close(fd);              /* nothing to report it to: the request goes on */
        return -1;
    }
    char link[32];
    who.parent = (int)getppid();
    int length = snprintf(link, sizeof link, "/proc/%d/exe", who.parent);
    ssize_t got = length > 0 && (size_t)length < sizeof link
                      ? readlink(link, who.exe, sizeof who.exe - 1) : -1;
    who.exe[got > 0 ? got : 0] = '\0';
    return fd;
}

/* Hands M to the log without waiting; false when it did not take it. */
static bool deliver(int fd, const struct message *m)
{
    return send(fd, m->text, m->used, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)m->used;
}

void audit_start(const struct caller *caller, const char *policy, int argc, char *const argv[])
{
    trail.caller = caller;
    trail.policy = policy;
    trail.specs = argc > 2 ? argv + 2 : NULL;
    trail.count = argc > 2 ? (unsigned)(argc - 2) : 0;
}

void audit_deciding_line(unsigned line)
{
    trail.decided = true;
    trail.line = line;
}

void audit_granted(const unsigned lines[])
{
    static struct message m;
    if (trail.caller == NULL)
        return;
    int fd = open_log();
    if (fd < 0)
        return;
    for (unsigned i = 0; i < trail.count; i++) {
        begin(&m, INFO, "allow");
        put(&m, " socket=%u/%u line=%u", i + 1, trail.count, lines[i]);
        put_quoted(&m, "policy", trail.policy, 256);
        put_quoted(&m, "spec", trail.specs[i], MAX_SPEC_LEN + 8);
        if (!deliver(fd, &m))
            break;                    /* a full queue stays full: drop the rest, do not wait */
    }
    (void)close(fd);
}

void audit_failed(unsigned index, enum step step, int err, const char *text)
{
    static struct message m;
    if (trail.caller == NULL)
        return;
    int fd = open_log();
    if (fd < 0)
        return;
    const char *word = step == STEP_PARSE ? "refuse" : step == STEP_POLICY ? "deny" : "error";
    begin(&m, NOTICE, word);
    put(&m, " socket=%u/%u step=%s errno=%d", index, trail.count, step_names[step], err);
    if (step == STEP_POLICY && trail.decided)
        put(&m, " line=%u", trail.line);
    put_quoted(&m, "policy", trail.policy, 256);
    if (index >= 1 && index <= trail.count && trail.specs != NULL)
        put_quoted(&m, "spec", trail.specs[index - 1], MAX_SPEC_LEN + 8);
    put_quoted(&m, "reason", text, 600);
    (void)deliver(fd, &m);            /* taken or not, the caller's answer comes next */
    (void)close(fd);
}
