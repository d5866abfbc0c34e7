"""streamrec: streaming, real-time recommendations on Apache Kafka.

Subpackages, one per concern (imports point one way: ``streams`` composes the others):

- :mod:`streamrec.encoders` -- text -> unit vectors (ONNX Runtime, INT8 MiniLM)
- :mod:`streamrec.index` -- vectors -> nearest items (HNSW, brute force)
- :mod:`streamrec.streams` -- Kafka: events -> session state -> recommendations; items -> index
- :mod:`streamrec.export` -- Hugging Face model -> ONNX -> INT8, validated
- :mod:`streamrec.localkafka` -- a local single-node Apache Kafka (KRaft) for demos and tests
"""

from streamrec.errors import StreamrecError

__version__ = "0.1.0"

__all__ = ["StreamrecError", "__version__"]
