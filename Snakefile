# benscale: ResNet-50 on BigEarthNet, from the archive to the scaling report.
#   synth (only without an archive) -> ingest -> extract -> train (one job per scaling point)
#   -> study.json -> report
# The rules live in workflow/rules/*.smk (Snakemake's standard layout).
# Every rule calls one `benscale <stage>`; the planning of the points (batches, launchers,
# Slurm resources) is benscale.study, so `benscale study points` shows the same plan.
import os


# Relative to this file, so that --directory elsewhere still finds the defaults.
configfile: os.path.join(workflow.basedir, "config", "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        all_targets(),
    default_target: True


# With --keep-going a failed point leaves its report input missing, so the report rule
# cannot run: build the report anyway from what completed (failed points listed with their
# logs). Snakemake still exits non-zero, and a re-run redoes only the failed point(s) and
# then the report.
onerror:
    report_after_failure()
