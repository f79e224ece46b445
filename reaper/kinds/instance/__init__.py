"""The primary kind: libvirt domains, instance directories and the Nova-DB reclaim."""
