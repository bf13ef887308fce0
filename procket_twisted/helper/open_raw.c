/*
 * raw: socket(family, SOCK_RAW, proto) with CAP_NET_RAW raised for that call only, IP_HDRINCL
 * when asked, the options, and, when an address was asked for, a locked filter that keeps only
 * what arrives for that address (filters.c), then bind.
 *
 * What a raw grant is, after the hand-over: for receiving, the packets of its protocol and family
 * (the kernel keeps both) for the bound address (the locked filter keeps it, though the holder
 * may re-bind) on the bound device (changing it needs CAP_NET_RAW); for sending, the power of
 * CAP_NET_RAW for its family: the holder can set IP_HDRINCL itself and write any IPv4 packet,
 * any protocol and any source address.
 */
#include "helper.h"

#include <errno.h>
#include <netinet/in.h>

/* Attach PROGRAM (LENGTH instructions) and lock it, so that the holder cannot remove it. */
void lock_filter(unsigned index, int fd, const struct sock_filter *program, unsigned length)
{
    struct sock_filter copy[MAX_GRANT_FILTER];
    for (unsigned i = 0; i < length; i++)
        copy[i] = program[i];
    struct sock_fprog fprog = {(unsigned short)length, copy};
    int one = 1;
    set_option(index, fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof fprog, "SO_ATTACH_FILTER",
               0);
    set_option(index, fd, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof one, "SO_LOCK_FILTER", 0);
}

int open_raw(unsigned index, const struct socket_request *request)
{
    int family = request->address.family == FAMILY_INET ? AF_INET : AF_INET6;
    raise_capabilities(kind_of(KIND_RAW)->create);
    int fd = socket(family, SOCK_RAW | SOCK_CLOEXEC, (int)request->proto);
    int saved = errno;
    lower_capabilities();
    if (fd < 0)
        fail(index, STEP_SOCKET, saved, "socket(SOCK_RAW, %u) failed", (unsigned)request->proto);
    int one = 1;
    if (request->hdrincl)
        set_option(index, fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof one, "IP_HDRINCL", 0);
    set_options(index, fd, family, request);
    struct sock_filter filter[MAX_GRANT_FILTER];
    unsigned length = raw_grant_filter(request, filter);
    if (length > 0)
        lock_filter(index, fd, filter, length);
    if (request->has_address)
        bind_address(index, fd, &request->address, 0, 0);
    return fd;
}
