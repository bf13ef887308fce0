/*
 * The system calls: bpf(2) (load a program, create, update and detach a cgroup link, pin and
 * open pinned objects, query a cgroup's programs, describe objects), and the two file systems
 * they need: the cgroup v2 hierarchy (found in /proc/self/mountinfo, never assumed) and a bpffs
 * for the pins (mounted when it is not there). No library: the calls are the kernel's uapi.
 */
#include "grant.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

static int bpf_call(int command, union bpf_attr *attr)
{
    return (int)syscall(SYS_bpf, command, attr, sizeof *attr);
}

static uint64_t pointer(const void *p)
{
    return (uint64_t)(uintptr_t)p;
}

/*
 * Load PROGRAM for its bind hook. When the kernel refuses it and LOG is given, load it again
 * with the verifier's log in LOG (its end, which says why), and return that refusal.
 */
int grant_load(const struct grant_program *program, char *log, size_t log_size)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_CGROUP_SOCK_ADDR;
    attr.expected_attach_type = grant_attach_types[program->family];
    attr.insns = pointer(program->insns);
    attr.insn_cnt = program->count;
    attr.license = pointer("MIT");     /* the project's; the one helper called is not GPL-only */
    memcpy(attr.prog_name, program->name, sizeof attr.prog_name);
    int fd = bpf_call(BPF_PROG_LOAD, &attr);
    if (fd >= 0 || log == NULL || log_size < 2)
        return fd;
    int refused = errno;
    log[0] = '\0';
    attr.log_level = 1;
    attr.log_buf = pointer(log);
    attr.log_size = (uint32_t)log_size;
    fd = bpf_call(BPF_PROG_LOAD, &attr);
    if (fd >= 0)
        return fd;
    log[log_size - 1] = '\0';
    errno = refused;
    return -1;
}

int grant_link_create(int program_fd, int cgroup_fd, enum grant_family family)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.link_create.prog_fd = (uint32_t)program_fd;
    attr.link_create.target_fd = (uint32_t)cgroup_fd;
    attr.link_create.attach_type = grant_attach_types[family];
    return bpf_call(BPF_LINK_CREATE, &attr);
}

/* The link's program is replaced in one step: every bind runs the old one or the new one. */
int grant_link_update(int link_fd, int program_fd)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.link_update.link_fd = (uint32_t)link_fd;
    attr.link_update.new_prog_fd = (uint32_t)program_fd;
    return bpf_call(BPF_LINK_UPDATE, &attr);
}

int grant_link_detach(int link_fd)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.link_detach.link_fd = (uint32_t)link_fd;
    return bpf_call(BPF_LINK_DETACH, &attr);
}

int grant_pin(int fd, const char *path)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.pathname = pointer(path);
    attr.bpf_fd = (uint32_t)fd;
    return bpf_call(BPF_OBJ_PIN, &attr);
}

int grant_pinned(const char *path)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.pathname = pointer(path);
    return bpf_call(BPF_OBJ_GET, &attr);
}

/*
 * The ids of the programs on the cgroup's bind hook of FAMILY: attached to it, or (EFFECTIVE)
 * those that run for its sockets, its ancestors' included. COUNT: in, room in IDS; out, how many.
 */
int grant_query(int cgroup_fd, enum grant_family family, bool effective, uint32_t *ids,
                uint32_t *count)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.query.target_fd = (uint32_t)cgroup_fd;
    attr.query.attach_type = grant_attach_types[family];
    attr.query.query_flags = effective ? BPF_F_QUERY_EFFECTIVE : 0;
    attr.query.prog_ids = pointer(ids);
    attr.query.prog_cnt = *count;
    int result = bpf_call(BPF_PROG_QUERY, &attr);
    *count = attr.query.prog_cnt;
    return result;
}

static int object_info(int fd, void *info, uint32_t length)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    memset(info, 0, length);
    attr.info.bpf_fd = (uint32_t)fd;
    attr.info.info_len = length;
    attr.info.info = pointer(info);
    return bpf_call(BPF_OBJ_GET_INFO_BY_FD, &attr);
}

int grant_link_info(int link_fd, struct bpf_link_info *info)
{
    return object_info(link_fd, info, sizeof *info);
}

int grant_program_info(uint32_t id, struct bpf_prog_info *info)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_id = id;
    int fd = bpf_call(BPF_PROG_GET_FD_BY_ID, &attr);
    if (fd < 0)
        return -1;
    int result = object_info(fd, info, sizeof *info);
    int saved = errno;
    close(fd);
    errno = saved;
    return result;
}

/* A mountinfo field, with the kernel's octal escapes (\040 for a space...) undone. */
static void unescape(const char *field, size_t length, char *out, size_t size)
{
    size_t used = 0;
    for (size_t i = 0; i < length && used + 1 < size; i++) {
        bool octal = field[i] == '\\' && i + 3 < length && field[i + 1] >= '0' &&
                     field[i + 1] <= '3' && field[i + 2] >= '0' && field[i + 2] <= '7' &&
                     field[i + 3] >= '0' && field[i + 3] <= '7';
        if (octal) {
            out[used++] = (char)((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                                 (field[i + 3] - '0'));
            i += 3;
        } else {
            out[used++] = field[i];
        }
    }
    out[used] = '\0';
}

/* The mount point of the cgroup v2 hierarchy, from /proc/self/mountinfo (its first cgroup2). */
bool cgroup2_mount(char *out, size_t size, reason why)
{
    FILE *mounts = fopen("/proc/self/mountinfo", "re");
    if (mounts == NULL) {
        say(why, "cannot read /proc/self/mountinfo: %s", strerror(errno));
        return false;
    }
    char line[8192];
    bool found = false;
    while (!found && fgets(line, sizeof line, mounts) != NULL) {
        /* ID PARENT MAJOR:MINOR ROOT MOUNT-POINT OPTIONS [TAGS...] - TYPE SOURCE OPTIONS */
        const char *separator = strstr(line, " - ");
        if (separator == NULL || strncmp(separator + 3, "cgroup2 ", 8) != 0)
            continue;
        const char *field = line;
        for (int skip = 0; skip < 4 && field != NULL; skip++) {
            field = strchr(field, ' ');
            if (field != NULL)
                field++;
        }
        const char *end = field != NULL ? strchr(field, ' ') : NULL;
        if (end == NULL)
            continue;
        unescape(field, (size_t)(end - field), out, size);
        found = true;
    }
    fclose(mounts);
    if (!found)
        say(why, "no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/self/mountinfo)");
    return found;
}

static bool is_bpffs(const char *directory)
{
    struct statfs fs;
    return statfs(directory, &fs) == 0 && (unsigned long)fs.f_type == (unsigned long)BPF_FS_MAGIC;
}

/*
 * DIRECTORY is a bpffs; or, when it is not and MOUNT_IT, a new one is mounted there (mode 700,
 * nosuid, nodev, noexec), as systemd mounts /sys/fs/bpf.
 */
bool ensure_bpffs(const char *directory, bool mount_it, bool *mounted, reason why)
{
    *mounted = false;
    if (is_bpffs(directory))
        return true;
    if (!mount_it) {
        say(why, "%.160s is not a bpffs", directory);
        return false;
    }
    if (mount("bpf", directory, "bpf", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700") != 0) {
        say(why, "cannot mount a bpffs on %.160s: %s", directory, strerror(errno));
        return false;
    }
    *mounted = true;
    return true;
}
