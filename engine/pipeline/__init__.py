"""One run of a mapping, stage by stage:

load.py       read the mapping YAML, keep positions, check the JSON Schema
compile.py    compile it into the immutable plan (plan.py: its types; compile_io.py: response,
              export, incremental)
config.py     config values from --config, the environment, .env, defaults
fetch.py      HTTP for one source: credentials (auth.py), budgets and announced rate limits
              (ratelimit.py), signed requests (signing.py), retries
paginate.py   the requests of a step, page after page (every pagination kind)
fanout.py     the bounded, order-keeping pool: fan-outs, accounts, detail requests, export files
exportjob.py  an export job: start it, poll it until ready, download its files (fanout.py)
decode.py     bodies other than JSON: JSON Lines, CSV, XML (xmlrecords.py), gzip, zip, streamed
extract.py    records out of page bodies
build.py      entities and relationships out of records (properties.py: compiled fill)
check.py      JupiterOne's graph rules and the key index, before writing
write.py      the .j1-integration layout and summary.json, written atomically
records.py    where a step's records come from: pages, export files, one fetch per parent
              entity (for_each) or per account, detail requests; each with its lineage
accounts.py   what an account changes in a source's requests, and where its credentials go
observer.py   hooks for the tools that watch a run (preview, coverage, explain)
runner.py     the steps, in dependency order, through all of the above
results.py    step and run results, statuses, exit code, the printed summary
run.py        a run as the user asked: compile, config, replay/record, signals, runner
state.py      incremental runs: the high-water mark saved beside the output, per instance
progress.py   the progress display (rich on a terminal, plain lines in logs)
"""
