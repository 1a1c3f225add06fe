"""
The gateway logs in to a target with a certificate it signs per session
(target option C{certificate_authority}), through the real daemon to a
real sshd that trusts only that CA for it: judged on sshd's own log, which
names the certificate's key id and serial.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from typing import ClassVar

from gatehouse.protocols.ssh.certificates import UserCA
from tests.fixtures.sshd import SSHServer
from tests.protocols.ssh.harness import (
    SSHGateway,
    SSHGatewayTestCase,
    events,
    ssh_target,
)


class UpstreamCertificateTests(SSHGatewayTestCase):
    """A fresh key and certificate per session, named in the target's log."""

    ca_path: ClassVar[str] = ""

    @classmethod
    def make_sshd(cls) -> SSHServer:
        directory = tempfile.mkdtemp(prefix="gatehouse-target-ca-")
        cls.ca_path = os.path.join(directory, "target_ca")
        UserCA.generate().save(cls.ca_path)
        with open(cls.ca_path + ".pub") as f:
            return SSHServer(trusted_user_ca_keys=[f.read()])

    @classmethod
    def make_gateway(cls, directory: str, sshd: SSHServer) -> SSHGateway:
        return SSHGateway(
            directory,
            sshd,
            targets=[
                ssh_target(
                    "web-1",
                    certificate_authority=cls.ca_path,
                    certificate_lifetime="2m",
                )
            ],
        )

    def test_certificate_login(self) -> None:
        mark = self.sshd.log_size()
        after = time.time()
        result = self.gateway.ssh(
            "web-1", "id -un", token=self.gateway.token("cert-up")
        )
        self.assertExit(result, 0)
        self.assertEqual(result.stdout.strip().decode(), self.sshd.admin_account)
        row = self.gateway.wait_session(after, identity="cert-up")
        (issued,) = events(
            self.gateway.export(row.id, cli=False), "upstream-certificate"
        )
        self.assertEqual(issued["principal"], self.sshd.admin_account)
        log = self.sshd.server_log(mark)
        accepted = re.search(
            r"Accepted publickey for \S+ .*ED25519-CERT .* ID gatehouse session "
            r"(\S+) for cert-up \(serial (\d+)\)",
            log,
        )
        self.assertIsNotNone(accepted, log)
        assert accepted is not None
        self.assertEqual(accepted.group(1), row.id)
        self.assertEqual(accepted.group(2), issued["serial"])

    def test_each_session_its_own_certificate(self) -> None:
        after = time.time()
        for _ in range(2):
            self.assertExit(
                self.gateway.ssh("web-1", "true", token=self.gateway.token("cert-2")), 0
            )
        rows = self.gateway.wait_sessions(after, count=2, identity="cert-2")
        serials = {
            events(self.gateway.export(r.id, cli=False), "upstream-certificate")[0][
                "serial"
            ]
            for r in rows
        }
        self.assertEqual(len(serials), 2)
