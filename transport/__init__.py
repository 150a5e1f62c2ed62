"""Transport: the edge of a worker, where bytes from clients become frames and
frames become internal messages.

- ``wire``: the wire protocol (frame types, frame dataclasses, error codes,
  encode/decode, the incremental ``FrameDecoder``). The only module in the
  project that imports msgpack; it imports nothing else of ours. The full
  specification is docs/protocol.md.

Imports: ``transport`` may import ``actors.messages`` (only the TCP adapter
translates between wire frames and internal messages); ``actors`` and
``storage`` never import ``transport``. This file imports nothing, so
``import transport.wire`` stays cheap.
"""
