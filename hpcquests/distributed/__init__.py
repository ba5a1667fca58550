"""Distributed drivers: the array kernels composed with a communicator passed in.

``drivers``: descriptors over ranks, δH/H/D with the reference gathered or passed around the
ring, sharded store writes. ``domains``: the spatial domain decomposition of a frame (owned
atoms plus a halo) through the communicator's row exchange. Everything here talks to other
ranks only through the named operations of ``hpcquests.parallel``'s communicators.
"""
