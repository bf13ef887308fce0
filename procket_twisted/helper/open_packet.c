/*
 * packet: created with protocol 0 (with CAP_NET_RAW raised for that call only), so that no frame
 * arrives before the grant's filter (filters.c: the ethertype and interface asked for, then the
 * caller's own filter) is attached and locked; then the options, then bind to the ethertype and
 * interface (which starts the traffic), then promiscuous mode when asked.
 *
 * What a packet grant is, after the hand-over: for receiving, the frames of its ethertype on its
 * interface, however the holder re-binds the socket (the locked filter keeps that; promiscuous
 * mode, which the holder may turn on itself, shows it the frames for other hosts on that
 * interface); for sending, any frame on any interface; the holder may also map receive rings
 * (PACKET_RX_RING; frames still pass the filter) and join a fanout group of the same ethertype and
 * interface in the same network namespace, whoever created it.
 */
#include "helper.h"

#include <errno.h>
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <string.h>
#include <sys/socket.h>

int open_packet(unsigned index, const struct socket_request *request)
{
    raise_capabilities(kind_of(KIND_PACKET)->create);
    int fd = socket(AF_PACKET, (request->cooked ? SOCK_DGRAM : SOCK_RAW) | SOCK_CLOEXEC, 0);
    int saved = errno;
    lower_capabilities();
    if (fd < 0)
        fail(index, STEP_SOCKET, saved, "socket(AF_PACKET) failed");
    int interface = 0;
    if (request->options & OPTION(OPT_DEVICE)) {
        interface = (int)if_nametoindex(request->device);
        if (interface == 0)
            fail(index, STEP_BIND, errno, "no interface %s", request->device);
    }
    struct sock_filter filter[MAX_GRANT_FILTER];
    unsigned length = packet_grant_filter(request, interface, filter);
    if (length > 0)
        lock_filter(index, fd, filter, length);
    set_options(index, fd, AF_PACKET, request);
    struct sockaddr_ll link;
    memset(&link, 0, sizeof link);
    link.sll_family = AF_PACKET;
    link.sll_protocol = htons((uint16_t)request->ethertype);
    link.sll_ifindex = interface;
    if (bind(fd, (struct sockaddr *)&link, sizeof link) != 0)
        fail(index, STEP_BIND, errno, "bind() to ethertype 0x%x failed",
             (unsigned)request->ethertype);
    if (request->promisc) {
        struct packet_mreq membership;
        memset(&membership, 0, sizeof membership);
        membership.mr_ifindex = interface;
        membership.mr_type = PACKET_MR_PROMISC;
        set_option(index, fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &membership, sizeof membership,
                   "PACKET_ADD_MEMBERSHIP", 0);
    }
    return fd;
}
