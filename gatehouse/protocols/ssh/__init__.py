"""
SSH through gatehouse (in progress, issue 13): OpenSSH user certificates
for gatehouse identities (L{certificates}).
"""
