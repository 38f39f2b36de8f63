"""I/O adapters: ZMQ (``zmq``), NATS/JetStream (``jetstream``), the nats-server process (``nats_server``).
Each third-party I/O library is imported by exactly one module here."""
