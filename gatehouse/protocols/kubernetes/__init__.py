"""
The Kubernetes API protocol: requests as the API server reads them, policy
attributes, Status objects, Secret masking and the stream protocols.
"""
