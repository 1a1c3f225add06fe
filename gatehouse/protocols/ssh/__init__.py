"""
SSH through gatehouse (in progress, issue 13): OpenSSH user certificates
for gatehouse identities (L{certificates}), and the host keys the gateway
offers and pins (L{hostkeys}).
"""
