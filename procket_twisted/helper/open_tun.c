/*
 * tun, tap: a new interface (IFF_TUN_EXCL: never another's existing one), owned by the caller;
 * before it gets an address or goes up, the kernel's automatic configuration on it is turned
 * off, so that nothing the holder writes into it (a router advertisement, a redirect) can install
 * a route: IPv6 is disabled on it unless an IPv6 address was asked for, and then it takes no
 * router advertisements, makes no addresses of its own (not even a link-local one) and takes no
 * redirects; IPv4 takes no redirects (and only secure ones, if "all" says otherwise). Then its
 * address, with its prefix, while it is still down (so that no other prefix is ever routed to
 * it), then up. The fd handed over is /dev/net/tun's, attached to it.
 *
 * What a tun or tap grant is, after the hand-over: packets (frames) to and from the granted
 * network through the interface. The holder can, with no capability, make the interface
 * persistent (TUNSETPERSIST, so it outlives the holder: the rule's device= names bound which
 * interfaces can be left behind), give it to another user or group (TUNSETOWNER, TUNSETGROUP),
 * change its link type while it is down (TUNSETLINK) and its carrier (TUNSETCARRIER); it cannot
 * change its addresses, routes, flags or the settings above.
 */
#include "helper.h"

#include <netinet/in.h>         /* before linux/ipv6.h: the C library's definitions first */

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/if_tun.h>
#include <linux/ipv6.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* /dev/net/tun, which may be mode 600: CAP_DAC_OVERRIDE is raised for this open when kept. */
int open_tun_device(unsigned index, bool raise_dac)
{
    if (raise_dac)
        raise_capabilities(CAP_BIT(CAP_DAC_OVERRIDE));
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NOCTTY);
    int saved = errno;
    if (raise_dac)
        lower_capabilities();
    if (fd < 0)
        fail(index, STEP_SOCKET, saved, "cannot open /dev/net/tun");
    return fd;
}

/* Writes VALUE to /proc/sys/net/FAMILY/conf/NAME/SETTING; a missing IPv6 stack is no error. */
static void set_sysctl(unsigned index, const char *family, const char *name, const char *setting,
                       const char *value)
{
    char path[128];
    int length = snprintf(path, sizeof path, "/proc/sys/net/%s/conf/%s/%s", family, name, setting);
    if (length < 0 || (size_t)length >= sizeof path)
        fail(index, STEP_SETSOCKOPT, ENAMETOOLONG, "no room for the path of %s", setting);
    int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0 && errno == ENOENT && strcmp(family, "ipv6") == 0 &&
        access("/proc/sys/net/ipv6/conf/all", F_OK) != 0)
        return;                       /* the kernel has no IPv6: nothing to turn off */
    if (fd < 0)
        fail(index, STEP_SETSOCKOPT, errno, "cannot open %s", path);
    size_t size = strlen(value);
    ssize_t written = write(fd, value, size);
    int saved = errno;
    close(fd);
    if (written != (ssize_t)size)
        fail(index, STEP_SETSOCKOPT, written < 0 ? saved : EIO, "cannot set %s", path);
}

/* No router advertisements, no addresses of its own, no redirects: only what the helper sets. */
static void no_automatic_configuration(unsigned index, const char *name, bool ipv6)
{
    set_sysctl(index, "ipv4", name, "accept_redirects", "0");
    set_sysctl(index, "ipv4", name, "secure_redirects", "1");
    set_sysctl(index, "ipv4", name, "accept_source_route", "0");
    if (!ipv6) {
        set_sysctl(index, "ipv6", name, "disable_ipv6", "1");
        return;
    }
    set_sysctl(index, "ipv6", name, "accept_ra", "0");
    set_sysctl(index, "ipv6", name, "autoconf", "0");
    set_sysctl(index, "ipv6", name, "accept_redirects", "0");
    set_sysctl(index, "ipv6", name, "accept_source_route", "0");
    set_sysctl(index, "ipv6", name, "addr_gen_mode", "1");   /* IN6_ADDR_GEN_MODE_NONE */
}

static void give_address(unsigned index, int control, const char *name,
                         const struct socket_request *request)
{
    struct ifreq interface;
    memset(&interface, 0, sizeof interface);
    memcpy(interface.ifr_name, name, IFNAMSIZ);
    if (request->address.family == FAMILY_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&interface.ifr_addr;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, request->address.bytes, 4);
        if (ioctl(control, SIOCSIFADDR, &interface) != 0)
            fail(index, STEP_SETSOCKOPT, errno, "cannot give %s its address", name);
        uint32_t mask = request->prefixlen == 0 ? 0 : ~0u << (32 - request->prefixlen);
        in = (struct sockaddr_in *)&interface.ifr_netmask;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(mask);
        if (ioctl(control, SIOCSIFNETMASK, &interface) != 0)
            fail(index, STEP_SETSOCKOPT, errno, "cannot give %s its netmask", name);
        return;
    }
    struct in6_ifreq address;
    memset(&address, 0, sizeof address);
    if (ioctl(control, SIOCGIFINDEX, &interface) != 0)
        fail(index, STEP_SETSOCKOPT, errno, "no interface %s", name);
    address.ifr6_ifindex = interface.ifr_ifindex;
    address.ifr6_prefixlen = request->prefixlen;
    memcpy(&address.ifr6_addr, request->address.bytes, 16);
    if (ioctl(control, SIOCSIFADDR, &address) != 0)
        fail(index, STEP_SETSOCKOPT, errno, "cannot give %s its address", name);
}

static void bring_up(unsigned index, int control, const char *name)
{
    struct ifreq interface;
    memset(&interface, 0, sizeof interface);
    memcpy(interface.ifr_name, name, IFNAMSIZ);
    if (ioctl(control, SIOCGIFFLAGS, &interface) != 0)
        fail(index, STEP_SETSOCKOPT, errno, "cannot read the flags of %s", name);
    interface.ifr_flags = (short)(interface.ifr_flags | IFF_UP);
    if (ioctl(control, SIOCSIFFLAGS, &interface) != 0)
        fail(index, STEP_SETSOCKOPT, errno, "cannot bring %s up", name);
}

int open_tun(unsigned index, const struct socket_request *request, const struct caller *caller,
             int fd)
{
    struct ifreq interface;
    memset(&interface, 0, sizeof interface);
    interface.ifr_flags = (short)((request->kind == KIND_TUN ? IFF_TUN : IFF_TAP) |
                                  (request->pi ? 0 : IFF_NO_PI) | IFF_TUN_EXCL);
    if (request->options & OPTION(OPT_DEVICE))
        memcpy(interface.ifr_name, request->device, strlen(request->device) + 1);
    raise_capabilities(kind_of(request->kind)->create);
    if (ioctl(fd, TUNSETIFF, &interface) != 0)
        fail(index, STEP_BIND, errno, "cannot create interface %s",
             interface.ifr_name[0] != '\0' ? interface.ifr_name : "(any)");
    char name[IFNAMSIZ];
    memcpy(name, interface.ifr_name, IFNAMSIZ);
    name[IFNAMSIZ - 1] = '\0';
    if (ioctl(fd, TUNSETOWNER, (unsigned long)caller->uid) != 0 ||
        ioctl(fd, TUNSETGROUP, (unsigned long)caller->gid) != 0)
        fail(index, STEP_SETSOCKOPT, errno, "cannot give %s to the caller", name);
    bool ipv6 = request->has_address && request->address.family == FAMILY_INET6;
    no_automatic_configuration(index, name, ipv6);
    if (request->has_address || request->up) {
        int control = socket(ipv6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (control < 0)
            fail(index, STEP_SETSOCKOPT, errno, "cannot configure %s", name);
        if (request->has_address)
            give_address(index, control, name, request);
        if (request->up)
            bring_up(index, control, name);
        close(control);
    }
    lower_capabilities();
    return fd;
}
