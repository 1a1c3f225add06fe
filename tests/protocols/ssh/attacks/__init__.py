"""
Attacks on the SSH exec classifier: spellings of dangerous commands that
its rules must catch, and benign lines they must leave alone.
"""
