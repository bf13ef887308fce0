/*
 * tcp and udp: socket, SO_REUSEADDR (streams), the requested options, bind, listen (streams);
 * and the socket options every kind of socket shares. Runs as the caller, with no effective
 * capability but around the one call that needs it (CAP_NET_BIND_SERVICE for bind, each
 * option's own for its setsockopt). What the kernel keeps after the hand-over: the bound address
 * and port, v6only, and a device binding (changing it needs CAP_NET_RAW).
 */
#include "helper.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <unistd.h>

void set_option(unsigned index, int fd, int level, int name, const void *value, socklen_t length,
                const char *what, capabilities needs)
{
    if (needs != 0)
        raise_capabilities(needs);
    int result = setsockopt(fd, level, name, value, length);
    int saved = errno;
    if (needs != 0)
        lower_capabilities();
    if (result != 0)
        fail(index, STEP_SETSOCKOPT, saved, "%s failed", what);
}

/* The requested options, each set before bind (the kernel checks most of them now). */
void set_options(unsigned index, int fd, int family, const struct socket_request *request)
{
    const uint32_t *values = request->values;
    unsigned asked = request->options;
    int one = 1, v6only = (int)values[OPT_V6ONLY], priority = (int)values[OPT_PRIORITY];
    int rcvbuf = (int)values[OPT_RCVBUF], sndbuf = (int)values[OPT_SNDBUF];
    bool inet6 = family == AF_INET6;
    if (asked & OPTION(OPT_V6ONLY))
        set_option(index, fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only, "IPV6_V6ONLY",
                   options[OPT_V6ONLY].needs);
    if (asked & OPTION(OPT_REUSEPORT))
        set_option(index, fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one, "SO_REUSEPORT",
                   options[OPT_REUSEPORT].needs);
    if (asked & OPTION(OPT_FREEBIND))
        set_option(index, fd, inet6 ? IPPROTO_IPV6 : IPPROTO_IP, inet6 ? IPV6_FREEBIND : IP_FREEBIND,
                   &one, sizeof one, "IP_FREEBIND", options[OPT_FREEBIND].needs);
    if (asked & OPTION(OPT_TRANSPARENT))
        set_option(index, fd, inet6 ? IPPROTO_IPV6 : IPPROTO_IP,
                   inet6 ? IPV6_TRANSPARENT : IP_TRANSPARENT, &one, sizeof one, "IP_TRANSPARENT",
                   options[OPT_TRANSPARENT].needs);
    if ((asked & OPTION(OPT_DEVICE)) && request->kind != KIND_PACKET)  /* packet: bind names it */
        set_option(index, fd, SOL_SOCKET, SO_BINDTODEVICE, request->device,
                   (socklen_t)strlen(request->device) + 1, "SO_BINDTODEVICE",
                   options[OPT_DEVICE].needs);
    if (asked & OPTION(OPT_MARK))
        set_option(index, fd, SOL_SOCKET, SO_MARK, &values[OPT_MARK], sizeof values[OPT_MARK],
                   "SO_MARK", options[OPT_MARK].needs);
    if (asked & OPTION(OPT_PRIORITY))
        set_option(index, fd, SOL_SOCKET, SO_PRIORITY, &priority, sizeof priority, "SO_PRIORITY",
                   options[OPT_PRIORITY].needs);
    if (asked & OPTION(OPT_RCVBUF))
        set_option(index, fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf,
                   "SO_RCVBUFFORCE", options[OPT_RCVBUF].needs);
    if (asked & OPTION(OPT_SNDBUF))
        set_option(index, fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf,
                   "SO_SNDBUFFORCE", options[OPT_SNDBUF].needs);
}

/* ADDRESS and PORT as a sockaddr in STORAGE; returns its length. */
static socklen_t make_sockaddr(const struct address *address, uint32_t port,
                               struct sockaddr_storage *storage)
{
    memset(storage, 0, sizeof *storage);
    if (address->family == FAMILY_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)storage;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        memcpy(&in->sin_addr, address->bytes, 4);
        return sizeof *in;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)storage;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    memcpy(&in6->sin6_addr, address->bytes, 16);
    return sizeof *in6;
}

/* bind(), raising NEEDS around it; fails at step bind with WHAT. */
void bind_address(unsigned index, int fd, const struct address *address, uint32_t port,
                  capabilities needs)
{
    struct sockaddr_storage storage;
    socklen_t length = make_sockaddr(address, port, &storage);
    if (needs != 0)
        raise_capabilities(needs);
    int result = bind(fd, (struct sockaddr *)&storage, length);
    int saved = errno;
    if (needs != 0)
        lower_capabilities();
    if (result != 0)
        fail(index, STEP_BIND, saved, "bind() to port %u failed", (unsigned)port);
}

int open_inet(unsigned index, const struct socket_request *request)
{
    int family = request->address.family == FAMILY_INET ? AF_INET : AF_INET6;
    bool stream = request->kind == KIND_TCP;
    int fd = socket(family, (stream ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC,
                    stream ? IPPROTO_TCP : IPPROTO_UDP);
    if (fd < 0)
        fail(index, STEP_SOCKET, errno, "socket() failed");
    int one = 1;
    if (stream)
        set_option(index, fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one, "SO_REUSEADDR", 0);
    set_options(index, fd, family, request);
    bind_address(index, fd, &request->address, request->port, kind_of(request->kind)->bind);
    if (stream && listen(fd, (int)request->backlog) != 0)
        fail(index, STEP_LISTEN, errno, "listen() failed");
    return fd;
}
