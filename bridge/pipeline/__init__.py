"""The per-message pipeline: decode -> dedup -> flood -> spool -> publish (DESIGN §1).

Stages that decide (decode, dedup, flood) are plain synchronous functions or
small objects that return a decision; only the I/O stages are tasks. Each
module states its own contract; import from the modules themselves.
"""
