"""benscale: a reference benchmark for distributed ResNet-50 training on BigEarthNet.

Stages (one module each, data flowing one way through files the DAG names):
synth -> ingest -> patches (extract) -> train -> scaling -> report.
"""

__version__ = "0.1.0"
