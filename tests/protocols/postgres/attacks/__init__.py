"""
The hostile-client corpus: attacks on the PostgreSQL slice's guarantees,
each tried through the real daemon against a real PostgreSQL and judged on
the server's state afterwards (the table still there, rows unchanged, no
file written, the victim backend alive, a value absent from what the client
received and from the recording), never on the gateway's own messages.

One module per class of attack.  Each module holds its cases as data (a
list of L{tests.protocols.postgres.attacks.corpus.Attack}) and one runner
that tries a case and checks the state; L{corpus.add_cases} turns every
case into its own C{test_*} method, so adding an attack is adding a line.
"""
