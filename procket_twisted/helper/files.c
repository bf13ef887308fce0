/*
 * The helper's own path and its policy file, which whoever installed the helper controls: the file
 * is PATH-OF-THE-HELPER's-DIRECTORY/policy (or the absolute PROCKET_POLICY_PATH a packager fixed
 * at build time), reached one component at a time without following a symbolic link. Every
 * directory above it must be root's and writable by no one else (a sticky directory such as /tmp
 * excepted: only root can rename root's entries there); the directory that holds the helper and
 * its policy must be root's and writable by no one else, sticky or not; the file must be a
 * root-owned regular file that group and others cannot write. Nothing here reads the caller's
 * input: this runs before the request is parsed (main.c), and records what went wrong for the
 * policy step to report.
 */
#include "helper.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Root's, and writable by no one else; an ancestor may instead be sticky. */
static bool trusted_directory(const struct stat *st, bool own)
{
    bool writable = (st->st_mode & (S_IWGRP | S_IWOTH)) != 0;
    return S_ISDIR(st->st_mode) && st->st_uid == 0 &&
           (!writable || (!own && (st->st_mode & S_ISVTX) != 0));
}

/*
 * Opens NAME in DIRECTORY without following a link (LAST_FLAGS added to O_NOFOLLOW): it must be
 * a regular file owned by root that group and others cannot write. SHOWN names it in messages.
 * Returns the fd, or -1 with errno set and WHY filled.
 */
static int open_file_at(int directory, const char *name, int last_flags, const char *shown,
                        reason why)
{
    int fd = openat(directory, name, last_flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int saved = errno;
        if (saved == ENOENT)
            say(why, "there is no %.96s, so nothing is allowed ('procket-twisted install-helper' "
                "writes one)", shown);
        else
            say(why, "cannot open '%.96s' without following links: %s", shown, strerror(saved));
        errno = saved;
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 ||
        (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        say(why, "'%.96s' must be a regular file owned by root that group and others cannot "
            "write", shown);
        close(fd);
        errno = EPERM;
        return -1;
    }
    return fd;
}

/*
 * Opens the absolute directory PATH one component at a time, never following a symlink, and
 * checks every directory on the way with trusted_directory() (PATH itself as the helper's own).
 * Returns its fd, or -1 with errno set and WHY filled.
 */
static int open_trusted_directory(const char *path, reason why)
{
    char copy[PATH_MAX];
    if (path[0] != '/' || strlen(path) >= sizeof copy) {
        say(why, "'%.64s' is not a short absolute path", path);
        errno = EINVAL;
        return -1;
    }
    strcpy(copy, path);
    int directory = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0) {
        int saved = errno;
        say(why, "cannot open /: %s", strerror(saved));
        errno = saved;
        return -1;
    }
    char *cursor = copy + 1;
    int walked = 1;                   /* length of the prefix of PATH that DIRECTORY is */
    for (;;) {
        struct stat st;
        bool last = *cursor == '\0';
        int saved = fstat(directory, &st) != 0 ? errno : EPERM;
        if (saved != EPERM || !trusted_directory(&st, last)) {
            say(why, "directory '%.*s' is not owned by root, or group or others can write it%s",
                walked, path, last ? " (the helper's own directory may not even be sticky)" : "");
            close(directory);
            errno = saved;
            return -1;
        }
        if (last)
            return directory;
        char *slash = strchr(cursor, '/');
        if (slash != NULL)
            *slash = '\0';
        if (strcmp(cursor, ".") == 0 || strcmp(cursor, "..") == 0 || *cursor == '\0') {
            say(why, "'%.64s' is not a canonical path", path);
            close(directory);
            errno = EINVAL;
            return -1;
        }
        int next = openat(directory, cursor, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        saved = errno;
        close(directory);
        if (next < 0) {
            say(why, "cannot open '%.96s' without following links: %s", path, strerror(saved));
            errno = saved;
            return -1;
        }
        directory = next;
        walked = slash != NULL ? (int)(slash - copy) : (int)strlen(path);
        cursor = slash != NULL ? slash + 1 : cursor + strlen(cursor);
        if (slash != NULL)
            *slash = '/';
    }
}

/*
 * The file FILE_PATH (absolute) through a trusted directory: its parent is opened with
 * open_trusted_directory() and the file with open_file_at(). On success *PARENT keeps the
 * parent directory open when PARENT is not NULL.
 */
static int open_trusted(const char *file_path, int last_flags, int *parent, reason why)
{
    char directory_path[PATH_MAX];
    const char *slash = strrchr(file_path, '/');
    if (slash == NULL || (size_t)(slash - file_path) >= sizeof directory_path) {
        say(why, "'%.64s' is not a short absolute path", file_path);
        errno = EINVAL;
        return -1;
    }
    size_t length = slash == file_path ? 1 : (size_t)(slash - file_path);
    memcpy(directory_path, file_path, length);
    directory_path[length] = '\0';
    int directory = open_trusted_directory(directory_path, why);
    if (directory < 0)
        return -1;
    int fd = open_file_at(directory, slash + 1, last_flags, file_path, why);
    int saved = errno;
    if (fd >= 0 && parent != NULL)
        *parent = directory;
    else
        close(directory);
    errno = saved;
    return fd;
}

/* Opens the policy, filling FILE's path: the helper's own path is checked on the way. */
static int open_policy(struct policy_file *file)
{
#ifdef PROCKET_POLICY_PATH
    if (strlen(PROCKET_POLICY_PATH) >= sizeof file->path) {
        say(file->problem, "the policy path is too long");
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(file->path, PROCKET_POLICY_PATH);
    return open_trusted(file->path, O_RDONLY | O_NONBLOCK, NULL, file->problem);
#else
    ssize_t length = readlink("/proc/self/exe", file->path, sizeof file->path);
    if (length <= 0 || (size_t)length >= sizeof file->path) {
        int saved = length < 0 ? errno : ENAMETOOLONG;
        say(file->problem, "cannot read /proc/self/exe to find the policy");
        errno = saved;
        return -1;
    }
    file->path[length] = '\0';
    int directory = -1;            /* one walk: the helper's directory holds its policy too */
    int self = open_trusted(file->path, O_PATH, &directory, file->problem);
    if (self < 0) {                /* e.g. a hard link to the helper in a user's directory */
        int saved = errno;
        reason detail;
        memcpy(detail, file->problem, sizeof detail);
        say(file->problem, "the helper's own path is not trusted: %s", detail);
        errno = saved;
        return -1;
    }
    close(self);
    char *slash = strrchr(file->path, '/');
    if (slash == NULL || (size_t)(slash - file->path) + sizeof "/" POLICY_NAME > sizeof file->path) {
        close(directory);
        say(file->problem, "the policy path is too long");
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(slash + 1, POLICY_NAME);
    int fd = open_file_at(directory, POLICY_NAME, O_RDONLY | O_NONBLOCK, file->path, file->problem);
    int saved = errno;
    close(directory);
    errno = saved;
    return fd;
#endif
}

void read_policy_file(struct policy_file *file)
{
    file->length = 0;
    file->error = 0;
    file->problem[0] = '\0';
    strcpy(file->path, "(unknown)");
    int fd = open_policy(file);
    if (fd < 0) {
        file->error = errno != 0 ? errno : EPERM;
        return;
    }
    for (;;) {
        ssize_t got = read(fd, file->text + file->length, sizeof file->text - file->length);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            file->error = errno;
            say(file->problem, "cannot read the policy %.96s", file->path);
            break;
        }
        if (got == 0)
            break;
        file->length += (size_t)got;
        if (file->length > MAX_POLICY_BYTES) {
            file->error = EFBIG;
            say(file->problem, "policy %.96s is larger than %d bytes", file->path,
                MAX_POLICY_BYTES);
            break;
        }
    }
    close(fd);
}
