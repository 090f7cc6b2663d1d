"""A report's reviewer bundle: everything needed to judge and re-run a study.

``REPORT_DIR/bundle/`` mirrors the study folder (``study.json``, ``runs/<point>/``,
``logs/``), so it is itself a study that ``benscale report`` reads and ``benscale
reproduce`` re-runs. The file names below are the contract between the report, which
writes the bundle, and the study stage, which reproduces it.
"""

from __future__ import annotations

#: The bundle's folder inside a report.
BUNDLE_DIR = "bundle"
#: The resolved study configuration, readable.
CONFIG_YAML = "config.yaml"
#: The package set of the environment the runs ran in (``name==version`` lines, as pip
#: freeze writes them), from their run.json: what to install to re-run them.
ENVIRONMENT_FILE = "environment.txt"
#: Package versions recorded by the runs.
PACKAGES_JSON = "packages.json"
#: The machine: the study's record and each run's host description.
MACHINE_JSON = "machine.json"
#: sha256 of every other file of the bundle.
MANIFEST_JSON = "MANIFEST.json"
