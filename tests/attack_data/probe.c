/*
 * A probe for the environment attacks in tests/test_attacks.py: a shared object whose constructor
 * creates the file MARKER_DIR/PROBE_KIND-euidE-ruidR (E and R the effective and real uid of the
 * process that loaded it), so a test can tell whether, and as whom, anything loaded it.
 *
 * It uses no C library at all (raw system calls), so that the same object can pose as libc.so.6
 * in an LD_LIBRARY_PATH directory, where the real C library is not there to lean on. Built with
 * -DPROBE_PROGRAM it is instead a tiny program that needs libc.so.6 (so the dynamic loader loads
 * the fake one) and calls nothing in it: the control that proves the fake is loadable.
 */
#include <sys/syscall.h>

#if defined(__x86_64__)
static long raw(long number, long a, long b, long c, long d)
{
    long result;
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall"
                     : "=a"(result)
                     : "a"(number), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    return result;
}
#elif defined(__aarch64__)
static long raw(long number, long a, long b, long c, long d)
{
    register long x8 __asm__("x8") = number;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    return x0;
}
#else
#error "the probe knows the system call convention of x86_64 and aarch64 only"
#endif

#ifdef PROBE_PROGRAM

void _start(void) __attribute__((noreturn));
void _start(void)
{
    raw(SYS_exit_group, 0, 0, 0, 0);
    __builtin_unreachable();
}

#else

#ifndef MARKER_DIR
#error "MARKER_DIR (a quoted absolute directory) is required"
#endif
#ifndef PROBE_KIND
#error "PROBE_KIND (a quoted word) is required"
#endif

static char *append(char *cursor, const char *text)
{
    while (*text != '\0')
        *cursor++ = *text++;
    return cursor;
}

static char *append_number(char *cursor, unsigned long value)
{
    char digits[24];
    int count = 0;
    do {
        digits[count++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    while (count > 0)
        *cursor++ = digits[--count];
    return cursor;
}

__attribute__((constructor)) static void leave_marker(void)
{
    char path[4096];
    char *cursor = append(path, MARKER_DIR "/" PROBE_KIND "-euid");
    cursor = append_number(cursor, (unsigned long)raw(SYS_geteuid, 0, 0, 0, 0));
    cursor = append(cursor, "-ruid");
    cursor = append_number(cursor, (unsigned long)raw(SYS_getuid, 0, 0, 0, 0));
    *cursor = '\0';
    long fd = raw(SYS_openat, -100 /* AT_FDCWD */, (long)path, 01 | 0100 /* O_WRONLY|O_CREAT */,
                  0644);
    if (fd >= 0)
        raw(SYS_close, fd, 0, 0, 0);
}

/* The dynamic loader calls this in whatever it loaded as libc.so.6 (glibc 2.32 and later). */
void __libc_early_init(_Bool initial);
void __libc_early_init(_Bool initial)
{
    (void)initial;
}

#endif
