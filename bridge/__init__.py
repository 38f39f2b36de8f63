"""busbridge: sidecar that mirrors the legacy ZeroMQ error bus (:7150) into NATS JetStream."""
