"""
An echo server on a privileged port, with the plain API (no Twisted): run it as an ordinary user.

    python examples/plain_echo.py 7          # TCP port 7, the echo port
    python examples/plain_echo.py 7 --once   # answer one connection, then exit (the demo does)

Each reply is the data it received, prefixed with the server's uid, which shows that the server
never ran as root.
"""

import argparse
import os
import sys

import procket_twisted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--ip", default="127.0.0.1")
    parser.add_argument("--once", action="store_true", help="serve one connection, then exit")
    options = parser.parse_args()
    try:
        server = procket_twisted.listen(options.port, ip=options.ip)
    except procket_twisted.ProcketError as error:
        print(f"plain_echo: {error}", file=sys.stderr)
        return 1
    print(
        f"echo server: uid {os.getuid()}, listening on {options.ip} port {options.port}", flush=True
    )
    with server:
        while True:
            connection, _ = server.accept()
            with connection:
                data = connection.recv(4096)
                connection.sendall(f"uid={os.getuid()} ".encode() + data)
            if options.once:
                return 0


if __name__ == "__main__":
    sys.exit(main())
