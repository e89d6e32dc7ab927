"""Which IP addresses count as public: the egress proxy's last check before it connects.

An IPv6 address may carry an IPv4 one (mapped, NAT64, 6to4, Teredo) that a packet ends up
at; that one is checked too, so a listed name cannot point into the host's own network.
"""

from __future__ import annotations

import ipaddress

NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the IPv4 address in the last 32 bits
# RFC 8215, local use: where it leads and where it embeds the IPv4 address is the site's
# choice, so no address in it counts as public.
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
STANDS_FOR_IPV4 = (  # IPv4-mapped, IPv4-compatible (::1 and :: included) and SIIT-translated
    ipaddress.IPv6Network("::ffff:0:0/96"),
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a packet to `ip` ends up at, for the prefixes that carry one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address, un-XOR-ed by the ipaddress module
    if any(ip in net for net in (NAT64, *STANDS_FOR_IPV4)):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str) -> bool:
    """Whether `address` is a public unicast one, and so is any IPv4 address it embeds.

    A NAT64 gateway, a 6to4 or Teredo relay, or the host's own dual stack would carry a
    packet for 64:ff9b::10.0.0.1, 2002:7f00:1:: or ::ffff:127.0.0.1 to the IPv4 inside.
    """
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in LOCAL_NAT64:
            return False
        inner = embedded_ipv4(ip)
        if inner is not None and not is_public(str(inner)):
            return False
        if any(ip in net for net in STANDS_FOR_IPV4):
            return True  # the IPv4 address itself in IPv6 notation: its checks were the ones
    return ip.is_global and not ip.is_multicast
