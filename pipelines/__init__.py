"""tailship's data path: container formats, parsing, trace context, batching, codecs, sinks.

Nothing in here opens files or sockets except the sinks; every stage is a plain function or a
small class over bytes and dicts, testable without I/O.
"""
