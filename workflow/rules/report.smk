# The study description and the report. Both run where Snakemake runs (login node).


rule study:
    output:
        study=report(f"{RESULTS}/study.json", category="2. Study"),
    log:
        f"{RESULTS}/logs/study.log",
    benchmark:
        f"{RESULTS}/benchmarks/study.tsv"
    params:
        config=json.dumps(config, sort_keys=True),
        snakefile=workflow.main_snakefile,
    localrule: True
    conda:
        ENV
    shell:
        "benscale study write --config-json {params.config:q} --snakefile {params.snakefile:q}"
        " --out {output.study} > {log} 2>&1"


rule report:
    input:
        study=rules.study.output.study,
        runs=expand(f"{RESULTS}/runs/{{point}}/run.json", point=[p.name for p in POINTS]),
        epochs=expand(f"{RESULTS}/runs/{{point}}/epochs.csv", point=[p.name for p in POINTS]),
        references=reference_files,
    output:
        report=report(
            directory(f"{RESULTS}/report"),
            htmlindex="index.html",
            category="4. Report",
        ),
    log:
        f"{RESULTS}/logs/report.log",
    benchmark:
        f"{RESULTS}/benchmarks/report.tsv"
    params:
        references=reference_args,
    localrule: True
    conda:
        ENV
    shell:
        "benscale report --study {input.study} --out {output.report} {params.references}"
        " > {log} 2>&1"
