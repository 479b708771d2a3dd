"""SR-IOV, shared by the nested topology (an igb PF emulated in each L1) and the lab's hosts (real NICs).

``vf_state``: what a PF driver says of its VFs; ``claims``: which VFs a run holds (bound to vfio-pci,
released after); ``mac_policy``: what the failover MAC does on the VF while the primary is away;
``sysfs``: reading a device's attributes through any :class:`~harness.hosts.Host`.
"""
