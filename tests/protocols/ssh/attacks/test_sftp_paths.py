"""
Path spellings against SFTP rules: a client names a file under a denied
directory in ways a glob over the path as sent would miss, or steps out of
an allowed directory.  Judged on the decision for the operation the
gateway reads from the SFTP packet (the end-to-end tests judge on the
target's disk).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gatehouse.protocols.ssh.sftp import SFTPOperation, sftp_command
from tests.protocols.ssh.attacks.policy import load, with_ssh

POLICY = """
default: allow
review:
  approvers: [ops]
rules:
  - name: etc-read-only
    protocols: [ssh]
    kind: [write, remove, rename, setstat, symlink, mkdir, rmdir]
    path: ["/etc/*", "/etc"]
    action: deny
  - name: uploads-to-incoming
    protocols: [ssh]
    kind: [write]
    path: ["/srv/incoming/*"]
    action: allow
  - name: no-uploads-elsewhere
    protocols: [ssh]
    kind: [write]
    action: deny
"""

INTO_ETC = (
    "/etc/passwd",
    "//etc/passwd",
    "/etc//passwd",
    "/etc/./passwd",
    "/./etc/passwd",
    "/tmp/../etc/passwd",
    "/srv/incoming/../../etc/passwd",
    "/etc/ssh/../passwd",
    "///etc/ssh/sshd_config",
)

OUT_OF_INCOMING = (
    "/srv/incoming/../outgoing/x",
    "/srv/incoming/../../etc/cron.d/x",
    "/srv/incoming/./../x",
    "../../srv/incoming/x",
)


class SFTPPathSpellingTests(SynchronousTestCase):
    """Rules see the path as it resolves, not as it is spelled."""

    def setUp(self) -> None:
        with_ssh(self)
        self.policy, problems = load(POLICY)
        self.assertEqual(problems, [])

    def decide(self, op: str, *paths: str) -> str:
        session = self.policy.for_session(("dev",), "host", "ssh")
        command = sftp_command(SFTPOperation(op, paths, 1))
        return session.decide_all([command]).action

    def test_writes_into_etc_denied(self) -> None:
        for path in INTO_ETC:
            for op in ("write", "remove", "setstat"):
                with self.subTest(path=path, op=op):
                    self.assertEqual(self.decide(op, path), "deny")

    def test_rename_into_etc_denied(self) -> None:
        """Either path of a rename under /etc refuses it."""
        for path in INTO_ETC:
            with self.subTest(path=path):
                self.assertEqual(self.decide("rename", "/tmp/x", path), "deny")

    def test_stepping_out_of_incoming_denied(self) -> None:
        for path in OUT_OF_INCOMING:
            with self.subTest(path=path):
                self.assertEqual(self.decide("write", path), "deny")

    def test_incoming_allowed(self) -> None:
        for path in ("/srv/incoming/x", "/srv/incoming/./y", "//srv/incoming/z"):
            with self.subTest(path=path):
                self.assertEqual(self.decide("write", path), "allow")

    def test_reads_stay_allowed(self) -> None:
        self.assertEqual(self.decide("read", "/etc/passwd"), "allow")


class SFTPKindVocabularyTests(SynchronousTestCase):
    """
    A rule may name exactly the operations the tracker gives commands: a
    kind it never produces is a load error, not a rule that silently never
    blocks.
    """

    def setUp(self) -> None:
        with_ssh(self)

    def rule(self, kinds: list[str]) -> list[str]:
        text = (
            "default: allow\nopaque: deny\nrules:\n  - name: r\n    protocols: [ssh]\n"
            f"    kind: [{', '.join(kinds)}]\n    action: deny\n"
        )
        return load(text)[1]

    def test_every_operation_nameable(self) -> None:
        from gatehouse.protocols.ssh.sftp import SFTP_OPS

        self.assertEqual(self.rule(sorted(SFTP_OPS)), [])

    def test_unknown_operation_refused(self) -> None:
        for kind in ("lstat", "fstat", "open", "unlink"):
            with self.subTest(kind=kind):
                problems = self.rule([kind])
                self.assertTrue(any("can never match" in p for p in problems), problems)
