# A twisted.web resource script: "twistd web --path DIR" runs DIR/whoami.rpy and answers with the
# server process's ids, which shows that the server never ran as root. Used by scripts/demo.
import os

from twisted.web.resource import Resource


class WhoAmI(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        uids = "/".join(str(uid) for uid in os.getresuid())
        return f"uid={os.getuid()} (real/effective/saved {uids}) pid={os.getpid()}\n".encode()


resource = WhoAmI()
