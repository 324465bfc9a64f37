"""The gRPC API server (``ofs serve``). Needs the ``server`` extra (grpcio, health, reflection)."""
