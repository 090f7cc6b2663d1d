"""Every file that crosses a stage, typed, with its reader and writer.

Stages never import each other; they meet only through these files:

==================  =======================  ==========================================
module              written by               read by
==================  =======================  ==========================================
``archive``         synth (or the release)   ingest, extract
``index``           ingest                   extract
``shards``          extract                  train (and extract itself, on a re-run)
``batches``         (a rule, not a file)     study (plans points), train (splits)
``run``             train                    report, study (reproduce)
``study``           study                    report, study (reproduce)
``bundle``          report                   study (reproduce)
==================  =======================  ==========================================

This package imports only the ground floor (errors, atomic writes, provenance, dataset
facts, typed records): a test checks the rule (tests/test_architecture.py).
"""
