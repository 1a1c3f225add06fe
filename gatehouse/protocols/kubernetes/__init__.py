"""
Kubernetes through gatehouse.
"""
