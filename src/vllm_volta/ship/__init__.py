"""Ship wing: publish the wheels to a private index and validate V100 hosts.

``publish`` and ``meta`` need twine, rich and packaging; ``validate`` and its
modules use the standard library only, so they run on a bare fleet host.
"""
