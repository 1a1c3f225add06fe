"""
A test helper (not a test): what OpenSSH's C{sftp -D} runs as its
"server".  It starts the real C{sftp-server}, passes every packet both ways
through L{SFTPPacketReader} and L{SFTPSession} as the gateway's bridge
does, answers the requests whose operation is named in C{--refuse} itself
(permission denied), and writes one JSON line per completed operation to
the log (then C{{"error": ...}} if the codec or tracker refused the
stream).

    python sftp_proxy.py LOG START_DIRECTORY [--refuse OP ...]
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys

from gatehouse.protocols.ssh.sftp import (
    SSH_FX_PERMISSION_DENIED,
    FileOperationDone,
    SFTPPacketReader,
    SFTPProtocolError,
    SFTPSession,
    encode_status,
)

SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(log_path: str, directory: str, refuse: set[str]) -> int:
    server = subprocess.Popen(
        [SFTP_SERVER, "-d", directory],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert server.stdin is not None and server.stdout is not None
    to_server, from_server = server.stdin.fileno(), server.stdout.fileno()
    client_in, client_out = sys.stdin.fileno(), sys.stdout.fileno()
    client, upstream = SFTPPacketReader("client"), SFTPPacketReader("server")
    session = SFTPSession()
    done: list[FileOperationDone] = []
    error = None
    open_fds = {client_in, from_server}
    try:
        while open_fds:
            ready, _, _ = select.select(list(open_fds), [], [])
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    open_fds.discard(fd)
                    if fd == client_in:
                        server.stdin.close()
                    continue
                if fd == client_in:
                    for packet in client.feed(data):
                        operation = session.operation(packet)
                        if operation is not None and operation.op in refuse:
                            refused = session.refused(packet, f"no {operation.op}")
                            if refused is not None:
                                done.append(refused)
                            _write_all(
                                client_out,
                                encode_status(
                                    operation.request_id,
                                    SSH_FX_PERMISSION_DENIED,
                                    f"no {operation.op} here",
                                ),
                            )
                            continue
                        session.sent(packet)
                        _write_all(to_server, packet.raw)
                else:
                    for packet in upstream.feed(data):
                        done.extend(session.received(packet))
                        _write_all(client_out, packet.raw)
    except SFTPProtocolError as e:
        error = str(e)
        server.kill()
    server.wait()
    done.extend(session.end("channel closed"))
    with open(log_path, "w") as log:
        for record in done:
            log.write(json.dumps(record.as_event()) + "\n")
        if error is not None:
            log.write(json.dumps({"error": error}) + "\n")
    return 0 if error is None else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    refused = set(args[args.index("--refuse") + 1 :]) if "--refuse" in args else set()
    sys.exit(main(args[0], args[1], refused))
