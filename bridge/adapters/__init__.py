"""I/O adapters: the ZMQ sockets (``zmq``, ``zmq_curve``, ``republish``, ``agent_probe``), NATS
(``nats_connect``: how every client connects; ``jetstream``: the data path's link;
``fast_ingest``: batch publishing on the wire; ``nats_inputs``: native intake and the legacy
``errors.>`` half; ``health_kv``, ``kv_json``, ``migration_kv``: KV buckets) and the nats-server
process (``nats_server``). The pipeline stages import none of them: the assembly passes them in
as the small protocols the stages declare."""
