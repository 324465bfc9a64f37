"""The API server (``ofs serve``). Needs the ``server`` extra."""
