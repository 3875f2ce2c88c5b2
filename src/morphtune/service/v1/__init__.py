"""morphtune.v1 protocol: ``morphtune.proto`` and the code generated from it (do not edit
``morphtune_pb2*``; regenerate with ``python -m morphtune.service.codegen``)."""
