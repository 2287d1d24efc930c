"""Sinks: one module each, all implementing `pipelines.sinks.base.Sink`."""
