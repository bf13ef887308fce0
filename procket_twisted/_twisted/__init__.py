"""
The Twisted layer: endpoints, the endpoint-string parser, the reactor's helper client, and the ports for raw, packet and TUN/TAP descriptors.
"""
