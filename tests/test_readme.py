"""
The README's lines run as written: the first screen (twistd web on port 80, curl), the Twisted
lines (IPv4 and IPv6 on port 80 in one twistd, the self-signed certificate and HTTPS on 443), the
socket-activation lines (twistd's systemd: endpoint, gunicorn) and the plain-API block, each taken
from README.md itself, run as nobody against the setuid helper, on the literal ports, in a
private network namespace (so that port 80 here is nobody else's and nothing is left listening).
The only change is the placeholder: DIR (and ~/site) become a temporary site directory.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
from typing import List

from twisted.trial.unittest import SynchronousTestCase

from .support import TEST_GID, TEST_UID, install_prefix, skip_unless_privileged

#: Beside the tests (scripts/test copies it with them).
README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def _blocks() -> List[List[str]]:
    """The README's fenced code blocks, as lists of lines."""
    with open(README, encoding="utf-8") as stream:
        text = stream.read()
    return [body.splitlines() for body in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)]


def _line(marker: str) -> str:
    """The one README code line that contains MARKER, without a console prompt."""
    found = [line for block in _blocks() for line in block if marker in line]
    assert len(found) == 1, f"README.md has {len(found)} code lines with {marker!r}"
    return re.sub(r"^\$ ", "", found[0])


def _block(marker: str) -> str:
    """The README code block that contains MARKER."""
    found = [block for block in _blocks() if any(marker in line for line in block)]
    assert len(found) == 1, f"README.md has {len(found)} code blocks with {marker!r}"
    return "\n".join(found[0]) + "\n"


#: Runs as root inside the new network namespace: loopback up, then the scenario. SERVE starts a
#: README line as nobody in the background; FETCH retries curl until the server answers.
_PRELUDE = """
ip link set lo up
AS_USER=(setpriv --reuid="$TEST_UID" --regid="$TEST_GID" --clear-groups -- env -i PATH="$USER_PATH"
         HOME="$SITE_HOME" LANG=C.UTF-8 PROCKET_HELPER="$PROCKET_HELPER")
as_user() { "${AS_USER[@]}" "$@"; }
SERVER=
serve() {  # DIRECTORY LINE: the line as nobody, in its own process group, logged
    (cd "$1" && exec setsid "${AS_USER[@]}" bash -c "$2") >"$SITE_HOME/server.log" 2>&1 &
    SERVER=$!
}
stop() {
    [ -n "$SERVER" ] || return 0
    kill -TERM -- "-$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
    SERVER=
}
fetch() {
    for _ in $(seq 100); do
        if curl -sS --max-time 5 "$@" 2>/dev/null; then return 0; fi
        kill -0 "$SERVER" 2>/dev/null || { cat "$SITE_HOME/server.log"; return 1; }
        sleep 0.1
    done
    cat "$SITE_HOME/server.log"; return 1
}
trap stop EXIT
"""


class ReadmeTests(SynchronousTestCase):
    """Each group of README lines, as nobody, in its own network namespace."""

    def setUp(self) -> None:
        skip_unless_privileged(self)
        self.prefix = install_prefix(self)
        self.home = tempfile.mkdtemp(prefix="procket-readme-")
        self.addCleanup(shutil.rmtree, self.home, True)
        self.site = os.path.join(self.home, "site")
        os.mkdir(self.site)
        with open(os.path.join(self.site, "index.html"), "w", encoding="ascii") as page:
            page.write("served by procket\n")
        for path in (self.home, self.site):
            os.chmod(path, 0o755)
            os.chown(path, TEST_UID, TEST_GID)

    def _inNamespace(self, script: str) -> str:
        """SCRIPT (bash, after _PRELUDE) in a new network namespace; its output."""
        bin_directory = os.path.dirname(sys.executable)
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "USER_PATH": f"{bin_directory}:/usr/local/bin:/usr/bin:/bin",
            "SITE_HOME": self.home,
            "TEST_UID": str(TEST_UID),
            "TEST_GID": str(TEST_GID),
            "PROCKET_HELPER": self.prefix.helper,
        }
        result = subprocess.run(
            ["unshare", "--net", "bash", "-euo", "pipefail", "-c", _PRELUDE + script],
            capture_output=True,
            text=True,
            env=environment,
            timeout=180,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        return result.stdout

    def _dir(self, line: str) -> str:
        return line.replace("DIR", self.site)

    def test_first_screen(self) -> None:
        """twistd web --listen procket:tcp:80 --path ~/site, then curl http://localhost/."""
        server = _line("--listen procket:tcp:80 --path ~/site")
        client = _line("curl http://localhost/")
        page = self._inNamespace(f"serve {self.home} {shlex.quote(server)}\nfetch {client[5:]}\n")
        self.assertEqual(page, "served by procket\n")

    def test_twisted_lines(self) -> None:
        """Port 80 over IPv4 and IPv6 in one twistd; the certificate; HTTPS on 443."""
        both = self._dir(_line("procket:tcp6:80:interface="))
        certificate = self._dir(_line("examples/make_certificate.py DIR"))
        certificate = certificate.replace(
            "examples/", os.path.join(os.path.dirname(README), "examples") + "/"
        )
        tls = self._dir(_line("--listen procket:ssl:443:"))
        output = self._inNamespace(textwrap.dedent(f"""\
            serve {self.home} {shlex.quote(both)}
            fetch http://127.0.0.1/
            fetch 'http://[::1]/'
            stop
            (cd {self.home} && as_user bash -c {shlex.quote(certificate)}) >/dev/null
            serve {self.home} {shlex.quote(tls)}
            fetch --cacert {self.site}/cert.pem https://localhost/
        """))  # fmt: skip
        self.assertEqual(output, "served by procket\n" * 3)

    def test_without_v6only_the_error_says_why(self) -> None:
        """
        The same line without v6only (a new namespace has net.ipv6.bindv6only=0) stops twistd
        with an error that says this process holds the IPv4 side and how to have both.
        """
        line = self._dir(_line("procket:tcp6:80:interface=")).replace(":v6only=yes", "")
        output = self._inNamespace(textwrap.dedent(f"""\
            serve {self.home} {shlex.quote(line)}
            wait "$SERVER" && echo "twistd did not stop" || cat "$SITE_HOME/server.log"
            SERVER=
        """))  # fmt: skip
        self.assertIn("this process holds the IPv4 side of tcp port 80", output)
        self.assertIn("add v6only=yes to the IPv6 one", output)
        self.assertNotIn("did not stop", output)

    def test_socket_activation_lines(self) -> None:
        """procket-twisted run with twistd's systemd: endpoint, and with gunicorn app:app."""
        with open(os.path.join(self.home, "app.py"), "w", encoding="ascii") as stream:
            stream.write(_WSGI_APP)
        os.chmod(os.path.join(self.home, "app.py"), 0o644)
        twistd = self._dir(_line("-- twistd -n web --listen systemd:"))
        gunicorn = _line("-- gunicorn app:app")
        output = self._inNamespace(textwrap.dedent(f"""\
            serve {self.home} {shlex.quote(twistd)}
            fetch http://127.0.0.1/
            stop
            serve {self.home} {shlex.quote(gunicorn)}
            fetch http://127.0.0.1/
            fetch http://127.0.0.1:443/
        """))  # fmt: skip
        self.assertEqual(output, "served by procket\n" + "served by gunicorn\n" * 2)

    def test_plain_api_block(self) -> None:
        """The plain-API block runs as nobody; each socket is bound where the comment says."""
        block = _block("procket_twisted.listen(80)")
        check = textwrap.dedent("""\
            for name in ("web", "dns", "tls", "both", "ftp", "tftp"):
                print(name, globals()[name].getsockname()[:2])
        """)
        program = os.path.join(self.home, "plain.py")
        with open(program, "w", encoding="utf-8") as stream:
            stream.write(block + check)
        os.chmod(program, 0o644)
        output = self._inNamespace(f"cd {self.home} && as_user python3 {program}\n")
        self.assertEqual(
            output.splitlines(),
            ["web ('0.0.0.0', 80)", "dns ('::1', 53)", "tls ('127.0.0.1', 443)",
             "both ('::', 25)", "ftp ('0.0.0.0', 21)", "tftp ('0.0.0.0', 69)"],
        )  # fmt: skip


#: What gunicorn serves in the socket-activation line (README: "gunicorn app:app").
_WSGI_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served by gunicorn\\n"]
"""
