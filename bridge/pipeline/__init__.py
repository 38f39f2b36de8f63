"""The data path's stages; the order they run in is written once, in ``bridge.pipeline.assemble``
(which builds and wires them).

Stages that decide (decode, dedup, flood, dead letters) are plain synchronous functions or
small objects that return a decision; only the I/O stages (spool, publishers) are tasks. Each
module states its own contract; import from the modules themselves.
"""
