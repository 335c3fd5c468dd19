"""Monitoring: the gateway's inference-log spool, traffic descriptors and drift (framework-free)."""
