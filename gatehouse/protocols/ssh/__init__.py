"""
SSH through gatehouse: OpenSSH's ssh, scp and sftp in, SSH servers out.

- L{adapter}, L{config}: the C{ssh} protocol adapter, listener and target
  options;
- L{server}: the Conch server transport and the login (JWT as password,
  user certificates: L{certificates}; L{issuer} and L{cli_cert} mint them);
- L{upstream}: the gateway as SSH client, host keys pinned (L{hostkeys});
- L{bridge}: every client channel bridged to a twin on the target, one
  gate per session channel, flow control end to end; L{sftp_channel} and
  the L{sftp} codec for the C{sftp} subsystem;
- L{commands} (with L{shellwords}, L{wrappers}), L{attributes}: what an
  exec line runs and what rules can say about it; L{typed}: the lines
  typed into a shell, for the index; L{indexed}: the same read back from
  a recording;
- L{replay}: terminal playback, asciicast export, exec and SFTP
  transcripts; L{transport}: the algorithms both sides speak.
"""
