"""
Which policy rule decides a request for this user: the helper's "check" request, which opens
nothing. C{doctor} uses it to show the rule that applies; programs can too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional

from .api import DEFAULT_TIMEOUT, check_batch
from .errors import HelperFailedError
from .kinds import AnyRequest
from .locate import Progname, find_helper
from .reply import sockets_from_reply
from .spawn import exchange
from .wire import PROTOCOL_VERSION, close_fds, parse_answer

__all__ = ["PolicyDecision", "policy_decisions"]


@dataclass(frozen=True)
class PolicyDecision:
    """
    What the installed policy says of one request, for the user asking.

    @ivar allowed: whether the helper would open it.
    @ivar line: the deciding rule's line in the policy file; 0 when no rule matched (denied).
    @ivar path: the policy file the helper reads.
    @ivar rule: that line's text, when this user can read the file; else None.
    """

    allowed: bool
    line: int
    path: str
    rule: Optional[str]

    def describe(self) -> str:
        """One sentence: allowed or denied, and by what."""
        verdict = "allowed" if self.allowed else "denied"
        if self.line == 0:
            return f"{verdict}: no rule in {self.path} matches"
        shown = f": {self.rule}" if self.rule is not None else ""
        return f"{verdict} by line {self.line} of {self.path}{shown}"


def _rule_text(path: str, line: int) -> Optional[str]:
    try:
        with open(path, encoding="ascii", errors="replace") as policy:
            for number, text in enumerate(policy, 1):
                if number == line:
                    return text.strip()
    except OSError:
        pass
    return None


def _parse(data: bytes, count: int) -> Optional[List[PolicyDecision]]:
    words = data.decode("ascii", "replace").rstrip("\n").split(" ", count + 2)
    if len(words) != count + 3 or words[0] != "check" or words[1] != str(count):
        return None
    path = words[-1]
    decisions = []
    for word in words[2:-1]:
        verdict, _, line = word.partition(":")
        if verdict not in ("allow", "deny") or not line.isdigit():
            return None
        decisions.append(
            PolicyDecision(verdict == "allow", int(line), path, _rule_text(path, int(line)))
        )
    return decisions


def policy_decisions(
    requests: Iterable[AnyRequest],
    *,
    progname: Progname = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> List[PolicyDecision]:
    """
    What the installed policy decides for each of REQUESTS, for this process's user, without
    opening anything.

    @raise ProcketError: when the helper cannot be found or run, or refuses its policy file (a
        L{PolicyDeniedError} saying why).
    """
    wanted = check_batch(requests, timeout)
    command = find_helper(progname)
    argv = list(command.argv) + [PROTOCOL_VERSION, "check"]
    argv += [request.helper_argument() for request in wanted]
    packets, exit_code = exchange(command, argv, timeout)
    close_fds([fd for packet in packets for fd in packet.fds])
    for packet in packets:
        decisions = _parse(packet.data, len(wanted))
        if decisions is not None and exit_code == 0:
            return decisions
    if any(parse_answer(packet.data) for packet in packets) or exit_code != 0:
        sockets_from_reply(wanted, command, packets, exit_code)  # raises the typed error
    raise HelperFailedError(
        f"the helper {command.helper} did not answer the policy check; it may be older than "
        "this package: reinstall it (procket-twisted install-helper)",
        step="reply",
    )
