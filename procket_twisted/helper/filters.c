/*
 * The classic BPF filters that keep a grant after the hand-over. The holder of a packet socket can
 * re-bind it to every ethertype and every interface, and the holder of a raw socket can re-bind it
 * to the wildcard address, without any capability; neither can remove a filter the helper
 * attached and locked (SO_LOCK_FILTER). So the helper locks one that drops what lies outside the
 * grant, whatever the socket is bound to later:
 *   packet: a frame whose ethertype (SKF_AD_PROTOCOL) is not the one asked for (unless it is
 *           ETH_P_ALL), or whose interface (SKF_AD_IFINDEX) is not the one asked for (when one
 *           was); then the caller's own filter decides, or every frame left is accepted;
 *   raw:    a packet whose destination address (at SKF_NET_OFF: the network header, for IPv4
 *           and IPv6 alike) is not the address the socket was bound to, when it was bound.
 * Each returns the program's length; 0 means there is nothing to keep.
 */
#include "helper.h"

#include <linux/if_ether.h>
#include <string.h>

#define ACCEPT_ALL 0xffffffffu

static void emit(struct sock_filter *out, unsigned *n, uint16_t code, uint8_t jt, uint8_t jf,
                 uint32_t k)
{
    out[*n].code = code;
    out[*n].jt = jt;
    out[*n].jf = jf;
    out[*n].k = k;
    (*n)++;
}

/* A = [K] (K an ancillary or negative offset); unless A == VALUE, drop the packet. */
static void require(struct sock_filter *out, unsigned *n, uint32_t k, uint32_t value)
{
    emit(out, n, BPF_LD | BPF_W | BPF_ABS, 0, 0, k);
    emit(out, n, BPF_JMP | BPF_JEQ | BPF_K, 1, 0, value);
    emit(out, n, BPF_RET | BPF_K, 0, 0, 0);
}

unsigned packet_grant_filter(const struct socket_request *request, int interface,
                             struct sock_filter out[MAX_GRANT_FILTER])
{
    unsigned n = 0;
    if (request->ethertype != ETH_P_ALL)
        require(out, &n, (uint32_t)(SKF_AD_OFF + SKF_AD_PROTOCOL), request->ethertype);
    if (interface > 0)
        require(out, &n, (uint32_t)(SKF_AD_OFF + SKF_AD_IFINDEX), (uint32_t)interface);
    if (n == 0 && request->filter_length == 0)
        return 0;
    if (request->filter_length == 0) {
        emit(out, &n, BPF_RET | BPF_K, 0, 0, ACCEPT_ALL);
        return n;
    }
    /* The caller's program starts as a filter does, with A and X zero (X is untouched above);
       its jumps are relative and stay within it, so it runs unchanged after the checks. */
    emit(out, &n, BPF_LD | BPF_IMM, 0, 0, 0);
    memcpy(out + n, request->filter, sizeof request->filter[0] * request->filter_length);
    return n + request->filter_length;
}

unsigned raw_grant_filter(const struct socket_request *request,
                          struct sock_filter out[MAX_GRANT_FILTER])
{
    static const unsigned char zero[16];
    unsigned n = 0;
    bool inet = request->address.family == FAMILY_INET;
    size_t size = inet ? 4 : 16;
    if (!request->has_address || memcmp(request->address.bytes, zero, size) == 0)
        return 0;                       /* not bound, or bound to the wildcard: every address */
    uint32_t at = inet ? 16 : 24;       /* the destination, in the IPv4 or IPv6 header */
    for (size_t word = 0; word < size / 4; word++) {
        const unsigned char *b = request->address.bytes + 4 * word;
        uint32_t value = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
        require(out, &n, (uint32_t)(SKF_NET_OFF + (int)(at + 4 * word)), value);
    }
    emit(out, &n, BPF_RET | BPF_K, 0, 0, ACCEPT_ALL);
    return n;
}
