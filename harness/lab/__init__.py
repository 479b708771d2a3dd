"""The lab hosts of ``--topology host``: SSH, tunnels, the remote peer's programs, the inventory,
its doctor, sweep and certification.

Everything here may import paramiko: only the host topology and the lab's CLI commands import
this package, so a flat or nested run never loads it (tests/unit/test_layout.py checks).
"""
