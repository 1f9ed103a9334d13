"""The evaluation engine: one central scheduler for all detectors.

Rather than one kopf timer per object, kopf handlers only keep an in-memory
registry of detectors up to date; a single scheduler loop picks the detectors
that are due, fetches their series with bounded concurrency, scores every
series of every due detector sharing a model in ONE onnxruntime call, decides
verdicts with :mod:`vigil.domain`, and writes status only when it changed.
This is what lets one replica carry thousands of detectors.
"""
