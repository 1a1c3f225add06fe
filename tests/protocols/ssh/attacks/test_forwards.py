"""
Port forwards (C{ssh -L}) against the policy: a tunnel opens only where a
rule naming forwards allows its destination.  A catch-all allow rule, the
policy's default, or a rule for other kinds never opens one; and a
destination rule on the port holds however the host is spelled.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.ssh.commands import forward_command
from tests.protocols.ssh.attacks.policy import load, with_ssh

CATCH_ALL = """
default: allow
opaque: deny
rules:
  - name: everyone-everything
    action: allow
"""

OTHER_KINDS = """
default: allow
opaque: deny
rules:
  - name: exec-anything
    protocols: [ssh]
    kind: [exec, shell, subsystem]
    action: allow
"""

ALLOW_ONE = """
default: allow
opaque: deny
rules:
  - name: no-ssh-hops
    protocols: [ssh]
    kind: [forward]
    destination: ["*:22"]
    action: deny
  - name: metrics-tunnel
    protocols: [ssh]
    kind: [forward]
    destination: ["127.0.0.1:9100"]
    action: allow
"""

OPEN_FORWARDS = """
default: allow
opaque: deny
forwards: allow
rules: []
"""

HOSTS = (
    "127.0.0.1",
    "localhost",
    "::1",
    "[::1]",
    "0x7f.0.0.1",
    "LOCALHOST",
    "10.0.0.5",
)


class ForwardPolicyTests(SynchronousTestCase):
    """Decisions for C{direct-tcpip} destinations."""

    def setUp(self) -> None:
        with_ssh(self)

    def decide(self, text: str, host: str, port: int) -> tuple[str, str]:
        policy, problems = load(text)
        self.assertEqual(problems, [])
        d = policy.for_session(("dev",), "host", "ssh").decide(
            forward_command(host, port)
        )
        return d.action, d.rule

    def test_default_and_catch_all_never_open(self) -> None:
        for text in (CATCH_ALL, OTHER_KINDS):
            for host in HOSTS:
                for port in (22, 80, 5432, 9100):
                    with self.subTest(text=text, host=host, port=port):
                        self.assertEqual(
                            self.decide(text, host, port), ("deny", "forwards")
                        )

    def test_only_the_named_destination(self) -> None:
        self.assertEqual(
            self.decide(ALLOW_ONE, "127.0.0.1", 9100), ("allow", "metrics-tunnel")
        )
        for host, port in (
            ("localhost", 9100),
            ("127.0.0.1", 9101),
            ("127.0.0.2", 9100),
        ):
            with self.subTest(host=host, port=port):
                self.assertEqual(
                    self.decide(ALLOW_ONE, host, port), ("deny", "forwards")
                )

    def test_port_rule_whatever_the_host(self) -> None:
        for host in HOSTS:
            with self.subTest(host=host):
                self.assertEqual(
                    self.decide(ALLOW_ONE, host, 22), ("deny", "no-ssh-hops")
                )

    def test_fallback_can_open(self) -> None:
        """An operator may allow forwards by default, explicitly."""
        self.assertEqual(self.decide(OPEN_FORWARDS, "db", 5432), ("allow", "forwards"))
