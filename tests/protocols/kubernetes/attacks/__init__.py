"""
Attacks on the Kubernetes request classifier: spellings of dangerous
requests its rules must catch or refuse.
"""
