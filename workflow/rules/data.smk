# The data path: (synth ->) ingest -> extract from a folder, or one streaming extract from a
# .tar* archive (read once, never unpacked: no ingest rule). Outputs under data.workdir,
# shared by studies; both give the same index/ and shards/ (docs/workflow.md).


rule synth:
    output:
        archive=directory(SYNTH_ARCHIVE),
    log:
        f"{DATA}/logs/synth.log",
    benchmark:
        f"{DATA}/benchmarks/synth.tsv"
    params:
        format=config["data"]["synth"]["format"],
        patches=config["data"]["synth"]["patches"],
        seed=config["data"]["synth"]["seed"],
    conda:
        ENV
    shell:
        "benscale synth --format {params.format} --patches {params.patches}"
        " --seed {params.seed} --out {output.archive} > {log} 2>&1"


if streams_archive():

    rule extract:
        input:
            archive=archive_input,
        output:
            manifest=f"{DATA}/shards/manifest.json",
            stats=report(f"{DATA}/shards/stats.json", category="1. Data"),
            index=f"{DATA}/index/index.parquet",
            report=report(f"{DATA}/index/ingest-report.json", category="1. Data"),
        log:
            f"{DATA}/logs/extract.log",
        benchmark:
            f"{DATA}/benchmarks/extract.tsv"
        params:
            out=lambda wildcards, output: Path(output.manifest).parent,
            index_out=lambda wildcards, output: Path(output.index).parent,
            shard_size=config["data"]["extract"]["shard_size"],
            resampling=config["data"]["extract"]["resampling"],
            compression=config["data"]["extract"]["compression"],
            args=stream_args,
        threads: config["data"]["extract"]["workers"]
        conda:
            ENV
        shell:
            "benscale extract {input.archive} --out {params.out} --index-out {params.index_out}"
            " --shard-size {params.shard_size} --workers {threads}"
            " --resampling {params.resampling} --compression {params.compression}"
            " {params.args} > {log} 2>&1"

else:

    rule ingest:
        input:
            archive=archive_input,
        output:
            index=f"{DATA}/index/index.parquet",
            report=report(f"{DATA}/index/ingest-report.json", category="1. Data"),
        log:
            f"{DATA}/logs/ingest.log",
        benchmark:
            f"{DATA}/benchmarks/ingest.tsv"
        params:
            out=lambda wildcards, output: Path(output.index).parent,
            args=ingest_args,
        conda:
            ENV
        shell:
            "benscale ingest {input.archive} --out {params.out} {params.args} > {log} 2>&1"

    rule extract:
        input:
            index=rules.ingest.output.index,
        output:
            manifest=f"{DATA}/shards/manifest.json",
            stats=report(f"{DATA}/shards/stats.json", category="1. Data"),
        log:
            f"{DATA}/logs/extract.log",
        benchmark:
            f"{DATA}/benchmarks/extract.tsv"
        params:
            out=lambda wildcards, output: Path(output.manifest).parent,
            shard_size=config["data"]["extract"]["shard_size"],
            resampling=config["data"]["extract"]["resampling"],
            compression=config["data"]["extract"]["compression"],
        threads: config["data"]["extract"]["workers"]
        conda:
            ENV
        shell:
            "benscale extract {input.index} --out {params.out} --shard-size {params.shard_size}"
            " --workers {threads} --resampling {params.resampling}"
            " --compression {params.compression} > {log} 2>&1"
