"""I/O adapters: ZMQ (``zmq``), NATS/JetStream (``jetstream``), the nats-server process (``nats_server``).
Each third-party I/O library is imported by exactly one module here, except the fleet-health
clients kept apart from the ingest path: ``agent_probe`` (ZMQ REQ and HTTP probes of legacy agents)
and ``health_kv`` (the health KV bucket on the ``jetstream`` link's connection), and
``zmq_curve`` (CURVE keys and the ZAP allowlist of the ingest socket, part of the ZMQ adapter)."""
